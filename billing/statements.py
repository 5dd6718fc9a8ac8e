"""Monthly statements (R19, SPEC §9): compose, issue, estimate, charge.

**The rounding rule** (one, for every statement, its page, CSV and PDF): amounts are summed
exactly (usage to the nano-dollar, the rating unit; ledger entries to the micro-dollar) and only
running totals are rounded, half-up to the cent. Each line shows round(running total after it) −
round(running total before it), so the shown lines always add up to the shown totals; the usage
lines come first, so the usage total is the exact cost of the usage the statement covers rounded
half-up to the cent, and the amount due is the exact balance of everything it covers (usage,
adjustments, credits, payments, a credit balance carried over) rounded half-up to the cent.

What a statement covers: the account's ledger entries that move what it owes (usage charges,
credits applied, adjustments, payments) not yet on a statement, whose usage month is the
statement's or earlier (undated entries: made before the month ended). Usage charged after its
month's statement was issued is therefore on the next statement, as late lines naming its month.
Before a statement is issued, usage's sub-micro-dollar remainders of its months are closed (the
usage app does that and hands them in as `remainders`, their exact nano-dollars); one ledger
adjustment (`EntryReason.STATEMENT_ROUNDING`) then makes the ledger owe exactly the amount due.

Payments follow pretix's pattern: a `StatementPayment` row per attempt is written first (its id is
the processor's idempotency key), the processor is called outside any transaction, and the
outcome is settled once under lock (`settle_payment`), writing the ledger payment.
"""

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.db import transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from billing import ledger
from billing.models import (
    AttemptStatus,
    BillingAccount,
    CreditKind,
    EntryKind,
    LedgerEntry,
    LineKind,
    Sku,
    Statement,
    StatementEntry,
    StatementLine,
    StatementPayment,
    StatementStatus,
    UsageLine,
)
from billing.models.statements import NO_PAYMENT_METHOD
from billing.money import ZERO, round_money, to_cents
from billing.processor import PaymentError, ProcessorTimeout, get_processor
from studio.models import AuditEvent, Project

log = logging.getLogger(__name__)

PACIFIC = ZoneInfo("America/Los_Angeles")  # statement months are Pacific months
NANO = Decimal("0.000000001")
COVERED_KINDS = [EntryKind.USAGE_CHARGE, EntryKind.CREDIT_APPLICATION, EntryKind.ADJUSTMENT, EntryKind.PAYMENT]
CREDIT_ORDER = [CreditKind.WELCOME, CreditKind.PROMOTIONAL, CreditKind.GOODWILL, CreditKind.PREPAYMENT]
SKU_ORDER = {sku: n for n, sku in enumerate(Sku.values)}
LINE_KEY = ["month", "project_id", "model_id", "price_id", "sku", "batch", "long_prompt"]
# An attempt still PROCESSING after this lost its answer (a crash mid-call): ask the processor.
STALE_AFTER = timedelta(minutes=5)


# Months


def month_of(moment: datetime) -> date:
    """The Pacific month (its first day) of a moment."""
    return moment.astimezone(PACIFIC).date().replace(day=1)


def next_month(month: date) -> date:
    return (month.replace(day=28) + timedelta(days=4)).replace(day=1)


def previous_month(month: date) -> date:
    return (month.replace(day=1) - timedelta(days=1)).replace(day=1)


def month_start(month: date) -> datetime:
    return datetime(month.year, month.month, 1, tzinfo=PACIFIC)


def charge_day(month: date) -> datetime:
    """When a month's statement is charged: the 2nd of the next month, Pacific (facts.md)."""
    following = next_month(month)
    return datetime(following.year, following.month, 2, tzinfo=PACIFIC)


def parse_month(text: str) -> date | None:
    """'2026-03' → date(2026, 3, 1); None if it is not a month."""
    try:
        year, month = text.split("-")
        if len(year) != 4 or len(month) != 2:
            return None
        return date(int(year), int(month), 1)
    except ValueError:
        return None


# The rounding rule


def shown_amounts(exacts: list[Decimal]) -> list[Decimal]:
    """The running-total rule: each amount as round(total after it) − round(total before it)."""
    shown, running, before = [], ZERO, ZERO
    for exact in exacts:
        running += exact
        after = to_cents(running)
        shown.append(after - before)
        before = after
    return shown


# Composing a statement from the ledger


@dataclass(frozen=True)
class Remainder:
    """Usage not in the ledger when a statement is issued: a line's sub-micro-dollar rest (and
    any usage too small to charge yet), in exact nano-dollars. Handed in by the usage app."""

    month: date
    project_id: int
    model_id: str
    price_id: int
    sku: str
    batch: bool
    long_prompt: bool
    quantity: Decimal
    events: int
    nanos: int


@dataclass
class Draft:
    """A statement before it is saved: an issued statement's content, or the running month's estimate."""

    account: BillingAccount
    month: date
    lines: list[StatementLine]
    usage_total: Decimal
    credits_total: Decimal
    amount_due: Decimal
    ledger_sum: Decimal  # what the covered entries add to what the account owes
    carried: Decimal
    is_estimate: bool = False
    status: str = ""
    payments: list = field(default_factory=list)

    @property
    def usage_lines(self):
        return [line for line in self.lines if line.kind == LineKind.USAGE and not line.is_late(self.month)]

    @property
    def late_lines(self):
        return [line for line in self.lines if line.is_late(self.month)]

    @property
    def other_lines(self):
        return [line for line in self.lines if line.kind != LineKind.USAGE]


def covered_entries(account: BillingAccount, month: date):
    """Entries a statement of `month` issued now would cover (see the module docstring)."""
    return LedgerEntry.objects.filter(
        Q(usage_month__lte=month) | Q(usage_month__isnull=True, created_at__lt=month_start(next_month(month))),
        account=account,
        kind__in=COVERED_KINDS,
        statement_link__isnull=True,
    )


def _carried(account: BillingAccount, month: date) -> Decimal:
    """A credit balance (negative amount due) of the previous statement, which nothing charged."""
    previous = Statement.objects.filter(account=account, month__lt=month).order_by("-month").first()
    return previous.amount_due if previous is not None and previous.amount_due < 0 else ZERO


def compose(account: BillingAccount, month: date, *, entries, remainders=(), closing_ids=(), carried=ZERO) -> Draft:
    """The statement of `month` for the covered `entries` (a queryset), with usage `remainders`
    replacing the usage lines of the `closing_ids` charges (their exact amounts)."""
    usage: dict[tuple, dict] = {}

    def add(key, quantity, events, exact):
        line = usage.setdefault(key, {"quantity": ZERO, "events": 0, "exact": ZERO})
        line["quantity"] += quantity
        line["events"] += events
        line["exact"] += exact

    rows = (
        UsageLine.objects.filter(entry__in=entries.filter(kind=EntryKind.USAGE_CHARGE))
        .exclude(entry_id__in=list(closing_ids))
        .values(*LINE_KEY)
        .annotate(q=Sum("quantity"), n=Sum("events"), a=Sum("amount"))
        .order_by()
    )
    for row in rows:
        # SQLite sums decimals as floats; the ledger's unit (6 places) brings back the exact value.
        add(tuple(row[k] for k in LINE_KEY), round_money(row["q"]), row["n"], round_money(row["a"]))
    for rest in remainders:
        key = (rest.month, rest.project_id, rest.model_id, rest.price_id, rest.sku, rest.batch, rest.long_prompt)
        add(key, rest.quantity, rest.events, Decimal(rest.nanos) * NANO)
    # Usage charged without lines (before lines were kept): one line per month.
    bare = (
        entries.filter(kind=EntryKind.USAGE_CHARGE)
        .annotate(lines=Count("usage_lines"))
        .filter(lines=0)
        .values_list("usage_month", "created_at", "amount")
    )
    for usage_month, created_at, amount in bare:
        add((usage_month or month_of(created_at), None, "", None, "", False, False), ZERO, 0, amount)

    lines = []
    for key, sums in sorted(usage.items(), key=lambda item: _usage_order(item[0], month)):
        if sums["exact"] == 0 and sums["events"] == 0:
            continue
        values = dict(zip(LINE_KEY, key, strict=True))
        values["usage_month"] = values.pop("month")
        lines.append(
            StatementLine(
                kind=LineKind.USAGE,
                **values,
                quantity=sums["quantity"],
                events=sums["events"],
                exact_amount=sums["exact"],
            )
        )
    usage_count = len(lines)
    projects = Project.objects.in_bulk({line.project_id for line in lines if line.project_id})
    for line in lines:
        line.project = projects.get(line.project_id)
    sums = entries.aggregate(total=Sum("amount"), payments=Sum("amount", filter=Q(kind=EntryKind.PAYMENT)))
    for reason, amount in (
        entries.filter(kind=EntryKind.ADJUSTMENT).values_list("reason").annotate(a=Sum("amount")).order_by("reason")
    ):
        if round_money(amount):
            lines.append(StatementLine(kind=LineKind.ADJUSTMENT, reason=reason, exact_amount=round_money(amount)))
    credits = dict(
        entries.filter(kind=EntryKind.CREDIT_APPLICATION)
        .values_list("credit__kind")
        .annotate(a=Sum("amount"))
        .order_by()
    )
    for kind in CREDIT_ORDER:
        if round_money(credits.get(kind) or 0):
            lines.append(StatementLine(kind=LineKind.CREDIT, credit_kind=kind, exact_amount=round_money(credits[kind])))
    if round_money(sums["payments"] or 0):
        lines.append(StatementLine(kind=LineKind.PAYMENT, exact_amount=round_money(sums["payments"])))
    if carried:
        lines.append(StatementLine(kind=LineKind.BALANCE, exact_amount=carried))

    exacts = [line.exact_amount for line in lines]
    for position, (line, shown) in enumerate(zip(lines, shown_amounts(exacts), strict=True), start=1):
        line.position, line.amount = position, shown
    return Draft(
        account=account,
        month=month,
        lines=lines,
        usage_total=to_cents(sum(exacts[:usage_count], ZERO)),
        credits_total=sum((line.amount for line in lines if line.kind == LineKind.CREDIT), ZERO),
        amount_due=to_cents(sum(exacts, ZERO)),
        ledger_sum=round_money(sums["total"] or 0),
        carried=carried,
    )


def _usage_order(key, month):
    usage_month, project_id, model_id, price_id, sku, batch, long_prompt = key
    late = usage_month is not None and usage_month < month
    return (
        late,
        usage_month or month,
        project_id or 0,
        model_id,
        SKU_ORDER.get(sku, -1),
        batch,
        long_prompt,
        price_id or 0,
    )


def estimate(account: BillingAccount, *, at=None) -> Draft:
    """The running month so far, live from the ledger: what its statement would say if issued now
    (usage still pending for the charge run, at most a minute old, is not in it yet)."""
    month = month_of(at or timezone.now())
    draft = compose(account, month, entries=covered_entries(account, month), carried=_carried(account, month))
    draft.is_estimate = True
    return draft


def statement_draft(statement: Statement) -> Draft:
    """An issued statement as the page, CSV and PDF show it (its saved lines, never recomputed)."""
    lines = list(statement.lines.select_related("project").order_by("position"))
    return Draft(
        account=statement.account,
        month=statement.month,
        lines=lines,
        usage_total=statement.usage_total,
        credits_total=statement.credits_total,
        amount_due=statement.amount_due,
        ledger_sum=ZERO,
        carried=sum((line.exact_amount for line in lines if line.kind == LineKind.BALANCE), ZERO),
        status=statement.status,
        payments=list(statement.payments.select_related("payment_method").order_by("attempt")),
    )


# Issuing


def issue_statement(
    account: BillingAccount, month: date, *, remainders=(), closing_ids=(), at=None
) -> tuple[Statement, bool]:
    """Issue the account's statement of `month` once; returns (statement, issued now?).

    Effects, under the account's lock (the ledger's lock, so no charge interleaves): the
    Statement, its lines, a StatementEntry per covered ledger entry, the rounding adjustment that
    makes the ledger owe exactly the amount due, an audit event. A second call (or a concurrent
    one, which waits for the lock) finds the statement and writes nothing.
    """
    at = at or timezone.now()
    with transaction.atomic():
        locked = BillingAccount.objects.select_for_update().get(pk=account.pk)
        existing = Statement.objects.filter(account=locked, month=month).first()
        if existing is not None:
            return existing, False
        carried = _carried(locked, month)
        entries = covered_entries(locked, month)
        draft = compose(locked, month, entries=entries, remainders=remainders, closing_ids=closing_ids, carried=carried)
        entry_ids = list(entries.values_list("pk", flat=True))
        rounding = draft.amount_due - carried - draft.ledger_sum
        statement = Statement.objects.create(
            account=locked,
            month=month,
            status=StatementStatus.ISSUED if draft.amount_due > 0 else StatementStatus.NOTHING_DUE,
            issued_at=at,
            usage_total=draft.usage_total,
            credits_total=draft.credits_total,
            amount_due=draft.amount_due,
            rounding=rounding,
        )
        for line in draft.lines:
            line.statement = statement
        StatementLine.objects.bulk_create(draft.lines, batch_size=1000)
        if rounding:
            adjustment = ledger.record_statement_rounding(
                locked, amount=rounding, month=month, key=f"statement:{statement.pk}:rounding", at=at
            )
            entry_ids.append(adjustment.pk)
        StatementEntry.objects.bulk_create(
            [StatementEntry(statement=statement, entry_id=pk) for pk in entry_ids], batch_size=5000
        )
        AuditEvent.record(
            actor=None,
            action="statement.issue",
            obj=statement,
            after={
                "month": statement.slug,
                "usage_total": str(statement.usage_total),
                "amount_due": str(statement.amount_due),
                "rounding": str(rounding),
            },
        )
    return statement, True


# Charging (on the 2nd)


def charge_statement(statement: Statement, *, at=None) -> StatementPayment | None:
    """Charge an issued statement's amount due to the account's primary payment method, once.

    Effects: a StatementPayment attempt (written and committed first; its id is the processor's
    idempotency key), one processor charge outside any lock, then `settle_payment`. An attempt
    left open by a crash is sent again with its own key (the processor answers it, never charging
    twice). Returns None when nothing is to be charged (paid, failed, nothing due).
    """
    at = at or timezone.now()
    with transaction.atomic():
        account = (
            BillingAccount.objects.select_for_update()
            .select_related("primary_payment_method")
            .get(pk=statement.account_id)
        )
        locked = Statement.objects.select_for_update().get(pk=statement.pk)
        if locked.status != StatementStatus.ISSUED:
            return None
        if locked.payments.filter(status=AttemptStatus.UNKNOWN).exists():
            return None  # the processor's answer is still awaited (settle_open_payments): it may have charged
        payment = locked.payments.filter(status=AttemptStatus.PROCESSING).first()
        if payment is None:
            method = account.primary_payment_method
            if method is not None and method.removed_at is not None:
                method = None
            payment = StatementPayment.objects.create(
                statement=locked,
                attempt=locked.payments.count() + 1,
                amount=locked.amount_due,
                payment_method=method,
                created_at=at,
            )
            AuditEvent.record(
                actor=None, action="statement.payment.start", obj=payment, after={"amount": str(payment.amount)}
            )
    return send_payment(payment, at=at)


def send_payment(payment: StatementPayment, *, at=None) -> StatementPayment:
    """Charge a committed attempt (outside any transaction: no lock is held across the network) and
    settle it. Sent again with its own key, an attempt is never charged twice."""
    at = at or timezone.now()
    if payment.payment_method is None:
        return settle_payment(payment, AttemptStatus.FAILED, failure_code=NO_PAYMENT_METHOD, at=at)
    try:
        result = get_processor().charge(
            token=payment.payment_method.processor_token, amount=payment.amount, idempotency_key=str(payment.pk)
        )
    except PaymentError as refused:
        return settle_payment(payment, AttemptStatus.FAILED, failure_code=refused.code, at=at)
    except ProcessorTimeout:
        log.warning("statement payment %s: processor timed out; charge_statements will settle it", payment.pk)
        return settle_payment(payment, AttemptStatus.UNKNOWN, at=at)
    return settle_payment(payment, AttemptStatus.SUCCEEDED, reference=result.reference, at=at)


def settle_payment(
    payment: StatementPayment, status: str, *, reference: str = "", failure_code: str = "", at=None
) -> StatementPayment:
    """Move an attempt to `status` once (a final state never changes again) and its statement with it.

    Effects, under the account's lock, then the statement's and the attempt's: on success a ledger
    payment (idempotent by the attempt) covered by the statement, the statement paid; on failure
    the statement payment_failed with the reason's code (retries are further attempts); an audit
    event for each change; then dunning's consequences in the same transaction
    (`billing.dunning.after_settle`: the failure e-mail, suspension, reinstatement).
    """
    from billing import dunning  # dunning builds on this module

    at = at or timezone.now()
    with transaction.atomic():
        account = BillingAccount.objects.select_for_update().get(pk=payment.statement.account_id)
        statement = Statement.objects.select_for_update().get(pk=payment.statement_id)
        locked = StatementPayment.objects.select_for_update().get(pk=payment.pk)
        if locked.is_final:
            return locked
        before = {"payment": locked.status, "statement": statement.status}
        locked.status, locked.failure_code = status, failure_code
        locked.processor_reference = reference or locked.processor_reference
        update = ["status", "failure_code", "processor_reference"]
        if status == AttemptStatus.SUCCEEDED:
            entry = ledger.record_payment(
                account, amount=locked.amount, idempotency_key=f"statement-payment:{locked.pk}", at=at
            )
            StatementEntry.objects.get_or_create(entry=entry, defaults={"statement": statement})
            locked.entry = entry
            update.append("entry")
            statement.status, statement.paid_at, statement.failure_code = StatementStatus.PAID, at, ""
        elif status == AttemptStatus.FAILED:
            statement.status, statement.failure_code = StatementStatus.PAYMENT_FAILED, failure_code
            statement.first_failed_at = statement.first_failed_at or at  # dunning's retries count from here
        if locked.is_final:
            locked.settled_at = at
            update.append("settled_at")
        locked.save(update_fields=update)
        statement.save(update_fields=["status", "paid_at", "failure_code", "first_failed_at"])
        AuditEvent.record(
            actor=locked.created_by,
            action="statement.payment.settle",
            obj=locked,
            before=before,
            after={
                "payment": locked.status,
                "statement": statement.status,
                "failure": failure_code,
                "attempt": locked.attempt,
                "retry": locked.retry,
            },
        )
        dunning.after_settle(account, statement, locked, at=at)
    return locked


def settle_open_payments(*, at=None) -> list[StatementPayment]:
    """Settle attempts whose outcome is unknown (timeouts, stale ones) from the processor's records."""
    at = at or timezone.now()
    processor = get_processor()
    attempts = StatementPayment.objects.filter(
        Q(status=AttemptStatus.UNKNOWN) | Q(status=AttemptStatus.PROCESSING, created_at__lt=at - STALE_AFTER)
    ).select_related("statement")
    settled = []
    for attempt in attempts.order_by("created_at"):
        record = processor.lookup(idempotency_key=str(attempt.pk))
        if record is None:
            settled.append(settle_payment(attempt, AttemptStatus.FAILED, failure_code="processing_error", at=at))
        elif isinstance(record, PaymentError):
            settled.append(settle_payment(attempt, AttemptStatus.FAILED, failure_code=record.code, at=at))
        elif record.status == "succeeded":
            settled.append(settle_payment(attempt, AttemptStatus.SUCCEEDED, reference=record.reference, at=at))
    return settled


def due_for_charge(*, at=None):
    """Issued statements whose charge day (the 2nd, Pacific) has come."""
    at = at or timezone.now()
    latest = month_of(at)
    months = []
    month = previous_month(latest)
    # Statements are charged from their month's following 2nd on: the last month's only once it is the 2nd.
    if at >= charge_day(month):
        months.append(month)
    return Statement.objects.filter(
        Q(month__lt=previous_month(latest)) | Q(month__in=months), status=StatementStatus.ISSUED, amount_due__gt=0
    ).order_by("month", "pk")


@dataclass
class ChargeReport:
    paid: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    unknown: list = field(default_factory=list)
    settled: list = field(default_factory=list)


def charge_due(*, at=None, progress=None) -> ChargeReport:
    """Settle open attempts, then charge every statement due (one attempt each). `progress(payment)`
    is called after each charge."""
    at = at or timezone.now()
    report = ChargeReport(settled=settle_open_payments(at=at))
    for statement in due_for_charge(at=at).select_related("account"):
        payment = charge_statement(statement, at=at)
        if payment is None:
            continue
        bucket = {AttemptStatus.SUCCEEDED: report.paid, AttemptStatus.FAILED: report.failed}.get(
            payment.status, report.unknown
        )
        bucket.append(payment)
        if progress is not None:
            progress(payment)
    return report


def statements_by_account(accounts, *, limit: int = 12) -> dict[int, list[Statement]]:
    """The newest `limit` statements of each account, newest first, in one query."""
    by_account = defaultdict(list)
    for statement in Statement.objects.filter(account__in=accounts).order_by("account_id", "-month"):
        if len(by_account[statement.account_id]) < limit:
            by_account[statement.account_id].append(statement)
    return by_account


def running_month_for_accounts(accounts, *, at=None) -> dict[int, dict]:
    """For the billing page, in one query: per account, the usage and credits not yet on a
    statement (the running month's estimate so far) and the month."""
    at = at or timezone.now()
    month = month_of(at)
    rows = (
        LedgerEntry.objects.filter(account__in=accounts, kind__in=COVERED_KINDS, statement_link__isnull=True)
        .values("account_id")
        .annotate(
            usage=Sum("amount", filter=Q(kind=EntryKind.USAGE_CHARGE)),
            credits=Sum("amount", filter=Q(kind=EntryKind.CREDIT_APPLICATION)),
            total=Sum("amount"),
        )
        .order_by()
    )
    found = {row["account_id"]: row for row in rows}
    result = {}
    for account in accounts:
        row = found.get(account.pk, {})
        result[account.pk] = {
            "month": month,
            "slug": f"{month:%Y-%m}",
            "usage": to_cents(row.get("usage") or 0),
            "credits": to_cents(row.get("credits") or 0),
            "owed": to_cents(row.get("total") or 0),
        }
    return result
