import os

import pytest
from django.db import connection

from studio.models import Role
from tests.factories import PASSWORD, add_member, make_key, make_project, make_user


def skip_or_fail(reason: str, *, required_by: str):
    """Skip a test whose environment is missing, or fail it when CI says it must run."""
    if os.environ.get(required_by) == "1":
        pytest.fail(f"{reason} ({required_by}=1)")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _needs_postgres(request):
    if request.node.get_closest_marker("postgres") and connection.vendor != "postgresql":
        skip_or_fail("needs PostgreSQL: set DATABASE_URL=postgres://…", required_by="REQUIRE_POSTGRES")


def load_reference_data():
    """Rows that migrations seed (countries, rules, the model catalog)."""
    from billing import reference_data
    from billing.models import Country, PrepaymentMethodRule, TierRule
    from usage import catalog_data
    from usage.models import CatalogModel, Price, RateLimit, SpendLimit

    reference_data.load(Country, PrepaymentMethodRule)
    reference_data.load_tier_rules(TierRule)
    catalog_data.load(CatalogModel, Price, RateLimit, SpendLimit)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    # A reused test database may have lost them to an earlier run's transactional flush.
    with django_db_blocker.unblock():
        load_reference_data()


@pytest.fixture(autouse=True)
def _reference_data(request):
    """Transactional tests flush the database, migration-seeded rows included: put them back."""
    marker = request.node.get_closest_marker("django_db")
    if "live_server" in request.fixturenames or (marker and marker.kwargs.get("transaction")):
        request.getfixturevalue("transactional_db")
        load_reference_data()


@pytest.fixture(autouse=True)
def _fast_and_isolated(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture
def owner(db):
    return make_user("owner@example.com")


@pytest.fixture
def editor(db):
    return make_user("editor@example.com")


@pytest.fixture
def viewer(db):
    return make_user("viewer@example.com")


@pytest.fixture
def outsider(db):
    return make_user("outsider@example.com")


@pytest.fixture
def project(owner, editor, viewer):
    """One project with an owner, an editor and a viewer, all of whom imported it."""
    project = make_project(owner, name="Team project")
    add_member(project, editor, Role.EDITOR)
    add_member(project, viewer, Role.VIEWER)
    return project


@pytest.fixture
def key(project, owner):
    return make_key(project, name="Team key", created_by=owner)[0]


@pytest.fixture
def client_for(client):
    """client_for(user) signs the test client in as `user`."""

    def sign_in(user):
        client.force_login(user)
        return client

    return sign_in


@pytest.fixture
def password():
    return PASSWORD


@pytest.fixture
def on_postgres():
    return connection.vendor == "postgresql"
