"""Promotional codes (billing.promotions): creating, deactivating and redeeming, and how the credit pays (R24)."""

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D

import pytest
import time_machine

from billing import ledger, promotions
from billing.models import (
    AccountStatus,
    Credit,
    CreditKind,
    EntryKind,
    LedgerEntry,
    PromoCode,
    PromoRedemption,
)
from billing.promotions import PromoState
from billing.services import BillingError
from staff import roles
from studio.models import AuditEvent
from tests.factories import approved_code, make_account, make_project, make_staff, make_user

NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _frozen():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def finance(db):
    return make_staff("finance@staff.example", roles.FINANCE)


@pytest.fixture
def account(owner):
    return make_account(owner, name="Main")


def new_code(by, *, code="SPRING-2026", amount="50", max_redemptions=10, days=30, redeem_by=None):
    return approved_code(
        code=code,
        amount=D(amount),
        redeem_by=redeem_by or NOW + timedelta(days=20),
        credit_valid_days=days,
        max_redemptions=max_redemptions,
        description="Spring launch",
        by=by,
    )


def snapshot():
    """Everything a redemption writes, to show that a refused one writes nothing."""
    return (
        Credit.objects.count(),
        LedgerEntry.objects.count(),
        PromoRedemption.objects.count(),
        list(PromoCode.objects.order_by("pk").values_list("times_redeemed", flat=True)),
        AuditEvent.objects.count(),
    )


def audit_rows(action):
    return [
        (e.actor.email if e.actor else None, e.actor_kind, e.object_type, e.object_id, e.before, e.after, e.reason)
        for e in AuditEvent.objects.filter(action=action).select_related("actor").order_by("pk")
    ]


# Creating and deactivating


def test_create_code_stores_it_in_capitals_and_audits_it(finance):
    promo = new_code(finance, code="  spring-2026 ")

    assert (promo.code, promo.amount, promo.redeem_by, promo.credit_valid_days) == (
        "SPRING-2026",
        D("50"),
        NOW + timedelta(days=20),
        30,
    )
    assert (promo.max_redemptions, promo.times_redeemed, promo.active, promo.created_by) == (10, 0, True, finance)
    assert audit_rows("promo_code.create") == [
        (
            "finance@staff.example",
            "staff",
            "billing.promocode",
            str(promo.pk),
            {},
            {
                "code": "SPRING-2026",
                "amount": "50.00",
                "redeem_by": "2026-06-30T12:00:00+00:00",
                "credit_valid_days": 30,
                "max_redemptions": 10,
            },
            "",
        )
    ]


def test_create_code_makes_a_random_readable_code_when_blank(finance):
    first, second = new_code(finance, code=""), new_code(finance, code="   ")

    group = "[ACDEFGHJKMNPQRTUVWXY34679]{4}"
    pattern = re.compile(rf"^{group}-{group}-{group}$")
    assert pattern.match(first.code) and pattern.match(second.code)
    assert first.code != second.code


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("AB", "Use 3 to 32 letters, digits and dashes, starting with a letter or digit."),
        ("-SPRING", "Use 3 to 32 letters, digits and dashes, starting with a letter or digit."),
        ("SPRING 2026", "Use 3 to 32 letters, digits and dashes, starting with a letter or digit."),
        ("spring-2026", "The code SPRING-2026 already exists."),
    ],
)
def test_create_code_refuses_malformed_and_taken_codes(finance, code, message):
    new_code(finance)
    before = snapshot()

    with pytest.raises(BillingError) as refused:
        new_code(finance, code=code)

    assert str(refused.value) == message
    assert snapshot() == before


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"amount": "0"}, "The amount, the days and the number of redemptions must be positive."),
        ({"days": 0}, "The amount, the days and the number of redemptions must be positive."),
        ({"max_redemptions": 0}, "The amount, the days and the number of redemptions must be positive."),
        ({"amount": "10.005"}, "Give the amount in dollars and cents."),
    ],
)
def test_create_code_refuses_figures_that_are_not_positive_or_not_whole_cents(finance, changes, message):
    with pytest.raises(BillingError) as refused:
        new_code(finance, **changes)

    assert str(refused.value) == message
    assert (PromoCode.objects.count(), AuditEvent.objects.count()) == (0, 0)


def test_deactivate_audits_once_with_the_reason(finance):
    promo = new_code(finance)

    promotions.deactivate(promo, by=finance, reason="Leaked on a forum")
    again = promotions.deactivate(promo, by=finance, reason="Twice")

    assert again.active is False
    assert PromoCode.objects.get().active is False
    assert audit_rows("promo_code.deactivate") == [
        (
            "finance@staff.example",
            "staff",
            "billing.promocode",
            str(promo.pk),
            {"active": True},
            {"active": False},
            "Leaked on a forum",
        )
    ]


def test_states_and_the_state_annotation_agree(finance, owner, account):
    active = new_code(finance, code="ACTIVE")
    expired = new_code(finance, code="EXPIRED", redeem_by=NOW + timedelta(hours=1))
    exhausted = new_code(finance, code="EXHAUSTED", max_redemptions=1)
    deactivated = new_code(finance, code="DEACTIVATED", max_redemptions=1)
    promotions.redeem(account, "exhausted", by=owner)
    promotions.redeem(account, "deactivated", by=owner)
    promotions.deactivate(deactivated, by=finance, reason="Over")
    later = NOW + timedelta(hours=2)

    annotated = dict(promotions.with_state(PromoCode.objects.all(), now=later).values_list("code", "state"))
    each = {p.code: promotions.state_of(p, now=later) for p in PromoCode.objects.all()}

    expected = {
        "ACTIVE": PromoState.ACTIVE,
        "EXPIRED": PromoState.EXPIRED,
        "EXHAUSTED": PromoState.EXHAUSTED,
        "DEACTIVATED": PromoState.DEACTIVATED,
    }
    assert annotated == expected
    assert each == expected
    assert {active.pk, expired.pk, exhausted.pk, deactivated.pk} == set(PromoCode.objects.values_list("pk", flat=True))


# Redeeming


def test_redeem_grants_a_promotional_credit_valid_for_the_codes_days(finance, owner, account):
    promo = new_code(finance, amount="50", days=30)

    credit = promotions.redeem(account, " spring-2026 ", by=owner)

    assert (credit.account, credit.kind, credit.original_amount) == (account, CreditKind.PROMOTIONAL, D("50"))
    assert (credit.granted_at, credit.expires_at) == (NOW, NOW + timedelta(days=30))
    assert credit.source == "Promotional code SPRING-2026"
    assert list(credit.entries.values_list("kind", "amount", "created_by")) == [
        (EntryKind.CREDIT_GRANT, D("50"), owner.pk)
    ]
    assert list(PromoRedemption.objects.values_list("code", "account", "credit", "redeemed_by", "redeemed_at")) == [
        (promo.pk, account.pk, credit.pk, owner.pk, NOW)
    ]
    promo.refresh_from_db()
    assert promo.times_redeemed == 1
    assert ledger.balances(account).credit_remaining == D("50")
    assert audit_rows("promo_code.redeem") == [
        (
            "owner@example.com",
            "user",
            "billing.billingaccount",
            str(account.pk),
            {},
            {
                "code": "SPRING-2026",
                "amount": "50.00",
                "credit": credit.pk,
                "expires_at": "2026-07-10T12:00:00+00:00",
                "times_redeemed": 1,
            },
            "",
        )
    ]


def test_each_account_redeems_once_until_the_code_is_used_up(finance):
    promo = new_code(finance, max_redemptions=2)
    accounts = [make_account(make_user(f"admin{i}@example.com")) for i in range(3)]

    promotions.redeem(accounts[0], "SPRING-2026", by=accounts[0].created_by)
    promotions.redeem(accounts[1], "SPRING-2026", by=accounts[1].created_by)
    with pytest.raises(BillingError) as refused:
        promotions.redeem(accounts[2], "SPRING-2026", by=accounts[2].created_by)

    assert str(refused.value) == "This promotional code has been fully redeemed."
    promo.refresh_from_db()
    assert promo.times_redeemed == 2
    assert sorted(PromoRedemption.objects.values_list("account__display_name", flat=True)) == sorted(
        [accounts[0].display_name, accounts[1].display_name]
    )


def refuse(account, code, by):
    before = snapshot()
    with pytest.raises(BillingError) as refused:
        promotions.redeem(account, code, by=by)
    assert snapshot() == before
    return str(refused.value)


@pytest.mark.parametrize("typed", ["NO-SUCH-CODE", "", "   ", "SPRING2026", "SPRING-2026X"])
def test_redeem_refuses_an_unknown_code_and_changes_nothing(finance, owner, account, typed):
    new_code(finance)

    assert refuse(account, typed, owner) == "There is no promotional code like this. Check the code and try again."


def test_redeem_refuses_a_deactivated_code_and_changes_nothing(finance, owner, account):
    promotions.deactivate(new_code(finance), by=finance, reason="Withdrawn")

    assert refuse(account, "SPRING-2026", owner) == "This promotional code is no longer active."


def test_redeem_refuses_an_expired_code_and_changes_nothing(finance, owner, account):
    new_code(finance, redeem_by=NOW + timedelta(days=1))

    with time_machine.travel(NOW + timedelta(days=1), tick=False):  # the very moment it ends
        assert refuse(account, "SPRING-2026", owner) == "This promotional code has expired."


def test_redeem_works_until_the_moment_the_code_ends(finance, owner, account):
    new_code(finance, redeem_by=NOW + timedelta(days=1))

    with time_machine.travel(NOW + timedelta(days=1) - timedelta(microseconds=1), tick=False):
        credit = promotions.redeem(account, "SPRING-2026", by=owner)

    assert credit.original_amount == D("50")


def test_redeem_refuses_a_fully_redeemed_code_and_changes_nothing(finance, owner, account):
    new_code(finance, max_redemptions=1)
    other = make_account(make_user("other@example.com"))
    promotions.redeem(other, "SPRING-2026", by=other.created_by)

    assert refuse(account, "SPRING-2026", owner) == "This promotional code has been fully redeemed."


def test_redeem_refuses_a_second_redemption_on_one_account_and_changes_nothing(finance, owner, account):
    new_code(finance)
    promotions.redeem(account, "SPRING-2026", by=owner)
    co_admin = make_user("co-admin@example.com")
    account.administrators.create(user=co_admin)

    assert refuse(account, "spring-2026", co_admin) == "This billing account has already redeemed this code."
    assert refuse(account, "SPRING-2026", owner) == "This billing account has already redeemed this code."


def test_a_person_redeems_for_each_account_they_administer(finance, owner, account):
    new_code(finance)
    second = make_account(owner, name="Second")

    promotions.redeem(account, "SPRING-2026", by=owner)
    promotions.redeem(second, "SPRING-2026", by=owner)

    assert sorted(PromoRedemption.objects.values_list("account__display_name", flat=True)) == ["Main", "Second"]


def test_redeem_refuses_a_closed_account_and_changes_nothing(finance, owner, account):
    new_code(finance)
    account.status = AccountStatus.CLOSED
    account.save(update_fields=["status"])

    assert refuse(account, "SPRING-2026", owner) == "A closed billing account cannot redeem promotional codes."


def test_a_suspended_account_may_redeem(finance, owner, account):
    new_code(finance)
    account.status = AccountStatus.SUSPENDED
    account.save(update_fields=["status"])

    assert promotions.redeem(account, "SPRING-2026", by=owner).original_amount == D("50")


def test_the_database_refuses_a_second_redemption_per_account(finance, owner, account):
    from django.db import IntegrityError, transaction

    promo = new_code(finance)
    credit = promotions.redeem(account, "SPRING-2026", by=owner)

    with pytest.raises(IntegrityError), transaction.atomic():
        PromoRedemption.objects.create(code=promo, account=account, credit=credit, redeemed_by=owner)


# How the credit pays (R24)


def usage(account, project, amount, *, at):
    line = ledger.UsageLineIn(
        project_id=project.pk,
        model_id="gemini-2.5-flash",
        price_id=1,
        sku="input",
        batch=False,
        long_prompt=False,
        quantity=D("1"),
        events=1,
        amount=D(amount),
        first_occurred_at=at,
        last_occurred_at=at,
    )
    charge = ledger.record_usage(account, month=date(2026, 6, 1), lines=[line], at=at)
    return [
        (e.credit.get_kind_display(), e.amount)
        for e in LedgerEntry.objects.filter(kind=EntryKind.CREDIT_APPLICATION, created_at=charge.created_at)
        .select_related("credit")
        .order_by("pk")
    ]


def test_a_usage_charge_draws_welcome_then_promotional_and_goodwill_by_expiry_then_prepayment(finance, owner, account):
    project = make_project(owner)
    ledger.grant_credit(account, kind=CreditKind.PREPAYMENT, amount=D("100"))
    ledger.grant_credit(
        account, kind=CreditKind.WELCOME, amount=D("300"), expires_at=NOW + timedelta(days=90), welcome_for=owner
    )
    ledger.grant_credit(account, kind=CreditKind.GOODWILL, amount=D("20"), expires_at=NOW + timedelta(days=40))
    new_code(finance, amount="50", days=30)
    promotions.redeem(account, "SPRING-2026", by=owner)  # expires before the goodwill credit

    first = usage(account, project, "330", at=NOW + timedelta(hours=1))
    second = usage(account, project, "60", at=NOW + timedelta(hours=2))

    assert first == [("Welcome credit", D("-300")), ("Promotional credit", D("-30"))]
    assert second == [("Promotional credit", D("-20")), ("Goodwill credit", D("-20")), ("Prepayment credit", D("-20"))]
    assert ledger.balances(account, at=NOW + timedelta(hours=2)) == ledger.Balances(
        credit_remaining=D("80"), amount_due=D("0"), total_spend=D("390")
    )


def test_a_promotional_credit_expiring_after_a_goodwill_one_pays_after_it(finance, owner, account):
    project = make_project(owner)
    ledger.grant_credit(account, kind=CreditKind.GOODWILL, amount=D("10"), expires_at=NOW + timedelta(days=5))
    new_code(finance, amount="50", days=30)
    promotions.redeem(account, "SPRING-2026", by=owner)

    assert usage(account, project, "15", at=NOW + timedelta(hours=1)) == [
        ("Goodwill credit", D("-10")),
        ("Promotional credit", D("-5")),
    ]


def test_an_expired_promotional_credit_pays_nothing(finance, owner, account):
    project = make_project(owner)
    new_code(finance, amount="50", days=30)
    promotions.redeem(account, "SPRING-2026", by=owner)
    later = NOW + timedelta(days=30)

    with time_machine.travel(later, tick=False):
        assert usage(account, project, "5", at=later) == []
        assert ledger.balances(account, at=later).amount_due == D("5")
