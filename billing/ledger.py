"""Writing to and reading from the ledger.

Every function that writes locks the billing account row first, so that concurrent writers to
one account are serialised and balances read inside the lock are exact.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import F, Q, Sum, Value, Window
from django.db.models.functions import Coalesce, RowNumber
from django.utils import timezone

from billing.models import BillingAccount, Credit, CreditKind, EntryKind, EntryReason, LedgerEntry, UsageLine
from billing.models.credits import CreditExpiry
from billing.models.ledger import CREDIT_KINDS, DUE_KINDS
from billing.money import ZERO, round_money
from studio.models import AuditEvent

# R24: credits pay for usage in this order. Welcome first while valid, then promotional and
# goodwill together by expiry (soonest first, never-expiring last), then the prepayment.
DRAW_DOWN_RANK = {CreditKind.WELCOME: 0, CreditKind.PROMOTIONAL: 1, CreditKind.GOODWILL: 1, CreditKind.PREPAYMENT: 2}


def _lock(account: BillingAccount) -> BillingAccount:
    return BillingAccount.objects.select_for_update().get(pk=account.pk)


def credits_with_remaining(account: BillingAccount) -> list[Credit]:
    """The account's credits, oldest first, each with `remaining` (the sum of its entries)."""
    return credits_with_remaining_for_accounts([account])


def credits_with_remaining_for_accounts(accounts) -> list[Credit]:
    credits = list(
        Credit.objects.filter(account__in=accounts)
        .annotate(remaining=Coalesce(Sum("entries__amount"), Value(ZERO)))
        .order_by("granted_at", "pk")
    )
    for credit in credits:
        # SQLite sums decimals as floats; PostgreSQL is exact. Both agree to the micro-dollar.
        credit.remaining = round_money(credit.remaining)
    return credits


def recent_entries_for_accounts(accounts, *, limit: int):
    """The newest `limit` entries of each account, newest first, in one query."""
    ranked = LedgerEntry.objects.filter(account__in=accounts).annotate(
        rank=Window(RowNumber(), partition_by=[F("account_id")], order_by=[F("created_at").desc(), F("pk").desc()])
    )
    return ranked.filter(rank__lte=limit).select_related("credit").order_by("account_id", "-created_at", "-pk")


def grant_credit(
    account: BillingAccount,
    *,
    kind: str,
    amount: Decimal,
    expires_at=None,
    source: str = "",
    welcome_for=None,
    by=None,
    at=None,
) -> Credit:
    """Add a credit and its grant entry, granted `at` (default: now; the demo back-dates its history).
    A second welcome credit for one person raises IntegrityError."""
    amount = round_money(amount)
    at = at or timezone.now()
    with transaction.atomic():
        _lock(account)
        credit = Credit.objects.create(
            account=account,
            kind=kind,
            original_amount=amount,
            granted_at=at,
            expires_at=expires_at,
            source=source,
            welcome_for=welcome_for,
        )
        LedgerEntry.objects.create(
            account=account,
            kind=EntryKind.CREDIT_GRANT,
            amount=amount,
            credit=credit,
            created_by=by,
            created_at=at,
        )
    return credit


def _draw_down_key(credit: Credit):
    never_expires = credit.expires_at is None
    return (
        DRAW_DOWN_RANK[credit.kind],
        never_expires,
        credit.expires_at or credit.granted_at,
        credit.granted_at,
        credit.pk,
    )


def record_usage_charge(
    account: BillingAccount,
    *,
    amount: Decimal,
    idempotency_key: str,
    description: str = "",
    at=None,
) -> list[LedgerEntry]:
    """Charge usage to the account, paid from its valid credits first (R24).

    Effects: one usage_charge entry (+amount) and one credit_application entry (-x) per credit
    used; what no credit covers stays owed for the monthly statement. Idempotent by
    `idempotency_key`: a repeat returns the entries already written and writes nothing.
    """
    at = at or timezone.now()
    amount = round_money(amount)
    if amount <= 0:
        raise ValueError("a usage charge is positive")
    try:
        with transaction.atomic():
            _lock(account)
            charge = LedgerEntry.objects.create(
                account=account,
                kind=EntryKind.USAGE_CHARGE,
                amount=amount,
                description=description,
                idempotency_key=idempotency_key,
                created_at=at,
            )
            entries = [charge]
            left = amount
            usable = [c for c in credits_with_remaining(account) if c.remaining > 0 and c.is_valid_at(at)]
            for credit in sorted(usable, key=_draw_down_key):
                if left == 0:
                    break
                used = min(left, credit.remaining)
                entries.append(
                    LedgerEntry.objects.create(
                        account=account,
                        kind=EntryKind.CREDIT_APPLICATION,
                        amount=-used,
                        credit=credit,
                        created_at=at,
                    )
                )
                left -= used
            return entries
    except IntegrityError:
        existing = LedgerEntry.objects.filter(idempotency_key=idempotency_key).first()
        if existing is None:
            raise
        return [existing]


@dataclass(frozen=True)
class UsageLineIn:
    """A line to charge (see UsageLine): what usage.charging hands to `record_usage`."""

    project_id: int
    model_id: str
    price_id: int
    sku: str
    batch: bool
    long_prompt: bool
    quantity: Decimal
    events: int
    amount: Decimal  # USD, whole micro-dollars
    first_occurred_at: datetime
    last_occurred_at: datetime


@dataclass(frozen=True)
class UsageChargeIn:
    """One usage charge to write: an account's lines of one Pacific month."""

    account_id: int
    month: date
    lines: list[UsageLineIn]


def record_usage(account: BillingAccount, *, month: date, lines: list[UsageLineIn], at=None) -> LedgerEntry:
    """Charge usage of one Pacific month to the account, line by line, paid from credits (R24).

    Effects: those of `record_usage_charges` for this one charge; returns its usage_charge entry.
    """
    return record_usage_charges([UsageChargeIn(account.pk, month, lines)], at=at)[0]


def record_usage_charges(charges: list[UsageChargeIn], *, at=None) -> list[LedgerEntry]:
    """Charge usage to several accounts at once (a charge run's chunk), in a fixed number of statements.

    Effects, under the accounts' locks (taken in pk order): per charge, in the order given, one
    usage_charge entry (the lines' total, `usage_month` = the charge's month) with its UsageLine
    rows, then one credit_application entry per credit used. A credit pays for a line only if it
    was valid when the line's usage occurred (granted by its first event) and is still valid at
    `at` (SPEC §9); credits are drawn in the R24 order, lines oldest first, an account's charges
    one after the other (a later month sees what an earlier one used). What no credit covers is
    owed for the monthly statement. Returns the usage_charge entries, in the order of `charges`.
    """
    at = at or timezone.now()
    totals = [round_money(sum((line.amount for line in charge.lines), ZERO)) for charge in charges]
    if any(total <= 0 for total in totals):
        raise ValueError("a usage charge is positive")
    account_ids = sorted({charge.account_id for charge in charges})
    with transaction.atomic():
        _lock_accounts(account_ids)
        usable: dict[int, list[Credit]] = defaultdict(list)
        for credit in credits_with_remaining_for_accounts(account_ids):
            if credit.remaining > 0 and credit.is_valid_at(at):
                usable[credit.account_id].append(credit)
        for credits in usable.values():
            credits.sort(key=_draw_down_key)
        entries, usage_charges = [], []
        for charge, total in zip(charges, totals, strict=True):
            entry = LedgerEntry(
                account_id=charge.account_id,
                kind=EntryKind.USAGE_CHARGE,
                amount=total,
                reason=EntryReason.USAGE,
                usage_month=charge.month,
                created_at=at,
            )
            usage_charges.append(entry)
            entries.append(entry)
            entries += _draw_down(usable[charge.account_id], charge, at=at)
        # One INSERT for all the entries (their ids come back), one for all the lines.
        LedgerEntry.objects.bulk_create(entries)
        UsageLine.objects.bulk_create(
            [
                UsageLine(entry=entry, account_id=charge.account_id, month=charge.month, **vars(line))
                for entry, charge in zip(usage_charges, charges, strict=True)
                for line in charge.lines
            ]
        )
    return usage_charges


def _lock_accounts(account_ids: list[int]) -> list[int]:
    """Lock several accounts in pk order (every writer of many takes them in this order: no deadlock)."""
    locked = BillingAccount.objects.select_for_update().filter(pk__in=account_ids).order_by("pk")
    return list(locked.values_list("pk", flat=True))


def _draw_down(credits: list[Credit], charge: UsageChargeIn, *, at) -> list[LedgerEntry]:
    """The credit applications paying for `charge`'s lines from `credits` (usable at `at`, in the R24
    order), oldest line first; takes what they use off each credit's `remaining`."""
    used: dict[int, Decimal] = {}
    for line in sorted(charge.lines, key=lambda line: line.first_occurred_at):
        owed = line.amount
        for credit in credits:
            if owed == 0:
                break
            left = credit.remaining - used.get(credit.pk, ZERO)
            if left <= 0 or not credit.is_valid_at(line.first_occurred_at):
                continue
            taken = min(owed, left)
            used[credit.pk] = used.get(credit.pk, ZERO) + taken
            owed -= taken
    applications = []
    for credit in credits:
        if used.get(credit.pk):
            credit.remaining -= used[credit.pk]
            applications.append(
                LedgerEntry(
                    account_id=charge.account_id,
                    kind=EntryKind.CREDIT_APPLICATION,
                    amount=-used[credit.pk],
                    credit=credit,
                    usage_month=charge.month,
                    created_at=at,
                )
            )
    return applications


def record_payment(
    account: BillingAccount,
    *,
    amount: Decimal,
    idempotency_key: str,
    description: str = "",
    at=None,
):
    """Money received for what the account owed (a statement paid by the primary payment method).

    Idempotent by `idempotency_key`; written under the account's lock like every ledger write, so
    it never interleaves with a usage charge's draw-down.
    """
    with transaction.atomic():
        _lock(account)
        existing = LedgerEntry.objects.filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing
        return LedgerEntry.objects.create(
            account=account,
            kind=EntryKind.PAYMENT,
            amount=-round_money(amount),
            description=description,
            idempotency_key=idempotency_key,
            created_at=at or timezone.now(),
        )


def record_prepayment_refund(account: BillingAccount, *, amount: Decimal, key: str, by) -> list[LedgerEntry]:
    """Money refunded from the prepayment credit (the processor has paid it back).

    Effects, under the account's lock: REFUND entries on the prepayment credits, oldest first;
    should usage have used the credit meanwhile, the part no longer covered is added to what the
    account owes (an ADJUSTMENT), so the books still balance. Each entry's key starts with `key`.
    """
    with transaction.atomic():
        _lock(account)
        entries, left = [], round_money(amount)
        for credit in credits_with_remaining(account):
            if credit.kind != CreditKind.PREPAYMENT or credit.remaining <= 0 or left <= 0:
                continue
            taken = min(left, credit.remaining)
            entries.append(
                LedgerEntry.objects.create(
                    account=account,
                    kind=EntryKind.REFUND,
                    amount=-taken,
                    credit=credit,
                    reason=EntryReason.PREPAYMENT_REFUND,
                    idempotency_key=f"{key}:{credit.pk}",
                    created_by=by,
                )
            )
            left -= taken
        if left > 0:
            entries.append(
                LedgerEntry.objects.create(
                    account=account,
                    kind=EntryKind.ADJUSTMENT,
                    amount=left,
                    reason=EntryReason.REFUND_OF_USED_CREDIT,
                    idempotency_key=f"{key}:owed",
                    created_by=by,
                )
            )
        return entries


def write_off_expired_credit(credit: Credit, *, now=None) -> tuple[CreditExpiry, bool]:
    """Write off what an expired credit had left (X2), once per credit, under the account's lock.

    Effects: one credit_expiry entry (-what was left) dated at the credit's expiry, so the
    account's history shows it where it happened, and the credit's CreditExpiry row (without an
    entry when nothing was left). No balance moves: an expired credit already counts for nothing
    in `balances`, and a write-off is not a charge (nothing becomes owed). Returns the row and
    whether this call wrote it: a repeat, or a second runner that waited for the lock, finds the
    row and writes nothing; its unique key (and the entry's idempotency key) refuse a second
    write-off by any other path.
    """
    now = now or timezone.now()
    if credit.expires_at is None or credit.expires_at > now:
        raise ValueError("only an expired credit is written off")
    with transaction.atomic():
        _lock(credit.account)
        done = CreditExpiry.objects.filter(credit=credit).select_related("entry").first()
        if done is not None:
            return done, False
        # Read under the lock: no draw-down can come between this sum and the write-off.
        left = round_money(credit.entries.aggregate(total=Coalesce(Sum("amount"), Value(ZERO)))["total"])
        entry = None
        if left > 0:
            entry = LedgerEntry.objects.create(
                account_id=credit.account_id,
                kind=EntryKind.CREDIT_EXPIRY,
                amount=-left,
                credit=credit,
                idempotency_key=f"credit-expiry:{credit.pk}",
                created_at=credit.expires_at,
            )
        expiry = CreditExpiry.objects.create(
            credit=credit, entry=entry, amount=left if entry else ZERO, processed_at=now
        )
        AuditEvent.record(
            actor=None,
            action="credit.expire",
            obj=credit,
            before={"remaining": str(left)},
            after={"remaining": "0", "written_off": str(expiry.amount), "entry": entry.pk if entry else None},
        )
    return expiry, True


@dataclass(frozen=True)
class Balances:
    credit_remaining: Decimal  # all valid credits together
    amount_due: Decimal  # owed, to be charged on the monthly statement
    total_spend: Decimal  # all usage charged to the account, whoever paid it


def balances(account: BillingAccount, *, at=None) -> Balances:
    return balances_for_accounts([account], at=at)[account.pk]


def balances_for_accounts(accounts, *, at=None) -> dict[int, Balances]:
    """Balances of several accounts in one query, by account pk."""
    at = at or timezone.now()
    valid = Q(credit__expires_at__isnull=True) | Q(credit__expires_at__gt=at)
    rows = (
        LedgerEntry.objects.filter(account__in=accounts)
        .values("account_id")
        .annotate(
            credit_remaining=Coalesce(Sum("amount", filter=Q(kind__in=CREDIT_KINDS) & valid), ZERO),
            amount_due=Coalesce(Sum("amount", filter=Q(kind__in=DUE_KINDS)), ZERO),
            total_spend=Coalesce(Sum("amount", filter=Q(kind=EntryKind.USAGE_CHARGE)), ZERO),
        )
        .order_by()
    )
    found = {row.pop("account_id"): Balances(**{k: round_money(v) for k, v in row.items()}) for row in rows}
    return {account.pk: found.get(account.pk, Balances(ZERO, ZERO, ZERO)) for account in accounts}


def record_statement_rounding(account: BillingAccount, *, amount: Decimal, month: date, key: str, at=None):
    """What makes the ledger owe exactly a statement's rounded amount due (billing.statements): the
    month's closed usage remainders and the rounding to the cent, as one adjustment (either sign).
    Idempotent by `key`; under the account's lock like every ledger write."""
    with transaction.atomic():
        _lock(account)
        existing = LedgerEntry.objects.filter(idempotency_key=key).first()
        if existing is not None:
            return existing
        return LedgerEntry.objects.create(
            account=account,
            kind=EntryKind.ADJUSTMENT,
            amount=round_money(amount),
            reason=EntryReason.STATEMENT_ROUNDING,
            usage_month=month,
            idempotency_key=key,
            created_at=at or timezone.now(),
        )
