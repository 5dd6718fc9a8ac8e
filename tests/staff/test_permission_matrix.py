"""Every /staff/ URL, for every persona and both methods: 404 unless staff holding the view's permissions.

The URLs are enumerated from the resolver, so a staff view added later is covered without an entry here; a
view that forgets `staff_view` fails `test_every_staff_view_is_guarded`.
"""

import uuid

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from staff import roles

# Reached by any active staff member (setting up or passing the second factor, ending a view-as).
ANY_STAFF = {"staff:two-factor", "staff:two-factor-setup", "staff:two-factor-recovery", "staff:view-as-stop"}


def staff_patterns():
    resolver = get_resolver()
    staff = next(p for p in resolver.url_patterns if isinstance(p, URLResolver) and p.namespace == "staff")
    found = []

    def walk(patterns):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns)
            elif isinstance(pattern, URLPattern):
                found.append(pattern)

    walk(staff.url_patterns)
    return found


def sample_kwargs(world, pattern):
    """Arguments for one URL: objects that exist, so that a 404 means "not for you"."""
    values = {
        "user_id": world["user"].pk,
        "account_id": world["account"].account_id,
        "project_id": world["project"].project_id,
    }
    by_name = {
        "refund-decide": lambda: world["refund"].pk,
        "goodwill-decide": lambda: world["goodwill"].pk,
        "quota-request-decide": lambda: world["quota_request"].pk,
        "promotion": lambda: world["promotion"].pk,
        "promotion-approve": lambda: world["promotion"].pk,
        "transfer-decide": lambda: world["transfer"].pk,
    }
    kwargs = {}
    for name in pattern.pattern.regex.groupindex:
        if name in values:
            kwargs[name] = values[name]
        elif name == "pk":
            kwargs[name] = by_name[pattern.name]()
        else:
            raise AssertionError(f"no sample value for {name} in staff:{pattern.name}")
    return kwargs


@pytest.fixture
def world(customer_world, finance, support):
    from datetime import timedelta
    from decimal import Decimal

    from django.utils import timezone

    from billing.models import GoodwillGrant, Prepayment, PromoCode, RefundRequest
    from usage.models import QuotaIncreaseRequest

    account, project = customer_world["account"], customer_world["project"]
    now = timezone.now()
    return {
        **customer_world,
        "refund": RefundRequest.objects.create(
            account=account, amount=Decimal("5"), reason="r", requested_by=customer_world["user"]
        ),
        "goodwill": GoodwillGrant.objects.create(
            account=account,
            amount=Decimal("500"),
            reason_code="other",
            note="n",
            credit_expires_at=now + timedelta(days=30),
            requested_by=finance,
        ),
        "quota_request": QuotaIncreaseRequest.objects.create(
            project=project,
            model_id="gemini-2.5-flash",
            metric="rpm",
            current_limit=1000,
            requested_value=2000,
            reason="r",
            requested_by=customer_world["user"],
        ),
        "promotion": PromoCode.objects.create(
            code="MATRIX",
            amount=Decimal("10"),
            redeem_by=now + timedelta(days=30),
            credit_valid_days=30,
            max_redemptions=5,
            created_by=finance,
        ),
        "transfer": Prepayment.objects.create(
            id=uuid.uuid4(),
            account=account,
            amount=Decimal("10"),
            by_bank_transfer=True,
            status="pending",
            created_by=customer_world["user"],
        ),
    }


def test_every_staff_view_is_guarded():
    unguarded = [p.name for p in staff_patterns() if not hasattr(p.callback, "staff_permissions")]
    assert unguarded == []


def test_the_matrix_covers_every_staff_url():
    names = sorted(p.name for p in staff_patterns())
    assert len(names) >= 20, names


@pytest.mark.parametrize("method", ["get", "post"])
def test_staff_urls_are_404_to_outsiders(client, world, groupless_staff, method):
    outsiders = [None, world["user"], groupless_staff]
    for pattern in staff_patterns():
        url = reverse(f"staff:{pattern.name}", kwargs=sample_kwargs(world, pattern))
        for person in outsiders:
            client.logout()
            if person is not None:
                client.force_login(person)
            if person is groupless_staff and (pattern.name in ANY_STAFF or not pattern.callback.staff_permissions):
                continue  # any staff member may open these
            status = getattr(client, method)(url).status_code
            assert status == 404, (pattern.name, person and person.email, method, status)


@pytest.mark.parametrize("method", ["get", "post"])
def test_each_group_reaches_exactly_the_urls_of_its_permissions(client, world, support, finance, superuser, method):
    for person in (support, finance, superuser):
        client.force_login(person)
        for pattern in staff_patterns():
            url = reverse(f"staff:{pattern.name}", kwargs=sample_kwargs(world, pattern))
            allowed = person.has_perms(pattern.callback.staff_permissions)
            status = getattr(client, method)(url).status_code
            if allowed:
                assert status != 404, (pattern.name, person.email, method)
            else:
                assert status == 404, (pattern.name, person.email, method, status)


def test_support_and_finance_hold_what_spec_10_gives_them(support, finance):
    assert support.has_perms([roles.LOOKUP, roles.VIEW_AS, roles.OVERRIDE_TIER, roles.DECIDE_QUOTA])
    assert not support.has_perm(roles.DECIDE_REFUND) and not support.has_perm(roles.SUSPEND)
    assert finance.has_perms(
        [roles.DECIDE_REFUND, roles.DECIDE_TRANSFER, roles.GRANT_GOODWILL, roles.SUSPEND, roles.MANAGE_PROMOTIONS]
    )
    assert not finance.has_perm(roles.VIEW_AS) and not finance.has_perm(roles.DECIDE_QUOTA)
