"""Staff personas: Support, two Finance members (for the two-person rule), a superuser, staff in no
group, and a customer with a project, a key and a billing account."""

import pytest

from staff import roles
from tests.factories import make_account, make_key, make_project, make_staff, make_user


@pytest.fixture
def support(db):
    return make_staff("support@staff.example", roles.SUPPORT, full_name="Sam Support")


@pytest.fixture
def finance(db):
    return make_staff("finance@staff.example", roles.FINANCE, full_name="Fran Finance")


@pytest.fixture
def finance2(db):
    return make_staff("finance2@staff.example", roles.FINANCE, full_name="Fred Finance")


@pytest.fixture
def superuser(db):
    return make_staff("root@staff.example", superuser=True)


@pytest.fixture
def groupless_staff(db):
    return make_staff("nogroup@staff.example")


@pytest.fixture
def customer(db):
    return make_user("customer@example.com", full_name="Casey Customer")


@pytest.fixture
def customer_world(customer):
    """The customer's paid project with a key, linked to their billing account."""
    from studio.models import Tier

    project = make_project(customer, name="Customer app", tier=Tier.TIER_1)
    key = make_key(project, name="Customer key")
    account = make_account(customer, name="Customer billing", projects=[project])
    return {"user": customer, "project": project, "key": key, "account": account}
