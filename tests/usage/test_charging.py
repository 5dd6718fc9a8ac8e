"""Usage becomes money (SPEC §9, issue 10): billed by the state when it occurred, charged per account
per run with statement lines, paid from credits in the R24 order, exactly once."""

from datetime import timedelta
from decimal import Decimal as D

import pytest
import time_machine
from django.core.management import call_command
from django.db.models import F
from django.utils import timezone

from billing import ledger, services, tiers
from billing.models import AccountStatus, CreditKind, EntryKind, LedgerEntry, TierRule, UsageLine
from studio.models import Tier
from tests.factories import make_account, make_billed_project, make_key, make_project, make_user
from usage.charging import charge_pending
from usage.ingest import ingest
from usage.models import PendingCharge, UsageEvent

SECOND = timedelta(seconds=1)
# gemini-2.5-flash: 1,200 input tokens at USD 0.30/M + 300 output at USD 2.50/M
ONE_REQUEST = D("0.00111")


def billed():
    """{event id: (billable, account pk, cost)}"""
    return {e.event_id: (e.billable, e.account_id, e.cost) for e in UsageEvent.objects.all()}


def at(moment):
    return moment.isoformat()


@pytest.fixture
def owner(db):
    return make_user("owner@example.com")


# Billable when it happened: each change, with an event one second before and one after it.


def test_linking_bills_usage_from_the_moment_of_the_link(owner, event):
    project = make_project(owner)
    key, _ = make_key(project)
    linked_at = timezone.now() - timedelta(hours=1)
    with time_machine.travel(linked_at, tick=False):
        account = make_account(owner, projects=[project])

    ingest([event(key, event_id="before", occurred_at=at(linked_at - SECOND))])
    ingest([event(key, event_id="after", occurred_at=at(linked_at + SECOND))])

    assert billed() == {"before": (False, None, 0), "after": (True, account.pk, ONE_REQUEST)}


def test_usage_made_on_a_paid_tier_and_reported_after_the_unlink_is_charged(owner, event):
    project = make_billed_project(owner, since=timezone.now() - timedelta(days=2))
    account = project.billing.account
    key, _ = make_key(project)
    unlinked_at = timezone.now() - timedelta(hours=1)
    with time_machine.travel(unlinked_at, tick=False):
        services.unlink_project(project, by=owner)

    ingest([event(key, event_id="before", occurred_at=at(unlinked_at - SECOND))])  # reported now, after the unlink
    ingest([event(key, event_id="after", occurred_at=at(unlinked_at + SECOND))])

    assert billed() == {"before": (True, account.pk, ONE_REQUEST), "after": (False, None, 0)}


def test_a_move_bills_each_account_for_the_usage_of_its_own_time(owner, event):
    project = make_billed_project(owner, since=timezone.now() - timedelta(days=2))
    first = project.billing.account
    second = make_account(owner)
    key, _ = make_key(project)
    moved_at = timezone.now() - timedelta(hours=1)
    with time_machine.travel(moved_at, tick=False):
        services.link_project(project, second, by=owner)
    project.refresh_from_db()
    assert project.tier == Tier.TIER_1  # the same tier: only who pays changed

    ingest([event(key, event_id="before", occurred_at=at(moved_at - SECOND))])
    ingest([event(key, event_id="after", occurred_at=at(moved_at + SECOND))])

    assert billed() == {"before": (True, first.pk, ONE_REQUEST), "after": (True, second.pk, ONE_REQUEST)}


def test_a_suspension_stops_billing_and_reinstatement_resumes_it(owner, event):
    project = make_billed_project(owner, since=timezone.now() - timedelta(days=2))
    account = project.billing.account
    key, _ = make_key(project)
    suspended_at = timezone.now() - timedelta(hours=2)
    reinstated_at = timezone.now() - timedelta(hours=1)
    with time_machine.travel(suspended_at, tick=False):
        services.set_account_status(account, AccountStatus.SUSPENDED, by=owner, reason="test")
    with time_machine.travel(reinstated_at, tick=False):
        services.set_account_status(account, AccountStatus.ACTIVE, by=owner, reason="test")

    ingest(
        [
            event(key, event_id="s-1", occurred_at=at(suspended_at - SECOND)),
            event(key, event_id="s+1", occurred_at=at(suspended_at + SECOND)),
            event(key, event_id="r-1", occurred_at=at(reinstated_at - SECOND)),
            event(key, event_id="r+1", occurred_at=at(reinstated_at + SECOND)),
        ]
    )

    assert billed() == {
        "s-1": (True, account.pk, ONE_REQUEST),
        "s+1": (False, None, 0),
        "r-1": (False, None, 0),
        "r+1": (True, account.pk, ONE_REQUEST),
    }


def test_a_project_whose_prepayment_is_due_is_not_billed(owner, event):
    project = make_project(owner)
    with time_machine.travel(timezone.now() - timedelta(hours=1)):
        make_account(owner, prepayment_due=True, projects=[project])
    key, _ = make_key(project)

    ingest([event(key, event_id="due")])

    assert billed() == {"due": (False, None, 0)}


def test_studio_usage_is_billed_while_a_paid_key_is_linked_to_the_studio(owner, event):
    project = make_billed_project(owner, since=timezone.now() - timedelta(days=2))
    account = project.billing.account
    key, _ = make_key(project)
    linked_at = timezone.now() - timedelta(hours=2)
    unlinked_at = timezone.now() - timedelta(hours=1)
    with time_machine.travel(linked_at, tick=False):
        owner.link_studio_key(key, by=owner)
    with time_machine.travel(unlinked_at, tick=False):
        owner.link_studio_key(None, by=owner)

    ingest(
        [
            event(key, event_id=name, source="studio", occurred_at=at(moment))
            for name, moment in [
                ("l-1", linked_at - SECOND),
                ("l+1", linked_at + SECOND),
                ("u-1", unlinked_at - SECOND),
                ("u+1", unlinked_at + SECOND),
            ]
        ]
    )

    assert billed() == {
        "l-1": (False, None, 0),
        "l+1": (True, account.pk, ONE_REQUEST),
        "u-1": (True, account.pk, ONE_REQUEST),
        "u+1": (False, None, 0),
    }


# Charging


def usage_lines(account):
    return sorted(
        (line.project.name, line.model_id, line.sku, line.batch, line.quantity, line.events, line.amount)
        for line in UsageLine.objects.filter(account=account).select_related("project")
    )


def test_one_charge_per_account_per_run_with_a_line_per_project_model_and_sku(owner, event):
    project_a = make_billed_project(owner, name="A")
    account = project_a.billing.account
    project_b = make_project(owner, name="B")
    with time_machine.travel(timezone.now() - timedelta(days=1)):
        services.link_project(project_b, account, by=owner)
    key_a, key_b = make_key(project_a)[0], make_key(project_b)[0]
    ingest(
        [
            event(key_a),
            event(key_a),
            event(key_a, model="gemini-2.5-pro", input_tokens=1000, output_tokens=100),
            event(key_b, kind="batch"),
            event(key_b, status_code=500),  # failed: free
            event(key_b, kind="count_tokens", output_tokens=0),  # free
        ]
    )

    run = charge_pending()

    assert (run.accounts, run.charges, run.lines) == (1, 1, 6)
    charge = LedgerEntry.objects.get(kind=EntryKind.USAGE_CHARGE)
    # A: 2 × 0.00111 + pro (1,000 × 1.25/M + 100 × 10/M = 0.00225); B: batch at half price 0.000555
    assert charge.amount == D("0.005025")
    assert usage_lines(account) == [
        ("A", "gemini-2.5-flash", "input", False, D("2400"), 2, D("0.00072")),
        ("A", "gemini-2.5-flash", "output", False, D("600"), 2, D("0.0015")),
        ("A", "gemini-2.5-pro", "input", False, D("1000"), 1, D("0.00125")),
        ("A", "gemini-2.5-pro", "output", False, D("100"), 1, D("0.001")),
        ("B", "gemini-2.5-flash", "input", True, D("1200"), 1, D("0.00018")),
        ("B", "gemini-2.5-flash", "output", True, D("300"), 1, D("0.000375")),
    ]
    assert ledger.balances(account).amount_due == D("0.005025")  # no credit: owed
    assert ledger.balances(account).total_spend == D("0.005025")
    assert not PendingCharge.objects.filter(events__gt=0).exists()

    again = charge_pending()  # nothing new

    assert (again.accounts, again.charges) == (0, 0)
    assert LedgerEntry.objects.filter(kind=EntryKind.USAGE_CHARGE).count() == 1


def test_replayed_reports_are_charged_once(owner, event):
    key, _ = make_key(make_billed_project(owner))
    batch = [event(key), event(key)]
    ingest(batch)
    charge_pending()
    ingest(batch)
    ingest(batch[:1])

    charge_pending()

    assert list(LedgerEntry.objects.filter(kind=EntryKind.USAGE_CHARGE).values_list("amount", flat=True)) == [
        D("0.00222")
    ]


def test_a_batch_with_some_replayed_events_adds_only_its_new_events_to_the_pending_lines(owner, event):
    # All new: ingestion sums the lines in Python; one replayed: PostgreSQL sums the inserted events itself.
    key, _ = make_key(make_billed_project(owner))
    first, second, third = event(key), event(key), event(key)
    ingest([first, second])
    ingest([first, third])

    lines = PendingCharge.objects.order_by("sku").values_list("sku", "quantity", "events", "amount_nanos")
    # Three events of 1,200 input tokens (USD 0.00036) and 300 output tokens (USD 0.00075) of gemini-2.5-flash.
    assert list(lines) == [("input", 3600, 3, 1_080_000), ("output", 900, 3, 2_250_000)]


def test_sub_micro_dollar_remainders_wait_for_the_next_charge_and_nothing_is_lost(owner, event):
    key, _ = make_key(make_billed_project(owner))
    # 7 output tokens of flash: 7 × 2.50 / 1M = USD 0.0000175 = 17.5 micro-dollars
    ingest([event(key, input_tokens=0, output_tokens=7)])
    charge_pending()
    ingest([event(key, input_tokens=0, output_tokens=7)])
    charge_pending()

    charges = list(LedgerEntry.objects.filter(kind=EntryKind.USAGE_CHARGE).values_list("amount", flat=True))
    assert charges == [D("0.000017"), D("0.000018")]  # 17 µ, then 17 µ + the 0.5 µ + 0.5 µ carried
    assert not PendingCharge.objects.exists()  # nothing left over: the line's row is gone


def test_credits_pay_in_the_r24_order_and_the_rest_is_owed(owner, event):
    project = make_billed_project(owner, since=timezone.now() - timedelta(days=3))
    account = project.billing.account
    key, _ = make_key(project)
    now = timezone.now()
    with time_machine.travel(now - timedelta(days=2)):
        prepayment = ledger.grant_credit(account, kind=CreditKind.PREPAYMENT, amount=D("10"))
        goodwill = ledger.grant_credit(
            account, kind=CreditKind.GOODWILL, amount=D("5"), expires_at=now + timedelta(days=20)
        )
        promotional = ledger.grant_credit(
            account, kind=CreditKind.PROMOTIONAL, amount=D("5"), expires_at=now + timedelta(days=10)
        )
        welcome = ledger.grant_credit(
            account, kind=CreditKind.WELCOME, amount=D("5"), expires_at=now + timedelta(days=90), welcome_for=owner
        )
    # USD 25 of output per event (10M tokens at 2.50/M): 28 dollars in all.
    ingest([event(key, input_tokens=0, output_tokens=10_000_000), event(key, input_tokens=10_000_000, output_tokens=0)])

    charge_pending()

    applied = {
        entry.credit_id: entry.amount
        for entry in LedgerEntry.objects.filter(kind=EntryKind.CREDIT_APPLICATION).order_by("pk")
    }
    assert list(applied.items()) == [
        (welcome.pk, D("-5")),
        (promotional.pk, D("-5")),
        (goodwill.pk, D("-5")),
        (prepayment.pk, D("-10")),
    ]
    balances = ledger.balances(account)
    assert (balances.credit_remaining, balances.amount_due, balances.total_spend) == (D("0"), D("3"), D("28"))


def test_a_credit_pays_only_for_usage_that_occurred_while_it_was_valid(owner, event):
    project = make_billed_project(owner, since=timezone.now() - timedelta(days=3))
    account = project.billing.account
    key, _ = make_key(project)
    occurred = timezone.now() - timedelta(hours=2)
    with time_machine.travel(occurred + timedelta(hours=1)):
        late_credit = ledger.grant_credit(account, kind=CreditKind.PROMOTIONAL, amount=D("50"))
    with time_machine.travel(timezone.now() - timedelta(days=2)):
        expired = ledger.grant_credit(
            account, kind=CreditKind.GOODWILL, amount=D("50"), expires_at=timezone.now() + timedelta(days=1)
        )
    ingest([event(key, input_tokens=0, output_tokens=10_000_000, occurred_at=at(occurred))])  # USD 25

    charge_pending()  # the goodwill credit expired an hour before this run; the promotional one came after the usage

    assert not LedgerEntry.objects.filter(kind=EntryKind.CREDIT_APPLICATION).exists()
    assert ledger.balances(account).amount_due == D("25")
    remaining = {credit.pk: credit.remaining for credit in ledger.credits_with_remaining(account)}
    assert remaining == {late_credit.pk: D("50"), expired.pk: D("50")}


def test_usage_of_two_pacific_months_makes_two_charges(owner, event):
    project = make_billed_project(owner, since=timezone.now() - timedelta(days=5))
    key, _ = make_key(project)
    with time_machine.travel("2026-12-01T09:00:00Z", tick=False):  # 01:00 on 1 December in Los Angeles
        ingest(
            [
                event(key, event_id="november", occurred_at="2026-12-01T07:59:59Z"),  # 23:59:59 on 30 November
                event(key, event_id="december", occurred_at="2026-12-01T08:00:00Z"),
            ]
        )
        charge_pending()

    months = LedgerEntry.objects.filter(kind=EntryKind.USAGE_CHARGE).order_by("usage_month")
    assert [(str(e.usage_month), e.amount) for e in months] == [
        ("2026-11-01", ONE_REQUEST),
        ("2026-12-01", ONE_REQUEST),
    ]


def test_an_event_reported_now_is_in_the_balance_after_the_next_run(owner, event):
    project = make_billed_project(owner)
    account = project.billing.account
    key, _ = make_key(project)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        ingest([event(key, occurred_at=at(timezone.now()))])
        assert ledger.balances(account).total_spend == 0
        clock.shift(timedelta(seconds=20))  # the next run of the job (CHARGE_INTERVAL_SECONDS)
        call_command("charge_usage", verbosity=0)

        assert ledger.balances(account).total_spend == ONE_REQUEST
        assert LedgerEntry.objects.get(kind=EntryKind.USAGE_CHARGE).created_at == timezone.now()


def test_charges_count_as_tier_spend_and_the_evaluation_upgrades(owner, event):
    project = make_billed_project(owner, since=timezone.now() - timedelta(days=40))
    account = project.billing.account
    key, _ = make_key(project)
    with time_machine.travel(timezone.now() - timedelta(days=35)):
        ledger.record_payment(account, amount=D("1"), idempotency_key="first-payment")
    rule = TierRule.objects.get(tier=Tier.TIER_2)
    # Just over the Tier 2 spend threshold: USD 25 per event.
    events = int(rule.min_total_spend // 25) + 1
    ingest([event(key, input_tokens=0, output_tokens=10_000_000) for _ in range(events)])
    charge_pending()
    assert ledger.balances(account).total_spend == D(25 * events)

    upgraded = list(tiers.evaluate_all())

    assert [p.pk for p in upgraded] == [project.pk]
    project.refresh_from_db()
    assert project.tier == Tier.TIER_2


def test_pages_show_the_new_balances_after_the_next_run(owner, event, client):
    import json

    from usage.models import FleetToken

    project = make_billed_project(owner, since=timezone.now() - timedelta(days=3))
    account = project.billing.account
    with time_machine.travel(timezone.now() - timedelta(days=2)):
        ledger.grant_credit(account, kind=CreditKind.PREPAYMENT, amount=D("30"))
    key, _ = make_key(project)
    _, token = FleetToken.issue(name="fleet")
    client.force_login(owner)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        body = {"events": [event(key, input_tokens=0, output_tokens=10_000_000, occurred_at=at(timezone.now()))]}
        answer = client.post(
            "/api/v1/usage:report",
            json.dumps(body),
            content_type="application/json",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.json()["accepted"] == 1
        clock.shift(timedelta(seconds=20))
        call_command("charge_usage", verbosity=0)

        billing = client.get("/billing/").content.decode()
        progress = client.get(f"/billing/projects/{project.project_id}/tier/").content.decode()

    assert "<dt>Credit remaining</dt><dd>USD 5.00</dd>" in billing
    assert "<dt>Total spend</dt><dd>USD 25.00</dd>" in billing
    assert "<td>USD 25.00</td>" in progress


def test_linking_to_an_account_suspended_meanwhile_is_refused(owner):
    """Found by the property test: the status was read from the caller's copy, before the lock."""
    project = make_project(owner)
    account = make_account(owner)
    services.set_account_status(account, AccountStatus.SUSPENDED, by=owner, reason="test")  # `account` is now stale

    with pytest.raises(services.BillingError):
        services.link_project(project, account, by=owner)

    project.refresh_from_db()
    assert (project.tier, hasattr(project, "billing")) == (Tier.FREE, False)


def test_the_ledger_names_a_usage_charge_by_its_month(owner, event):
    from django.utils import translation

    key, _ = make_key(make_billed_project(owner, since=timezone.now() - timedelta(days=5)))
    with time_machine.travel("2026-12-01T09:00:00Z", tick=False):
        ingest([event(key, occurred_at="2026-11-30T12:00:00Z")])
        charge_pending()
    charge = LedgerEntry.objects.get(kind=EntryKind.USAGE_CHARGE)

    with translation.override("en"):
        assert charge.label == "November 2026"
    with translation.override("ja"):
        assert charge.label == "2026年11月"


# Many accounts per transaction (chunks of CHUNK_ACCOUNTS; smaller here to make several)


def charges_by_account():
    """{account pk: its usage charges' amounts, oldest first}"""
    charges = {}
    for account_id, amount in LedgerEntry.objects.filter(kind=EntryKind.USAGE_CHARGE).values_list(
        "account_id", "amount"
    ):
        charges.setdefault(account_id, []).append(amount)
    return charges


def three_billed_accounts(since=None):
    projects = [make_billed_project(make_user(f"chunk{n}@example.com"), name=f"P{n}", since=since) for n in range(3)]
    return [project.billing.account for project in projects], [make_key(project)[0] for project in projects]


def test_a_run_in_chunks_charges_each_account_exactly_its_own_usage(db, event):
    (first, second, third), (key_1, key_2, key_3) = three_billed_accounts()
    ingest(
        [
            event(key_1),
            event(key_2),
            event(key_2),
            event(key_2, model="gemini-2.5-pro", input_tokens=1000, output_tokens=100),
            *(event(key_3, input_tokens=0, output_tokens=7) for _ in range(3)),  # 3 × 17.5 micro-dollars
        ]
    )

    run = charge_pending(chunk_size=2)  # [first, second], then [third]

    assert (run.accounts, run.charges, run.lines, run.amount, run.failed) == (3, 3, 7, D("0.005632"), [])
    assert charges_by_account() == {first.pk: [D("0.00111")], second.pk: [D("0.00447")], third.pk: [D("0.000052")]}
    assert usage_lines(third) == [("P2", "gemini-2.5-flash", "output", False, D("21"), 3, D("0.000052"))]
    assert [ledger.balances(account).total_spend for account in (first, second, third)] == [
        D("0.00111"),
        D("0.00447"),
        D("0.000052"),
    ]
    # What is left is the third account's half micro-dollar, waiting for its line's next usage.
    assert list(PendingCharge.objects.values_list("account_id", "amount_nanos", "events", "first_occurred_at")) == [
        (third.pk, 500, 0, None)
    ]


def test_a_chunk_costs_the_same_statements_for_one_account_as_for_three(db, event):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    _, keys = three_billed_accounts()
    # An input line charged whole (DELETE) and an output line with a remainder (UPDATE), each time.
    ingest([event(keys[0], output_tokens=7)])
    with CaptureQueriesContext(connection) as one:
        charge_pending()
    ingest([event(key, output_tokens=7) for key in keys])
    with CaptureQueriesContext(connection) as three:
        run = charge_pending()

    assert run.accounts == 3
    # Accounts; the chunk's savepoint; their locks, pending rows; the ledger's savepoint, locks, credits; the
    # entries, the lines; its release; the audit rows (one per account charge, X10); the pending rows' DELETE and
    # UPDATE; the chunk's release.
    assert [query["sql"].split(None, 1)[0] for query in three.captured_queries] == [
        "SELECT",
        "SAVEPOINT",
        "SELECT",
        "SELECT",
        "SAVEPOINT",
        "SELECT",
        "SELECT",
        "INSERT",
        "INSERT",
        "RELEASE",
        "INSERT",
        "DELETE",
        "UPDATE",
        "RELEASE",
    ]
    assert len(one.captured_queries) == len(three.captured_queries)


def test_credits_are_drawn_in_the_r24_order_per_account_in_one_chunk(db, event):
    now = timezone.now()
    (first, second, _), keys = three_billed_accounts(since=now - timedelta(days=3))
    owner = first.administrators.get().user
    with time_machine.travel(now - timedelta(days=2)):  # the second account's credits are granted first
        goodwill_2 = ledger.grant_credit(
            second, kind=CreditKind.GOODWILL, amount=D("1"), expires_at=now + timedelta(days=5)
        )
        promotional_2 = ledger.grant_credit(
            second, kind=CreditKind.PROMOTIONAL, amount=D("1"), expires_at=now + timedelta(days=20)
        )
        prepayment_2 = ledger.grant_credit(second, kind=CreditKind.PREPAYMENT, amount=D("10"))
    with time_machine.travel(now - timedelta(days=1)):
        prepayment_1 = ledger.grant_credit(first, kind=CreditKind.PREPAYMENT, amount=D("10"))
        promotional_1 = ledger.grant_credit(
            first, kind=CreditKind.PROMOTIONAL, amount=D("1"), expires_at=now + timedelta(days=10)
        )
        welcome_1 = ledger.grant_credit(
            first, kind=CreditKind.WELCOME, amount=D("1"), expires_at=now + timedelta(days=90), welcome_for=owner
        )
    # USD 2.50 each: 1M output tokens of flash.
    ingest([event(key, input_tokens=0, output_tokens=1_000_000) for key in keys[:2]])

    charge_pending()

    applied = LedgerEntry.objects.filter(kind=EntryKind.CREDIT_APPLICATION).order_by("pk")
    assert [(entry.account_id, entry.credit_id, entry.amount) for entry in applied] == [
        (first.pk, welcome_1.pk, D("-1")),
        (first.pk, promotional_1.pk, D("-1")),
        (first.pk, prepayment_1.pk, D("-0.5")),
        (second.pk, goodwill_2.pk, D("-1")),
        (second.pk, promotional_2.pk, D("-1")),
        (second.pk, prepayment_2.pk, D("-0.5")),
    ]
    for account in (first, second):
        balances = ledger.balances(account)
        assert (balances.credit_remaining, balances.amount_due, balances.total_spend) == (D("9.5"), D("0"), D("2.5"))


def test_a_credit_that_runs_out_mid_chunk_leaves_the_rest_owed(db, event):
    with time_machine.travel("2026-11-20T12:00:00Z", tick=False):
        (first, second, third), keys = three_billed_accounts()
        ledger.grant_credit(first, kind=CreditKind.PROMOTIONAL, amount=D("4"))
        third_credit = ledger.grant_credit(third, kind=CreditKind.GOODWILL, amount=D("10"))
    with time_machine.travel("2026-12-01T09:00:00Z", tick=False):  # 01:00 on 1 December in Los Angeles
        ingest(
            [
                # The first account: USD 2.50 in November, then 2.50 in December (the credit pays 1.50 of it).
                event(keys[0], input_tokens=0, output_tokens=1_000_000, occurred_at="2026-11-30T12:00:00Z"),
                event(keys[0], input_tokens=0, output_tokens=1_000_000, occurred_at="2026-12-01T08:30:00Z"),
                event(keys[1], input_tokens=0, output_tokens=1_000_000, occurred_at="2026-12-01T08:30:00Z"),
                event(keys[2], input_tokens=0, output_tokens=1_000_000, occurred_at="2026-12-01T08:30:00Z"),
            ]
        )
        run = charge_pending()

    assert (run.accounts, run.charges) == (3, 4)
    entries = LedgerEntry.objects.filter(kind__in=[EntryKind.USAGE_CHARGE, EntryKind.CREDIT_APPLICATION])
    assert [(e.kind, e.amount, str(e.usage_month)) for e in entries.filter(account=first).order_by("pk")] == [
        (EntryKind.USAGE_CHARGE, D("2.5"), "2026-11-01"),
        (EntryKind.CREDIT_APPLICATION, D("-2.5"), "2026-11-01"),
        (EntryKind.USAGE_CHARGE, D("2.5"), "2026-12-01"),
        (EntryKind.CREDIT_APPLICATION, D("-1.5"), "2026-12-01"),
    ]
    assert [(e.kind, e.amount) for e in entries.filter(account__in=[second, third]).order_by("pk")] == [
        (EntryKind.USAGE_CHARGE, D("2.5")),
        (EntryKind.USAGE_CHARGE, D("2.5")),
        (EntryKind.CREDIT_APPLICATION, D("-2.5")),
    ]
    assert entries.filter(account=third, kind=EntryKind.CREDIT_APPLICATION).get().credit_id == third_credit.pk
    with time_machine.travel("2026-12-01T09:00:00Z", tick=False):
        owed = [
            (b.credit_remaining, b.amount_due, b.total_spend)
            for b in (ledger.balances(account) for account in (first, second, third))
        ]
    assert owed == [(D("0"), D("1"), D("5")), (D("0"), D("2.5"), D("2.5")), (D("7.5"), D("0"), D("2.5"))]


def test_an_account_that_fails_is_left_pending_and_the_rest_of_its_chunk_is_charged(db, event, caplog):
    (first, broken, last), keys = three_billed_accounts()
    ingest([event(key, input_tokens=0) for key in keys])  # one output line each
    # A pending row without its times: its UsageLine is refused by the database (NOT NULL).
    PendingCharge.objects.filter(account=broken).update(first_occurred_at=None)
    pending = list(PendingCharge.objects.filter(account=broken).values_list("pk", "amount_nanos", "events"))

    run = charge_pending()

    assert (run.accounts, run.charges, run.amount, run.failed) == (2, 2, D("0.0015"), [broken.pk])
    assert charges_by_account() == {first.pk: [D("0.00075")], last.pk: [D("0.00075")]}
    assert list(PendingCharge.objects.filter(account=broken).values_list("pk", "amount_nanos", "events")) == pending
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "usage.charging"] == [
        ("WARNING", f"charging accounts {first.pk} to {last.pk} failed; charging them one by one"),
        ("ERROR", f"charging account {broken.pk} failed; its usage stays pending"),
    ]

    PendingCharge.objects.filter(account=broken).update(first_occurred_at=F("last_occurred_at"))  # repaired
    again = charge_pending()

    assert (again.accounts, again.failed) == (1, [])
    assert charges_by_account()[broken.pk] == [D("0.00075")]
