"""Monthly statements (R19, SPEC §9, issue 12): issued on the 1st from the ledger and the month's
closed remainders, rounded by the running-total rule, charged on the 2nd, late usage on the next one."""

from datetime import datetime
from decimal import Decimal as D
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.management import call_command
from django.utils import timezone

from billing import ledger
from billing.models import (
    AttemptStatus,
    CreditKind,
    EntryKind,
    EntryReason,
    LedgerEntry,
    LineKind,
    Statement,
    StatementStatus,
)
from billing.processor import get_processor
from billing.statements import charge_due, estimate, shown_amounts
from tests.factories import make_billed_project, make_key, make_user
from usage.charging import charge_pending
from usage.ingest import ingest
from usage.models import PendingCharge
from usage.statements import issue_due, issue_for_account, reconcile

LA = ZoneInfo("America/Los_Angeles")
OCTOBER = datetime(2026, 10, 1).date()
NOVEMBER = datetime(2026, 11, 1).date()


def pacific(*args):
    return datetime(*args, tzinfo=LA)


@pytest.fixture
def billed(db):
    """(account, project, key): a Tier 1 project billed since 1 October 2026."""
    owner = make_user("statements@example.com")
    project = make_billed_project(owner, name="Checkout", since=pacific(2026, 10, 1, 0, 0))
    key, _ = make_key(project)
    return project.billing.account, project, key


def report(event, key, when, **fields):
    with time_machine.travel(when, tick=False):
        assert ingest([event(key, occurred_at=when.isoformat(), **fields)]).rejected == []
        charge_pending()


def lines_of(statement):
    return [
        (
            line.kind,
            str(line.usage_month or ""),
            line.model_id,
            line.sku,
            line.quantity,
            line.events,
            line.exact_amount,
            line.amount,
        )
        for line in statement.lines.order_by("position")
    ]


def test_the_running_total_rule_makes_shown_lines_add_up():
    exacts = [D("0.004"), D("0.004"), D("0.004"), D("-0.0051")]

    assert shown_amounts(exacts) == [D("0.00"), D("0.01"), D("0.00"), D("0.00")]
    assert sum(shown_amounts(exacts)) == D("0.01")  # = round(0.0069)


def test_a_statement_closes_the_months_remainders_and_its_total_is_the_rounded_cost_of_its_events(billed, event):
    account, _, key = billed
    # flash: 9 input tokens × 0.30/M = 2.7 µ$, 1,999 output × 2.50/M = 4,997.5 µ$; exact 0.0050002
    report(event, key, pacific(2026, 10, 20, 12, 0), input_tokens=9, output_tokens=1999)
    assert ledger.balances(account).total_spend == D("0.004999")  # 2 µ$ + 4,997 µ$; 1.2 µ$ pending
    assert sorted(PendingCharge.objects.values_list("amount_nanos", flat=True)) == [500, 700]

    with time_machine.travel(pacific(2026, 11, 1, 0, 5), tick=False):
        run = issue_due()

    statement = Statement.objects.get()
    assert run.issued == [statement] and run.month == OCTOBER
    assert (statement.month, statement.status) == (OCTOBER, StatementStatus.ISSUED)
    assert lines_of(statement) == [
        ("usage", "2026-10-01", "gemini-2.5-flash", "input", D("9"), 1, D("0.000002700"), D("0.00")),
        ("usage", "2026-10-01", "gemini-2.5-flash", "output", D("1999"), 1, D("0.004997500"), D("0.01")),
    ]
    assert (statement.usage_total, statement.credits_total, statement.amount_due) == (D("0.01"), D("0"), D("0.01"))
    assert not PendingCharge.objects.exists()  # closed: both rests charged, rounded to the micro-dollar
    assert ledger.balances(account).total_spend == D("0.005001")
    # The ledger now owes exactly the statement's amount due.
    assert statement.rounding == D("0.004999")
    assert ledger.balances(account).amount_due == D("0.01")
    rounding = LedgerEntry.objects.get(kind=EntryKind.ADJUSTMENT)
    assert (rounding.reason, rounding.amount, rounding.usage_month) == (
        EntryReason.STATEMENT_ROUNDING,
        D("0.004999"),
        OCTOBER,
    )
    assert reconcile(statement).ok


def test_issuing_twice_writes_one_statement(billed, event):
    account, _, key = billed
    report(event, key, pacific(2026, 10, 20, 12, 0))
    with time_machine.travel(pacific(2026, 11, 1, 0, 5), tick=False):
        first, issued = issue_for_account(account.pk, OCTOBER)
        again, issued_again = issue_for_account(account.pk, OCTOBER)
        run = issue_due()

    assert (issued, issued_again, again, run.issued, run.existing) == (True, False, first, [], 0)
    assert Statement.objects.count() == 1
    assert LedgerEntry.objects.filter(kind=EntryKind.ADJUSTMENT).count() == 1


def test_credits_pay_first_and_appear_by_kind(billed, event):
    account, _, key = billed
    with time_machine.travel(pacific(2026, 10, 1, 0, 1), tick=False):
        ledger.grant_credit(account, kind=CreditKind.PROMOTIONAL, amount=D("0.002"))
    for hour in range(3):  # 3 × 0.00111 = 0.00333
        report(event, key, pacific(2026, 10, 20, hour, 0))

    with time_machine.travel(pacific(2026, 11, 1, 0, 5), tick=False):
        issue_due()

    statement = Statement.objects.get()
    assert [(line.kind, line.credit_kind, line.exact_amount, line.amount) for line in statement.lines.all()] == [
        (LineKind.USAGE, "", D("0.001080000"), D("0.00")),
        (LineKind.USAGE, "", D("0.002250000"), D("0.00")),
        (LineKind.CREDIT, CreditKind.PROMOTIONAL, D("-0.002000000"), D("0.00")),
    ]
    assert (statement.usage_total, statement.amount_due, statement.status) == (
        D("0.00"),
        D("0.00"),
        StatementStatus.NOTHING_DUE,
    )
    assert ledger.balances(account).amount_due == D("0.00")


def big_month(event, key):
    # 2,000,000 output tokens of flash: USD 5.00 a request; 3 of them = USD 15.00
    for day in (3, 10, 17):
        report(event, key, pacific(2026, 10, day, 9, 0), input_tokens=0, output_tokens=2_000_000)


def set_card(account, number):
    card = get_processor().tokenize_card(number=number, exp_month=12, exp_year=2099, cvc="123", brand="visa")
    method = account.primary_payment_method
    method.processor_token = card.token
    method.save(update_fields=["processor_token"])


def test_the_statement_is_charged_on_the_2nd_once(billed, event):
    account, _, key = billed
    set_card(account, "4242424242424242")
    big_month(event, key)
    with time_machine.travel(pacific(2026, 11, 1, 0, 5), tick=False):
        issue_due()
        assert charge_due().paid == []  # not before the 2nd

    with time_machine.travel(pacific(2026, 11, 2, 0, 35), tick=False):
        report_ = charge_due()
        again = charge_due()

    statement = Statement.objects.get()
    assert (statement.status, statement.amount_due, statement.paid_at) == (
        StatementStatus.PAID,
        D("15.00"),
        pacific(2026, 11, 2, 0, 35),
    )
    [payment] = statement.payments.all()
    assert report_.paid == [payment] and again.paid == []
    assert (payment.attempt, payment.amount, payment.status) == (1, D("15.00"), AttemptStatus.SUCCEEDED)
    assert payment.entry.amount == D("-15.00")
    assert ledger.balances(account).amount_due == D("0")


@pytest.mark.parametrize(
    ("number", "code"), [("4000000000009995", "insufficient_funds"), ("4000000000000119", "processing_error")]
)
def test_a_declined_charge_leaves_the_statement_payment_failed_with_the_reason(billed, event, number, code):
    account, _, key = billed
    set_card(account, number)
    big_month(event, key)
    with time_machine.travel(pacific(2026, 11, 1, 0, 5), tick=False):
        issue_due()
    with time_machine.travel(pacific(2026, 11, 2, 1, 0), tick=False):
        result = charge_due()
        again = charge_due()  # retries are dunning's: nothing more now

    statement = Statement.objects.get()
    assert (statement.status, statement.failure_code) == (StatementStatus.PAYMENT_FAILED, code)
    assert [(p.attempt, p.status, p.failure_code) for p in statement.payments.all()] == [
        (1, AttemptStatus.FAILED, code)
    ]
    assert (len(result.failed), again.failed) == (1, [])
    assert ledger.balances(account).amount_due == D("15.00")  # still owed


def test_usage_reported_after_its_months_statement_is_a_late_line_on_the_next_one(billed, event):
    account, _, key = billed
    report(event, key, pacific(2026, 10, 20, 12, 0))
    with time_machine.travel(pacific(2026, 11, 1, 0, 5), tick=False):
        issue_due()
    october = Statement.objects.get(month=OCTOBER)
    # An October event reported on 3 November, after October's statement was issued.
    with time_machine.travel(pacific(2026, 11, 3, 9, 0), tick=False):
        assert (
            ingest([event(key, event_id="late", occurred_at=pacific(2026, 10, 31, 23, 0).isoformat())]).rejected == []
        )
        charge_pending()
        running = estimate(account)
    report(event, key, pacific(2026, 11, 10, 12, 0), input_tokens=0, output_tokens=2_000_000)

    assert [(line.usage_month, line.sku, line.exact_amount) for line in running.late_lines] == [
        (OCTOBER, "input", D("0.00036")),
        (OCTOBER, "output", D("0.00075")),
    ]
    with time_machine.travel(pacific(2026, 12, 1, 0, 5), tick=False):
        issue_due()

    november = Statement.objects.get(month=NOVEMBER)
    assert [(str(line.usage_month), line.sku, line.exact_amount, line.amount) for line in november.lines.all()] == [
        ("2026-11-01", "output", D("5.000000000"), D("5.00")),
        ("2026-10-01", "input", D("0.000360000"), D("0.00")),
        ("2026-10-01", "output", D("0.000750000"), D("0.00")),
    ]
    assert [line.is_late(NOVEMBER) for line in november.lines.all()] == [False, True, True]
    assert october.lines.count() == 2  # unchanged
    assert (november.usage_total, november.amount_due) == (D("5.00"), D("5.00"))
    assert reconcile(october).ok and reconcile(november).ok


def test_reconcile_statement_exits_non_zero_on_a_mismatch(billed, event):
    account, _, key = billed
    big_month(event, key)
    with time_machine.travel(pacific(2026, 11, 1, 0, 5), tick=False):
        issue_due()
    out = StringIO()
    call_command("reconcile_statement", account.account_id, "2026-10", stdout=out)
    assert "OK " in out.getvalue()
    assert "expected usage total USD 15.00, statement says USD 15.00" in out.getvalue()

    Statement.objects.filter(pk=Statement.objects.get().pk).update(usage_total=D("15.01"))
    with pytest.raises(SystemExit) as exit_:
        call_command("reconcile_statement", account.account_id, "2026-10", stdout=StringIO(), stderr=StringIO())
    assert exit_.value.code == 1


def test_the_commands_issue_and_charge(billed, event):
    account, _, key = billed
    big_month(event, key)
    with time_machine.travel(pacific(2026, 11, 2, 0, 5), tick=False):
        out = StringIO()
        call_command("issue_statements", stdout=out)
        call_command("charge_statements", stdout=out)

    assert f"{account.account_id} 2026-10: usage USD 15.00, due USD 15.00 (issued)" in out.getvalue()
    assert "2026-10: issued 1 statement(s); 0 already issued." in out.getvalue()
    assert f"{account.account_id} 2026-10 attempt 1: USD 15.00 succeeded" in out.getvalue()
    assert Statement.objects.get().status == StatementStatus.PAID
    assert timezone.now()  # the clock is back
