"""Property (issue 12): for random usage reported through ingestion and charged by random charge runs
(with sub-micro-dollar remainders left pending), random credits and late reports after the issue,
each issued statement's usage total is the sum of the per-event costs it covers rounded half-up to
the cent, the shown lines add up to the totals, the ledger owes exactly the amount due, and
nothing is left pending or counted twice."""

from datetime import datetime, timedelta
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.db import transaction
from django.db.models import Sum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing import ledger
from billing.models import CreditKind, LineKind, Statement
from billing.money import to_cents
from tests.factories import make_billed_project, make_key, make_user
from usage.charging import charge_pending
from usage.ingest import ingest
from usage.models import PendingCharge, UsageEvent
from usage.statements import issue_due, reconcile

LA = ZoneInfo("America/Los_Angeles")
LAST_DAYS = datetime(2026, 10, 26, tzinfo=LA)  # events in the last 6 days of October
ISSUE = datetime(2026, 11, 1, 0, 5, tzinfo=LA)
SPAN = int((ISSUE - LAST_DAYS).total_seconds()) - 600

usage_event = st.fixed_dictionaries(
    {
        "project": st.integers(0, 1),
        "offset": st.integers(0, SPAN),
        "model": st.sampled_from(["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash-lite"]),
        "kind": st.sampled_from(["generate", "generate", "batch"]),
        "input_tokens": st.integers(0, 300_000),
        "output_tokens": st.integers(0, 5_000),
        "late": st.booleans(),
    }
)


@pytest.fixture
def world(db):
    owner = make_user("statement-property@example.com")
    first = make_billed_project(owner, name="One", since=datetime(2026, 10, 1, tzinfo=LA))
    account = first.billing.account
    second = make_billed_project(owner, name="Two", since=datetime(2026, 10, 1, tzinfo=LA))
    from billing.services import link_project

    with time_machine.travel(datetime(2026, 10, 1, 0, 1, tzinfo=LA)):
        link_project(second, account, by=owner)
    return account, [make_key(first)[0], make_key(second)[0]]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=st.lists(usage_event, min_size=1, max_size=12),
    runs=st.lists(st.integers(0, 11), max_size=4),
    credit=st.one_of(st.none(), st.decimals(D("0.01"), D("2"), places=2)),
)
def test_issued_statements_total_the_rounded_cost_of_their_events(world, events, runs, credit):
    account, keys = world
    with transaction.atomic():
        check(account, keys, events, set(runs), credit)
        transaction.set_rollback(True)


def check(account, keys, events, runs, credit):
    if credit is not None:
        with time_machine.travel(datetime(2026, 10, 2, tzinfo=LA), tick=False):
            ledger.grant_credit(account, kind=CreditKind.PROMOTIONAL, amount=credit)
    reported = []
    for number, spec in enumerate(events):
        occurred = LAST_DAYS + timedelta(seconds=spec["offset"])
        payload = {
            "event_id": f"s-{number}",
            "key_id": str(keys[spec["project"]].pk),
            "model": spec["model"],
            "kind": spec["kind"],
            "source": "api",
            "status_code": 200,
            "input_tokens": spec["input_tokens"],
            "output_tokens": spec["output_tokens"],
            "cached_tokens": 0,
            "occurred_at": occurred.isoformat(),
        }
        reported.append((spec, occurred, payload))
    on_time = sorted((r for r in reported if not r[0]["late"]), key=lambda r: r[1])
    late = [r for r in reported if r[0]["late"]]
    for index, (_, occurred, payload) in enumerate(on_time):
        with time_machine.travel(occurred + timedelta(seconds=30), tick=False):
            assert ingest([payload]).rejected == []
            if index in runs:
                charge_pending()
    with time_machine.travel(ISSUE, tick=False):
        issue_due()
    with time_machine.travel(ISSUE + timedelta(hours=1), tick=False):  # reports may be 7 days late
        assert ingest([payload for _, _, payload in late]).rejected == [] if late else True
        charge_pending()
    with time_machine.travel(datetime(2026, 12, 1, 0, 5, tzinfo=LA), tick=False):
        issue_due()

    def cost(ids):
        return D(UsageEvent.objects.filter(event_id__in=ids, billable=True).aggregate(t=Sum("cost"))["t"] or 0)

    statements = Statement.objects.filter(account=account)
    october, november = statements.get(month="2026-10-01"), statements.get(month="2026-11-01")
    assert october.usage_total == to_cents(cost([p["event_id"] for _, _, p in on_time]))
    assert november.usage_total == to_cents(cost([p["event_id"] for _, _, p in late]))
    assert all(line.usage_month.month == 10 for line in november.lines.filter(kind=LineKind.USAGE))
    for statement in (october, november):
        lines = list(statement.lines.all())
        assert sum(line.amount for line in lines if line.kind == LineKind.USAGE) == statement.usage_total
        assert sum(line.amount for line in lines) == statement.amount_due
        assert statement.amount_due >= 0
        assert reconcile(statement).ok
    assert not PendingCharge.objects.exists()
    # The ledger owes exactly what the statements say (nothing was paid).
    assert ledger.balances(account).amount_due == october.amount_due + november.amount_due
