"""Promotional codes under concurrency (PostgreSQL): the code's row lock gives the last use to one account,
and one account redeeming twice at once gets one credit."""

from datetime import timedelta
from decimal import Decimal as D

import pytest
from django.utils import timezone

from billing import ledger, promotions
from billing.models import Credit, CreditKind, PromoCode, PromoRedemption
from billing.services import BillingError
from staff import roles
from studio.models import AuditEvent
from tests.concurrency import at_once
from tests.factories import approved_code, make_account, make_staff, make_user

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

RUNNERS = 6


def new_code(max_redemptions):
    finance = make_staff("finance@staff.example", roles.FINANCE)
    return approved_code(
        code="LAST-ONE",
        amount=D("25"),
        redeem_by=timezone.now() + timedelta(days=1),
        credit_valid_days=30,
        max_redemptions=max_redemptions,
        by=finance,
    )


def outcome(results, errors):
    return sorted(type(r).__name__ for r in results), sorted(str(e) for e in errors)


def test_accounts_redeeming_the_last_use_at_once_get_one_credit_between_them():
    promo = new_code(max_redemptions=3)
    early = [make_account(make_user(f"early{i}@example.com")) for i in range(2)]
    for account in early:
        promotions.redeem(account, "LAST-ONE", by=account.created_by)
    racers = [make_account(make_user(f"racer{i}@example.com")) for i in range(RUNNERS)]

    results, errors = at_once(lambda i: promotions.redeem(racers[i], "last-one", by=racers[i].created_by), RUNNERS)

    assert outcome(results, errors) == (["Credit"], ["This promotional code has been fully redeemed."] * (RUNNERS - 1))
    promo.refresh_from_db()
    assert promo.times_redeemed == promo.max_redemptions == 3
    assert PromoRedemption.objects.count() == 3
    winner = results[0].account
    assert winner in racers
    assert Credit.objects.filter(kind=CreditKind.PROMOTIONAL).count() == 3
    assert [ledger.balances(a).credit_remaining for a in racers] == [D("25") if a == winner else D("0") for a in racers]
    assert AuditEvent.objects.filter(action="promo_code.redeem").count() == 3


def test_one_account_redeeming_twice_at_once_gets_one_credit():
    promo = new_code(max_redemptions=10)
    owner = make_user("owner@example.com")
    account = make_account(owner)
    admins = [owner, *[make_user(f"co{i}@example.com") for i in range(RUNNERS - 1)]]
    for admin in admins[1:]:
        account.administrators.create(user=admin)

    results, errors = at_once(lambda i: promotions.redeem(account, "LAST-ONE", by=admins[i]), RUNNERS)

    assert outcome(results, errors) == (
        ["Credit"],
        ["This billing account has already redeemed this code."] * (RUNNERS - 1),
    )
    assert all(isinstance(e, BillingError) for e in errors)
    promo.refresh_from_db()
    assert promo.times_redeemed == 1
    assert list(PromoRedemption.objects.values_list("account", flat=True)) == [account.pk]
    assert ledger.balances(account).credit_remaining == D("25")
    assert PromoCode.objects.get().active is True
