"""Promotional codes under the two-person rule (X10): a code whose exposure (amount × redemptions allowed) is above
the threshold waits for a second Finance member, never its creator, and cannot be redeemed until then."""

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.urls import reverse

from billing import promotions
from billing.models import Credit, PromoCode
from billing.promotions import PromoState, approve_code, create_code, redeem, state_of, with_state
from billing.services import BillingError
from studio.models import AuditEvent
from tests.factories import make_account, make_user
from tests.staff.finance import D, audit

NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _frozen():
    with time_machine.travel(NOW, tick=False):
        yield


def new_code(by, *, code="BIG-2026", amount="50", max_redemptions=10, redeem_by=None):
    return create_code(
        code=code,
        amount=D(amount),
        redeem_by=redeem_by or NOW + timedelta(days=20),
        credit_valid_days=30,
        max_redemptions=max_redemptions,
        by=by,
    )


def approval(promo):
    promo.refresh_from_db()
    return promo.approved_by.email if promo.approved_by else None, promo.approved_at, promo.approval_note


# The service


@pytest.mark.parametrize(
    ("amount", "max_redemptions", "state"),
    [
        ("100", 1, PromoState.ACTIVE),  # exactly the threshold: one person
        ("10", 10, PromoState.ACTIVE),
        ("100.01", 1, PromoState.WAITING),
        ("50", 3, PromoState.WAITING),  # USD 150 in all
        ("0.01", 10_001, PromoState.WAITING),  # USD 100.01 in all
    ],
)
def test_a_code_waits_when_its_exposure_is_above_the_threshold(finance, amount, max_redemptions, state):
    promo = new_code(finance, amount=amount, max_redemptions=max_redemptions)

    assert state_of(promo) == state
    assert with_state(PromoCode.objects.all()).get().state == state
    expected = ("finance@staff.example", NOW, "") if state == PromoState.ACTIVE else (None, None, "")
    assert approval(promo) == expected


def test_the_threshold_is_the_setting(settings, finance):
    settings.STAFF_APPROVAL_THRESHOLD = D("1000")

    assert state_of(new_code(finance, amount="100", max_redemptions=10)) == PromoState.ACTIVE
    assert state_of(new_code(finance, code="OVER", amount="100.01", max_redemptions=10)) == PromoState.WAITING


def test_a_waiting_code_cannot_be_redeemed_until_approved(finance, finance2):
    promo = new_code(finance)
    account = make_account(make_user("buyer@example.com"))

    with pytest.raises(BillingError) as refused:
        redeem(account, "big-2026", by=account.created_by)

    assert str(refused.value) == "This code is not active yet."
    assert (Credit.objects.count(), PromoCode.objects.get().times_redeemed) == (0, 0)

    approve_code(promo, by=finance2, note="Spring campaign agreed")
    credit = redeem(account, "big-2026", by=account.created_by)

    assert (credit.original_amount, credit.source) == (D("50.00"), "Promotional code BIG-2026")


def test_the_creator_may_not_approve_their_own_code(finance):
    promo = new_code(finance)

    with pytest.raises(BillingError) as refused:
        approve_code(promo, by=finance, note="Mine")

    assert str(refused.value) == "Nobody may approve a code they created: another Finance member must."
    assert approval(promo) == (None, None, "")
    assert [row[0] for row in audit(promo)] == ["promo_code.create"]


def test_approval_is_audited_once(finance, finance2):
    promo = new_code(finance)

    approve_code(promo, by=finance2, note="Agreed")
    approve_code(promo, by=finance2, note="Again")  # approved: nothing more

    assert approval(promo) == ("finance2@staff.example", NOW, "Agreed")
    assert state_of(promo) == PromoState.ACTIVE
    assert audit(promo)[1:] == [
        (
            "promo_code.approve",
            "finance2@staff.example",
            "staff",
            {"approved_by": None},
            {"approved_by": "finance2@staff.example", "exposure": "500.00"},
            "Agreed",
        )
    ]


def test_a_deactivated_or_expired_waiting_code_is_not_approved(finance, finance2):
    deactivated, expired = new_code(finance), new_code(finance, code="SHORT", redeem_by=NOW + timedelta(hours=1))
    promotions.deactivate(deactivated, by=finance, reason="Wrong amount")

    approve_code(deactivated, by=finance2, note="ok")
    with time_machine.travel(NOW + timedelta(hours=2), tick=False):
        assert state_of(expired) == PromoState.EXPIRED
        with pytest.raises(BillingError, match="This code has expired: it can no longer be approved"):
            approve_code(expired, by=finance2, note="ok")

    assert [approval(deactivated), approval(expired)] == [(None, None, ""), (None, None, "")]
    assert state_of(deactivated) == PromoState.DEACTIVATED
    assert AuditEvent.objects.filter(action="promo_code.approve").count() == 0


# The staff console


def test_the_code_page_shows_the_waiting_state_and_the_approve_form(client, finance):
    promo = new_code(finance)
    client.force_login(finance)

    html = client.get(reverse("staff:promotion", args=[promo.pk])).content.decode()

    assert '<span class="badge warning">Waiting for approval</span>' in html
    assert "<dt>Approved</dt><dd>Not yet</dd>" in html
    assert (
        "This code can grant USD 50.00 up to 10 times, more than USD 100.00 in all: it cannot be redeemed until a "
        "second Finance member, not its creator, approves it." in html
    )
    assert f'action="{reverse("staff:promotion-approve", args=[promo.pk])}"' in html


def test_a_second_finance_member_approves_on_the_page(client, finance, finance2):
    promo = new_code(finance)
    client.force_login(finance2)

    response = client.post(reverse("staff:promotion-approve", args=[promo.pk]), {"note": "Agreed with marketing"})

    assert (response.status_code, response["Location"]) == (302, f"/staff/promotions/{promo.pk}/")
    assert approval(promo) == ("finance2@staff.example", NOW, "Agreed with marketing")
    html = client.get(response["Location"]).content.decode()
    assert "Promotional code BIG-2026 approved: it can be redeemed." in html
    assert '<span class="badge paid">Active</span>' in html
    assert "Approve code" not in html
    assert "<dt>Approved</dt><dd>06/10/2026 noon · finance2@staff.example (Agreed with marketing)</dd>" in html


def test_the_creator_is_refused_on_the_page(client, finance):
    promo = new_code(finance)
    client.force_login(finance)

    response = client.post(reverse("staff:promotion-approve", args=[promo.pk]), {"note": "Mine"})

    assert response.status_code == 422
    assert re.findall(r'<p class="notice notice-error" role="alert">(.*?)</p>', response.content.decode()) == [
        "Nobody may approve a code they created: another Finance member must."
    ]
    assert approval(promo) == (None, None, "")


def test_approving_needs_a_note(client, finance, finance2):
    promo = new_code(finance)
    client.force_login(finance2)

    response = client.post(reverse("staff:promotion-approve", args=[promo.pk]), {"note": " "})

    assert response.status_code == 422
    assert re.findall(r'<p class="field-error" id="id_note_error">(.*?)</p>', response.content.decode()) == [
        "This field is required."
    ]
    assert approval(promo) == (None, None, "")


def test_approving_an_approved_code_says_it_was_decided(client, finance, finance2, superuser):
    promo = new_code(finance)
    approve_code(promo, by=superuser, note="First")
    client.force_login(finance2)

    response = client.post(reverse("staff:promotion-approve", args=[promo.pk]), {"note": "Second"}, follow=True)

    assert "Promotional code BIG-2026 had already been decided." in response.content.decode()
    assert approval(promo) == ("root@staff.example", NOW, "First")


def test_the_list_filters_codes_waiting_for_approval(client, finance):
    new_code(finance)  # waiting
    new_code(finance, code="SMALL", amount="10", max_redemptions=5)  # active
    client.force_login(finance)

    waiting = client.get(reverse("staff:promotions"), {"state": "waiting"})
    active = client.get(reverse("staff:promotions"), {"state": "active"})

    assert [row.record.code for row in waiting.context["table"].paginated_rows] == ["BIG-2026"]
    assert [row.record.code for row in active.context["table"].paginated_rows] == ["SMALL"]
    assert '<option value="waiting" selected>Waiting for approval</option>' in waiting.content.decode()


def test_the_new_code_page_states_the_rule(client, finance):
    client.force_login(finance)

    html = client.get(reverse("staff:promotion-new")).content.decode()

    assert (
        "When the amount times the redemptions allowed is more than USD 100.00, nobody can redeem the code until a "
        "second Finance member approves it." in html
    )


# The admin


def test_the_admin_approves_through_the_same_service(client, finance, superuser):
    promo = new_code(finance)
    client.force_login(superuser)

    client.post("/admin/billing/promocode/", {"action": "approve", "_selected_action": [promo.pk]})

    assert approval(promo) == ("root@staff.example", NOW, "Decided in the admin")
    assert audit(promo)[-1][:3] == ("promo_code.approve", "root@staff.example", "staff")


def test_the_admin_refuses_the_creator(client, superuser):
    promo = new_code(superuser)
    client.force_login(superuser)

    response = client.post(
        "/admin/billing/promocode/", {"action": "approve", "_selected_action": [promo.pk]}, follow=True
    )

    assert "BIG-2026: Nobody may approve a code they created: another Finance member must." in (
        response.content.decode()
    )
    assert approval(promo) == (None, None, "")
