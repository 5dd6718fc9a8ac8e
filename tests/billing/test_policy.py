from decimal import Decimal

from billing.models import Country, PrepaymentMethodRule
from billing.services import project_state_for, required_prepayment
from studio.models import BillingState, Tier
from tests.factories import make_account, make_card, make_profile


def test_no_prepayment_by_default(owner):
    decision = required_prepayment(make_account(owner, country="US"))

    assert (decision.amount, decision.reasons) == (None, ())


def test_country_rule_requires_the_countrys_amount(owner):
    Country.objects.filter(code="IN").update(prepayment_amount=Decimal("25.00"))

    decision = required_prepayment(make_account(owner, country="IN"))

    assert decision.amount == Decimal("25.00")
    assert decision.reasons == ("New billing accounts in India make a one-time prepayment.",)


def test_country_without_amount_uses_the_default_minimum(owner, settings):
    settings.PREPAYMENT_DEFAULT_AMOUNT = Decimal("10")
    Country.objects.filter(code="PK").update(prepayment_amount=None)

    assert required_prepayment(make_account(owner, country="PK")).amount == Decimal("10")


def test_bank_account_rule(owner):
    profile = make_profile(owner)
    make_card(profile, kind="bank_account", brand="ach", last4="6789")

    decision = required_prepayment(make_account(owner))

    assert decision.amount == Decimal("10.00")
    assert decision.reasons == ("Accounts paying by bank account make a one-time prepayment.",)


def test_inactive_rule_does_not_apply(owner):
    PrepaymentMethodRule.objects.update(active=False)
    make_card(make_profile(owner), kind="bank_account", brand="ach")

    assert required_prepayment(make_account(owner)).amount is None


def test_staff_flag_and_largest_amount_wins(owner):
    Country.objects.filter(code="IN").update(prepayment_amount=Decimal("40.00"))
    account = make_account(owner, country="IN")
    account.prepayment_flagged = True

    decision = required_prepayment(account)

    assert decision.amount == Decimal("40.00")
    assert len(decision.reasons) == 2


def test_project_state_follows_the_prepayment(owner):
    assert project_state_for(make_account(owner)) == (Tier.TIER_1, BillingState.ACTIVE)
    assert project_state_for(make_account(owner, prepayment_due=True)) == (Tier.FREE, BillingState.PREPAYMENT_DUE)


def test_every_iso_country_is_there_with_flags(db):
    assert Country.objects.count() == 249
    japan = Country.objects.get(code="JP")
    assert (japan.flag, japan.name, japan.billing_supported, japan.free_tier_available) == ("🇯🇵", "Japan", True, True)
    for code in ("DE", "FR", "GB", "CH", "NO"):  # EEA, UK and Switzerland have the free tier
        assert Country.objects.get(code=code).free_tier_available
    assert not Country.objects.get(code="KP").billing_supported
