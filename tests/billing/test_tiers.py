from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core import mail
from django.core.management import call_command
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from billing import ledger, tiers
from billing.models import CreditKind, TierChange, TierRule
from studio.models import BillingState, Tier
from tests.factories import deliver_mail, make_account, make_key, make_project

D = Decimal


class Rule:
    def __init__(self, tier, spend, days):
        self.tier, self.min_total_spend, self.min_days_since_first_payment = tier, D(spend), days


DEFAULT_RULES = [Rule("tier_2", "250", 30), Rule("tier_3", "1000", 30)]


@pytest.mark.parametrize(
    ("spend", "days", "expected"),
    [
        ("0", None, Tier.TIER_1),
        ("250", 30, Tier.TIER_1),  # "more than" 250
        ("250.01", 29, Tier.TIER_1),
        ("250.01", 30, Tier.TIER_2),
        ("1000", 400, Tier.TIER_2),
        ("1000.01", 30, Tier.TIER_3),
        ("5000", None, Tier.TIER_1),  # no payment yet
    ],
)
def test_tier_for_the_default_rules(spend, days, expected):
    assert tiers.tier_for(D(spend), days, DEFAULT_RULES) == expected


money = st.decimals(min_value=0, max_value=10_000, places=2)
days = st.one_of(st.none(), st.integers(min_value=0, max_value=1000))
rule_sets = st.lists(
    st.tuples(st.sampled_from(["tier_2", "tier_3"]), money, st.integers(0, 400)), max_size=2, unique_by=lambda r: r[0]
).map(lambda rows: [Rule(*row) for row in rows])


@given(money, money, days, days, rule_sets)
def test_tier_for_is_monotonic_in_spend_and_age(spend_a, spend_b, days_a, days_b, rules):
    low_spend, high_spend = sorted((spend_a, spend_b))
    if days_a is not None and days_b is not None:
        low_days, high_days = sorted((days_a, days_b))
    else:
        low_days, high_days = None, days_a if days_a is not None else days_b

    low = tiers.tier_for(low_spend, low_days, rules)
    high = tiers.tier_for(high_spend, high_days, rules)

    assert tiers.rank(high) >= tiers.rank(low)
    assert tiers.rank(low) >= tiers.rank(Tier.TIER_1)


@pytest.fixture
def spender(owner):
    """A Tier 1 project whose account spent USD 300 and made its first payment today."""
    project = make_project(owner, name="Spender")
    make_key(project)
    account = make_account(owner, projects=[project])
    ledger.record_usage_charge(account, amount=D("300"), description="usage", idempotency_key="s1")
    ledger.record_payment(account, amount=D("300"), description="Statement paid", idempotency_key="p1")
    project.refresh_from_db()
    return project, account


def test_tier_2_needs_thirty_days_since_the_first_payment(spender):
    _, account = spender
    start = timezone.now()

    assert tiers.eligible_tier(account, now=start + timedelta(days=29, hours=23)) == Tier.TIER_1
    assert tiers.eligible_tier(account, now=start + timedelta(days=30, minutes=1)) == Tier.TIER_2


def test_upgrade_that_is_not_met_lists_each_criterion(client_for, owner, spender):
    project, _ = spender

    response = client_for(owner).post(f"/billing/projects/{project.project_id}/upgrade/")

    html = response.content.decode()
    assert response.status_code == 422
    assert "The project does not meet the next tier" in html
    assert "<td>Total spend on the billing account</td><td>USD 300.00</td><td>more than USD 250.00</td>" in html
    assert "<td>Days since the first successful payment</td><td>0</td><td>at least 30</td>" in html
    project.refresh_from_db()
    assert project.tier == Tier.TIER_1


def test_upgrade_when_met_moves_up_one_tier_and_keeps_history(client_for, owner, spender):
    project, account = spender

    with time_machine.travel(timezone.now() + timedelta(days=31)):
        tiers.refresh_upgrade_flags(account)
        project.refresh_from_db()
        assert project.upgrade_available
        response = client_for(owner).post(f"/billing/projects/{project.project_id}/upgrade/")

    assert response["Location"] == "/api-keys/"
    project.refresh_from_db()
    assert (project.tier, project.upgrade_available) == (Tier.TIER_2, False)
    change = TierChange.objects.filter(project=project).first()
    assert (change.from_tier, change.to_tier, change.reason, change.actor) == (
        Tier.TIER_1,
        Tier.TIER_2,
        "Upgrade requested",
        owner,
    )


def test_upgrade_is_404_for_viewers_and_outsiders(client_for, viewer, outsider, project):
    for user in (viewer, outsider):
        assert client_for(user).post(f"/billing/projects/{project.project_id}/upgrade/").status_code == 404


def test_progress_estimates_when_the_next_tier_unlocks(owner):
    project = make_project(owner)
    account = make_account(owner, projects=[project])
    now = timezone.now()
    # USD 150 over the last 30 days = USD 5 a day; first payment 10 days ago.
    ledger.record_usage_charge(
        account, amount=D("150"), description="u", idempotency_key="a", at=now - timedelta(days=5)
    )
    ledger.record_payment(account, amount=D("1"), description="p", idempotency_key="b", at=now - timedelta(days=10))
    project.refresh_from_db()

    progress = tiers.progress(project, now=now)

    assert progress.next_tier == Tier.TIER_2
    spend, age = progress.criteria
    assert (spend.current, spend.met, age.current, age.met) == ("USD 150.00", False, "10", False)
    assert spend.met_on.date() == (now + timedelta(days=21)).date()  # (250 - 150) / 5 = 20 days, +1 to pass "more than"
    assert age.met_on == now - timedelta(days=10) + timedelta(days=30)
    assert progress.unlocks_on == max(spend.met_on, age.met_on)


def test_evaluate_tiers_upgrades_automatically_once_and_emails_the_owner(spender, owner):
    project, _ = spender

    with time_machine.travel(timezone.now() + timedelta(days=31)):
        call_command("evaluate_tiers")
        call_command("evaluate_tiers")
        deliver_mail()

    project.refresh_from_db()
    assert project.tier == Tier.TIER_2
    assert TierChange.objects.filter(project=project, to_tier=Tier.TIER_2).count() == 1
    assert [m.subject for m in mail.outbox] == ["Spender is now on Tier 2"]
    assert mail.outbox[0].to == [owner.email]


def test_tier_rules_are_data(spender):
    _, account = spender
    TierRule.objects.filter(tier="tier_2").update(min_total_spend=D("500"))

    with time_machine.travel(timezone.now() + timedelta(days=31)):
        assert tiers.eligible_tier(account) == Tier.TIER_1


def test_moving_to_another_account_reevaluates_the_tier(owner, spender):
    from billing.services import link_project

    project, _ = spender
    with time_machine.travel(timezone.now() + timedelta(days=31)):
        call_command("evaluate_tiers")
        project.refresh_from_db()
        assert project.tier == Tier.TIER_2
        link_project(project, make_account(owner, name="Fresh"), by=owner)

    project.refresh_from_db()
    assert (project.tier, project.billing_state) == (Tier.TIER_1, BillingState.ACTIVE)


def test_tier_progress_panel_on_its_own_url(client_for, owner, spender):
    project, _ = spender

    html = (
        client_for(owner)
        .get(f"/billing/projects/{project.project_id}/tier/", headers={"HX-Request": "true"})
        .content.decode()
    )

    assert html.lstrip().startswith('<section class="card" id="tier-progress">')
    assert "Next: Tier 2" in html
    assert "Billing account linked" in html  # the history


def test_credit_kinds_do_not_count_as_payments(owner):
    account = make_account(owner)
    ledger.grant_credit(account, kind=CreditKind.WELCOME, amount=D("300"), welcome_for=owner)
    ledger.record_usage_charge(account, amount=D("299"), description="u", idempotency_key="w")

    assert tiers.standings([account])[account.pk].first_payment_at is None
