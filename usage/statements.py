"""Statements from the usage side (SPEC §9): close a month's usage, issue, reconcile.

Billing composes and issues statements (`billing.statements`) but does not read usage's tables;
this module does the part that needs them, in the statement's transaction:

1. the account's row lock (the ledger's lock: no charge run interleaves);
2. every pending charge of the account, as the charge run would (`usage.charging.charge_account`);
3. its pending rows of the statement's month and earlier, locked in key order (the charger's lock
   order): what is left there is under a micro-dollar per line (or too small to charge yet);
4. those rests charged to the ledger, each rounded half-up to the micro-dollar (`record_usage`,
   so credits pay for them like for any usage), and handed to the statement as exact
   nano-dollars; the rows are deleted;
5. the statement issued (`billing.statements.issue_statement`), whose rounding adjustment makes
   the ledger owe exactly its amount due.

All of it commits together or not at all, so each event's cost is on exactly one statement.
"""

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from billing import ledger
from billing import statements as billing_statements
from billing.models import BillingAccount, LineKind, Statement, StatementLine, UsageLine
from billing.money import ZERO, to_cents
from billing.statements import NANO, Remainder, month_start, next_month, previous_month
from usage import charging, partitions
from usage.models import PendingCharge, UsageEvent

log = logging.getLogger(__name__)


def issue_for_account(account_id: int, month: date, *, at=None) -> tuple[Statement, bool]:
    """Close the account's usage of `month` (and earlier) and issue its statement, once.
    Returns (statement, issued now?)."""
    at = at or timezone.now()
    with transaction.atomic():
        account = BillingAccount.objects.select_for_update().get(pk=account_id)
        existing = Statement.objects.filter(account=account, month=month).first()
        if existing is not None:
            return existing, False
        charging.charge_account(account_id, at=at)
        rows = list(
            PendingCharge.objects.select_for_update()
            .filter(account_id=account_id, month__lte=month)
            .order_by(*charging.LINE_ORDER)
        )
        closing = _charge_rests(account, rows, at=at)
        remainders = [
            Remainder(
                month=row.month,
                project_id=row.project_id,
                model_id=row.model_id,
                price_id=row.price_id,
                sku=row.sku,
                batch=row.batch,
                long_prompt=row.long_prompt,
                quantity=row.quantity,
                events=row.events,
                nanos=row.amount_nanos,
            )
            for row in rows
            if row.amount_nanos or row.events
        ]
        statement, issued = billing_statements.issue_statement(
            account, month, remainders=remainders, closing_ids=closing, at=at
        )
        PendingCharge.objects.filter(pk__in=[row.pk for row in rows]).delete()
    return statement, issued


def _charge_rests(account: BillingAccount, rows: list[PendingCharge], *, at) -> list[int]:
    """Charge what is left on the rows, rounded half-up to the micro-dollar, one usage charge per
    month; returns the charges' ids (the statement shows their lines' exact amounts instead)."""
    by_month = defaultdict(list)
    for row in rows:
        micros = int((Decimal(row.amount_nanos) / charging.NANOS_PER_MICRO).quantize(Decimal(1), ROUND_HALF_UP))
        if micros <= 0:
            continue
        start = month_start(row.month)
        by_month[row.month].append(
            ledger.UsageLineIn(
                project_id=row.project_id,
                model_id=row.model_id,
                price_id=row.price_id,
                sku=row.sku,
                batch=row.batch,
                long_prompt=row.long_prompt,
                quantity=row.quantity,
                events=row.events,
                amount=Decimal(micros) / charging.MICROS_PER_USD,
                first_occurred_at=row.first_occurred_at or start,
                last_occurred_at=row.last_occurred_at or start,
            )
        )
    return [
        ledger.record_usage(account, month=month, lines=lines, at=at).pk for month, lines in sorted(by_month.items())
    ]


@dataclass
class IssueRun:
    month: date
    issued: list[Statement] = field(default_factory=list)
    existing: int = 0


def issue_due(*, at=None, progress=None) -> IssueRun:
    """Issue last month's (Pacific) statement of every account that existed then and has none yet.
    Safe to run twice or concurrently: each account's statement is issued once (`issue_for_account`)."""
    at = at or timezone.now()
    month = previous_month(billing_statements.month_of(at))
    run = IssueRun(month=month)
    accounts = (
        BillingAccount.objects.filter(created_at__lt=month_start(next_month(month)))
        .exclude(statements__month=month)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    for account_id in list(accounts):
        statement, issued = issue_for_account(account_id, month, at=at)
        if issued:
            run.issued.append(statement)
        else:
            run.existing += 1
        if progress is not None:
            progress(statement, issued)
    return run


# Reconciliation


@dataclass
class MonthCheck:
    """One usage month of a statement: the events' cost and where it is (exact USD)."""

    month: date
    events: Decimal | None  # cost of the account's billed events that occurred in the month; None: dropped
    elsewhere: Decimal  # on the account's other statements
    not_yet: Decimal  # charged but on no statement yet, or still pending
    on_statement: Decimal  # this statement's lines of the month

    @property
    def kept(self) -> bool:
        """Whether the month's raw events are still there to recompute from (retention drops them: usage.partitions)."""
        return self.events is not None

    @property
    def covered(self) -> Decimal | None:
        """What of the events' cost this statement must cover: the rest."""
        return None if self.events is None else self.events - self.elsewhere - self.not_yet


@dataclass
class Reconciliation:
    statement: Statement
    months: list[MonthCheck]
    without_events: Decimal  # usage charged without lines (before lines were kept)

    @property
    def complete(self) -> bool:
        """Every month's raw events are there: the total can be recomputed."""
        return all(m.kept for m in self.months)

    @property
    def mismatched(self) -> list[MonthCheck]:
        """Months whose events (where kept) do not add up to this statement's lines."""
        return [m for m in self.months if m.kept and m.covered != m.on_statement]

    @property
    def expected_total(self) -> Decimal | None:
        if not self.complete:
            return None
        return to_cents(sum((m.covered for m in self.months), ZERO) + self.without_events)

    @property
    def ok(self) -> bool:
        """Recomputed and equal; False also when some month's raw events were dropped (see `complete`)."""
        return self.complete and self.expected_total == self.statement.usage_total and not self.mismatched


def reconcile(statement: Statement) -> Reconciliation:
    """Recompute what a statement's usage must be from the events (UsageEvent.cost of the account's
    billed events, by the Pacific month they occurred in) and compare it with the statement.

    A month whose raw events retention dropped (usage.partitions: only once its usage was all on issued
    statements) cannot be recomputed: its check says so (`events` None) instead of finding them missing,
    unless nothing of that month is anywhere (then there is nothing to recompute)."""
    account_id = statement.account_id
    lines = StatementLine.objects.filter(statement__account_id=account_id, kind=LineKind.USAGE)
    own = lines.filter(statement=statement)
    months = sorted(set(own.exclude(project=None).values_list("usage_month", flat=True)) | {statement.month})
    checks = []
    for month in months:
        events = UsageEvent.objects.filter(account_id=account_id, billable=True, month=month).aggregate(
            total=Sum("cost")
        )["total"]
        of_month = lines.filter(usage_month=month).exclude(project=None)
        elsewhere = of_month.exclude(statement=statement).aggregate(total=Sum("exact_amount"))["total"]
        on_statement = of_month.filter(statement=statement).aggregate(total=Sum("exact_amount"))["total"]
        uncharged = PendingCharge.objects.filter(account_id=account_id, month=month).aggregate(
            total=Sum("amount_nanos")
        )["total"]
        unstated = UsageLine.objects.filter(
            account_id=account_id, month=month, entry__statement_link__isnull=True
        ).aggregate(total=Sum("amount"))["total"]
        check = MonthCheck(
            month=month,
            events=_exact(events),
            elsewhere=_exact(elsewhere),
            not_yet=_exact(unstated) + Decimal(uncharged or 0) * NANO,
            on_statement=_exact(on_statement),
        )
        if (check.elsewhere or check.not_yet or check.on_statement) and not partitions.raw_events_kept(month):
            check.events = None
        checks.append(check)
    without = own.filter(project=None).aggregate(total=Sum("exact_amount"))["total"]
    return Reconciliation(statement=statement, months=checks, without_events=_exact(without))


def _exact(value) -> Decimal:
    # SQLite sums decimals as floats: the rating unit (9 places) brings back the exact value.
    return Decimal(value or 0).quantize(NANO, rounding=ROUND_HALF_UP)
