"""Statements under concurrency (PostgreSQL): issuing and charging at once from several runners
writes one statement, one rounding adjustment and one payment."""

from datetime import datetime
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pytest
import time_machine

from billing import ledger
from billing.models import EntryKind, LedgerEntry, Statement, StatementEntry, StatementPayment, StatementStatus
from billing.statements import charge_statement
from tests.concurrency import at_once
from tests.factories import make_billed_project, make_key, make_user
from usage.charging import charge_pending
from usage.ingest import ingest
from usage.statements import issue_due, issue_for_account

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

LA = ZoneInfo("America/Los_Angeles")
OCTOBER = datetime(2026, 10, 1).date()


@pytest.fixture
def account(event):
    project = make_billed_project(make_user("concurrent@example.com"), since=datetime(2026, 10, 1, tzinfo=LA))
    key, _ = make_key(project)
    with time_machine.travel(datetime(2026, 10, 30, 12, tzinfo=LA), tick=False):
        # 7 output tokens each: 17.5 micro-dollars, so remainders are pending at the issue
        ingest(
            [event(key, input_tokens=0, output_tokens=7, occurred_at=f"2026-10-30T1{n}:00:00-07:00") for n in range(3)]
        )
        charge_pending()
        ingest([event(key, input_tokens=1000, output_tokens=2_000_000, occurred_at="2026-10-30T11:30:00-07:00")])
    return project.billing.account


def test_issuing_concurrently_writes_one_statement(account):
    with time_machine.travel(datetime(2026, 11, 1, 0, 5, tzinfo=LA), tick=False):
        results, errors = at_once(lambda i: issue_for_account(account.pk, OCTOBER) if i % 2 else issue_due(), 6)

    assert errors == []
    statement = Statement.objects.get()
    assert (statement.usage_total, statement.amount_due) == (D("5.00"), D("5.00"))  # 5.0003525 exact
    assert LedgerEntry.objects.filter(kind=EntryKind.ADJUSTMENT).count() == 1
    assert (
        StatementEntry.objects.filter(entry__kind=EntryKind.USAGE_CHARGE).count()
        == LedgerEntry.objects.filter(kind=EntryKind.USAGE_CHARGE).count()
    )
    assert ledger.balances(account).amount_due == D("5.00")
    issued_now = sum(r[1] for r in results if isinstance(r, tuple))
    issued_now += sum(len(r.issued) for r in results if not isinstance(r, tuple))
    assert issued_now == 1


def test_charging_concurrently_charges_once(account):
    with time_machine.travel(datetime(2026, 11, 2, 0, 35, tzinfo=LA), tick=False):
        issue_due()
        statement = Statement.objects.get()
        results, errors = at_once(lambda _: charge_statement(statement), 4)

    assert errors == []
    statement.refresh_from_db()
    assert statement.status == StatementStatus.PAID
    assert StatementPayment.objects.count() == 1
    assert LedgerEntry.objects.filter(kind=EntryKind.PAYMENT).count() == 1
    assert ledger.balances(account).amount_due == D("0")
    assert len([r for r in results if r is not None]) >= 1
