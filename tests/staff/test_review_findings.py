"""Rules moved from the staff console's views into the service functions (so the admin keeps them too), and input
bounds: admin actions need the console's permissions, a closed account stays closed, a quota approval must raise
the figure in force, a promotional credit's source is in the books' language, far-future days are field errors."""

import re
import uuid
from datetime import timedelta

import pytest
from django.contrib.admin.sites import site
from django.contrib.auth.models import Permission
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext

from billing.models import AccountStatus, BillingAccount, PaymentStatus, Prepayment, PromoCode, RefundRequest
from billing.promotions import redeem
from billing.services import BillingError, set_account_status
from studio.models import AuditEvent, Tier
from tests.factories import approved_code, make_staff
from tests.staff.finance import D, refund_of
from usage import catalog
from usage.models import QuotaOverride, RateLimit
from usage.quotas import QuotaError, approve, limit_in_force, request_increase

FLASH = "gemini-2.5-flash"

# Admin actions and the console's permissions

ACTIONS = {
    RefundRequest: {"approve", "reject"},
    BillingAccount: {"suspend", "reinstate", "require_prepayment"},
    Prepayment: {"confirm_transfer", "fail_transfer"},
}


@pytest.fixture
def clerk(db):
    """Staff with the models' view and change permissions only (no Finance group)."""
    user = make_staff("clerk@staff.example")
    codenames = [f"{verb}_{model._meta.model_name}" for model in ACTIONS for verb in ("view", "change")]
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="billing", codename__in=codenames))
    return user


def decision_actions(user, model) -> set[str]:
    request = RequestFactory().get("/admin/")
    request.user = user
    return set(site._registry[model].get_actions(request)) & ACTIONS[model]


@pytest.mark.parametrize("model", list(ACTIONS), ids=lambda m: m.__name__)
def test_view_and_change_permissions_do_not_give_the_decision_actions(clerk, model):
    assert clerk.has_perm(f"billing.change_{model._meta.model_name}")
    assert decision_actions(clerk, model) == set()


@pytest.mark.parametrize("model", list(ACTIONS), ids=lambda m: m.__name__)
@pytest.mark.parametrize("persona", ["finance", "superuser"])
def test_finance_and_superusers_get_the_decision_actions(request, model, persona):
    assert decision_actions(request.getfixturevalue(persona), model) == ACTIONS[model]


@pytest.mark.parametrize("persona", ["support", "groupless_staff"])
def test_support_does_not_get_the_decision_actions(request, persona):
    user = request.getfixturevalue(persona)
    assert [decision_actions(user, model) for model in ACTIONS] == [set(), set(), set()]


def test_a_posted_refund_action_without_the_permission_changes_nothing(client, clerk):
    refund = refund_of("50")
    client.force_login(clerk)

    response = client.post("/admin/billing/refundrequest/", {"action": "approve", "_selected_action": [refund.pk]})

    assert response.status_code == 200  # the changelist again, the action unknown to this user
    refund.refresh_from_db()
    assert (refund.status, refund.reviewed_by) == ("pending", None)
    assert AuditEvent.objects.filter(action__startswith="refund.approve").count() == 0


def test_a_posted_suspension_without_the_permission_changes_nothing(client, clerk, customer_world):
    account = customer_world["account"]
    client.force_login(clerk)

    client.post("/admin/billing/billingaccount/", {"action": "suspend", "_selected_action": [account.pk]})

    assert BillingAccount.objects.get(pk=account.pk).status == AccountStatus.ACTIVE


def test_a_posted_transfer_confirmation_without_the_permission_changes_nothing(client, clerk, customer_world):
    transfer = Prepayment.objects.create(
        id=uuid.uuid4(),
        account=customer_world["account"],
        amount=D("10"),
        by_bank_transfer=True,
        status=PaymentStatus.PENDING,
        processor_reference="tr_1",
        created_by=customer_world["user"],
    )
    client.force_login(clerk)

    client.post("/admin/billing/prepayment/", {"action": "confirm_transfer", "_selected_action": [transfer.pk]})

    assert Prepayment.objects.get(pk=transfer.pk).status == PaymentStatus.PENDING


# A closed account stays closed, whoever asks


@pytest.fixture
def closed(customer_world):
    account = customer_world["account"]
    BillingAccount.objects.filter(pk=account.pk).update(status=AccountStatus.CLOSED)
    return account


@pytest.mark.parametrize("status", [AccountStatus.SUSPENDED, AccountStatus.ACTIVE])
def test_the_service_refuses_to_suspend_or_reinstate_a_closed_account(closed, finance, status):
    with pytest.raises(BillingError) as refused:
        set_account_status(closed, status, by=finance, reason="x")

    assert str(refused.value) == "This billing account is closed: it cannot be suspended or reinstated."
    assert BillingAccount.objects.get(pk=closed.pk).status == AccountStatus.CLOSED
    assert AuditEvent.objects.filter(action="billing_account.status").count() == 0


def test_closing_a_closed_account_again_changes_nothing(closed, finance):
    assert set_account_status(closed, AccountStatus.CLOSED, by=finance, reason="x").status == AccountStatus.CLOSED
    assert AuditEvent.objects.filter(action="billing_account.status").count() == 0


def test_the_console_shows_the_services_refusal(client, closed, finance):
    client.force_login(finance)

    response = client.post(
        reverse("staff:account-status", args=[closed.account_id]), {"decision": "suspend", "reason": "x"}
    )

    assert response.status_code == 422
    assert response.context["form"].non_field_errors() == [
        "This billing account is closed: it cannot be suspended or reinstated."
    ]


@pytest.mark.parametrize("action", ["suspend", "reinstate"])
def test_the_admin_shows_the_services_refusal(client, closed, superuser, action):
    client.force_login(superuser)

    response = client.post(
        "/admin/billing/billingaccount/", {"action": action, "_selected_action": [closed.pk]}, follow=True
    )

    assert f"{closed}: This billing account is closed: it cannot be suspended or reinstated." in (
        response.content.decode()
    )
    assert BillingAccount.objects.get(pk=closed.pk).status == AccountStatus.CLOSED


# A quota approval raises the figure in force now


@pytest.fixture
def asked(customer_world):
    """A request of the Tier 1 project for Flash RPM at 500 above its tier's figure."""
    project = customer_world["project"]
    assert project.tier == Tier.TIER_1
    tier_rpm = limit_in_force(project, FLASH, "rpm")
    return request_increase(
        project, model_id=FLASH, metric="rpm", value=tier_rpm + 500, reason="Launch", by=customer_world["user"]
    ), tier_rpm


def test_approving_at_the_tier_figure_is_refused_on_the_value_field(asked, support):
    request, tier_rpm = asked

    with pytest.raises(QuotaError) as refused:
        approve(request, value=tier_rpm, reason="ok", by=support)

    message = f"This project already has {tier_rpm:,} here: approve more than that, or decline."
    assert (refused.value.message, refused.value.field) == (message, "value")
    assert (QuotaOverride.objects.count(), request.status) == (0, "pending")


def test_approving_one_above_the_tier_figure_sets_the_override(asked, support):
    request, tier_rpm = asked

    assert approve(request, value=tier_rpm + 1, reason="ok", by=support) is True

    assert list(QuotaOverride.objects.values_list("rpm", flat=True)) == [tier_rpm + 1]


def test_the_figure_in_force_is_read_at_the_decision(asked, support):
    """The tier's figure raised after the request was made: approving below the new figure would lower nothing."""
    request, tier_rpm = asked
    RateLimit.objects.filter(tier=Tier.TIER_1, model_id=FLASH).update(rpm=tier_rpm + 400)
    catalog.forget()

    with pytest.raises(QuotaError) as refused:
        approve(request, value=tier_rpm + 300, reason="ok", by=support)

    assert refused.value.message == (
        f"This project already has {tier_rpm + 400:,} here: approve more than that, or decline."
    )


def test_the_console_shows_the_refusal_on_the_value_field(client, asked, support):
    request, tier_rpm = asked
    client.force_login(support)

    response = client.post(
        reverse("staff:quota-request-decide", args=[request.pk]),
        {"decision": "approve", "value": str(tier_rpm), "reason": "ok"},
    )

    assert response.status_code == 422
    assert response.context["form"].errors == {
        "value": [f"This project already has {tier_rpm:,} here: approve more than that, or decline."]
    }


# A promotional credit's source is stored in the books' language


def test_a_japanese_redeemer_gets_a_credit_described_in_english(finance, customer_world):
    approved_code(
        code="HELLO-JA",
        amount=D("20"),
        redeem_by=timezone.now() + timedelta(days=5),
        credit_valid_days=30,
        max_redemptions=3,
        by=finance,
    )
    user = customer_world["user"]
    user.language = "ja"
    user.save(update_fields=["language"])

    with translation.override("ja"):
        assert gettext("Promotional code %(code)s") != "Promotional code %(code)s"  # the catalogue is there
        credit = redeem(customer_world["account"], "hello-ja", by=user)

    assert credit.source == "Promotional code HELLO-JA"


# Far-future days are field errors, not errors of the server


def field_errors(response, field) -> list[str]:
    html = response.content.decode().replace("&#x27;", "'")
    return re.findall(rf'<p class="field-error" id="id_{field}_error">(.*?)</p>', html)


@pytest.mark.parametrize(
    ("day", "errors"),
    [
        ("9999-12-31", ["Choose a day within the next 10 years."]),
        ("today+3651", ["Choose a day within the next 10 years."]),
    ],
)
def test_a_goodwill_expiry_too_far_ahead_is_a_field_error(client, finance, customer_world, day, errors):
    client.force_login(finance)
    if day.startswith("today+"):
        day = (timezone.now().date() + timedelta(days=int(day[6:]))).isoformat()
    data = {"amount": "40", "reason_code": "service_issue", "note": "Outage", "expires_on": day}

    response = client.post(reverse("staff:goodwill-new", args=[customer_world["account"].account_id]), data)

    assert (response.status_code, field_errors(response, "expires_on")) == (422, errors)


def test_a_goodwill_expiry_ten_years_ahead_is_accepted(client, finance, customer_world):
    client.force_login(finance)
    day = (timezone.now().date() + timedelta(days=3650 - 1)).isoformat()  # a day of margin for the zones
    data = {"amount": "40", "reason_code": "service_issue", "note": "Outage", "expires_on": day}

    response = client.post(reverse("staff:goodwill-new", args=[customer_world["account"].account_id]), data)

    assert response.status_code == 302


def promo_form(**changes):
    data = {
        "code": "far-away",
        "amount": "5",
        "redeem_by": (timezone.now().date() + timedelta(days=30)).isoformat(),
        "credit_valid_days": "60",
        "max_redemptions": "10",
        "description": "",
    }
    return {**data, **changes}


@pytest.mark.parametrize(
    ("changes", "field", "errors"),
    [
        ({"redeem_by": "9999-12-31"}, "redeem_by", ["Choose a day within the next 10 years."]),
        ({"credit_valid_days": "3651"}, "credit_valid_days", ["Ensure this value is less than or equal to 3650."]),
        (
            {"credit_valid_days": "99999999999"},
            "credit_valid_days",
            ["Ensure this value is less than or equal to 3650."],
        ),
        ({"max_redemptions": "1000001"}, "max_redemptions", ["Ensure this value is less than or equal to 1000000."]),
    ],
)
def test_promotional_figures_too_far_ahead_or_too_many_are_field_errors(client, finance, changes, field, errors):
    client.force_login(finance)

    response = client.post(reverse("staff:promotion-new"), promo_form(**changes))

    assert (response.status_code, field_errors(response, field)) == (422, errors)
    assert PromoCode.objects.count() == 0


def test_promotional_figures_at_their_bounds_are_accepted(client, finance):
    client.force_login(finance)
    last_day = (timezone.now().date() + timedelta(days=3649)).isoformat()

    response = client.post(
        reverse("staff:promotion-new"),
        promo_form(redeem_by=last_day, credit_valid_days="3650", max_redemptions="1000000", amount="0.01"),
    )

    assert response.status_code == 302
    promo = PromoCode.objects.get()
    assert (promo.credit_valid_days, promo.max_redemptions, promo.approved_at is None) == (3650, 1_000_000, True)
