import os
import socket

import pytest
from django.core.cache import cache
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
def _rollups_at_once(settings):
    """Every ingested batch is rolled up as it is stored (usage.fold), so that a test reads its rollups at once;
    the tests of the fold itself set another interval."""
    settings.ROLLUP_FOLD_SECONDS = 0


@pytest.fixture(autouse=True, scope="session")
def _jobs_run_in_process():
    """Jobs queued by the code under test (e.g. "deliver the outbox now" after a commit) run at
    once in the test's thread, never in a Redis or SQLite queue shared with `make run`."""
    from huey.contrib.djhuey import HUEY

    HUEY.immediate = True


@pytest.fixture(autouse=True)
def _fast_and_isolated(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # The real path: e-mail goes to the outbox; deliver_mail() sends it to django.core.mail.outbox.
    settings.EMAIL_BACKEND = "studio.outbox.OutboxBackend"
    settings.OUTBOX_DELIVERY_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(autouse=True)
def _empty_cache():
    """Throttle counters live in the cache (Redis under REDIS_URL): every test starts with none."""
    cache.clear()


@pytest.fixture
def smtp_down(settings):
    """Deliver through Django's real SMTP backend to a port where nothing listens (the mail
    server is down). Returns smtp_back(), which switches delivery to the test mailbox."""
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.OUTBOX_DELIVERY_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_USE_TLS = "127.0.0.1", port, False

    def smtp_back():
        settings.OUTBOX_DELIVERY_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

    return smtp_back


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
