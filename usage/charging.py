"""Charging (SPEC §9, R15, R24): rated usage of paid projects becomes money in the ledger.

Ingestion adds what each new billed event costs to `PendingCharge`, one row per statement line to
be (account × project × model × price version × Pacific month × SKU, batch and long prompts
apart), in the same statement that inserts the event: a replayed event id inserts nothing and so
adds nothing. A charge run (`charge_pending`, the `charge_usage` job) then takes the accounts with
pending usage in chunks of CHUNK_ACCOUNTS, in account order, each chunk in one transaction:

1. the chunk's account rows locked (the ledger's lock, so no other ledger write interleaves), in
   pk order, in one statement;
2. their pending rows with new usage, locked in the unique key's order (ingestion's), in one;
3. per account, one usage charge per Pacific month (normally one) with a UsageLine per row,
   drawing down credits in the R24 order (`billing.ledger.record_usage_charges`: one INSERT of
   all the chunk's entries, one of all its lines);
4. what it charged off the pending rows: one DELETE of the rows with nothing left, one UPDATE of
   the rest.

Exactly once per event: steps 3 and 4 commit together or not at all, so a runner killed at any
point leaves either the chunk's charges and decrements or neither; a second runner at the same
time waits for the chunk's locks and then finds nothing left to charge. Each line is charged in
whole micro-dollars (the ledger's unit) and the remainder, under one micro-dollar, stays pending
for the line's next charge: charges plus what is pending always equal the sum of the events'
costs, to the nano-dollar.

A chunk that fails is rolled back as a whole and its accounts are charged again one by one, each
in its own transaction, so one account's failure costs the others nothing; an account that fails
alone too is logged (ERROR, with the traceback), listed in `ChargeRun.failed`, and left pending
for the next run. A failure that the database connection does not survive ends the run.

A run's cost grows with the accounts and lines that had usage since the last run, not with the
number of events (ingestion already summed them), and its statements with the chunks, not the
accounts.
"""

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from billing import ledger
from billing.models import BillingAccount, LedgerEntry
from studio.models import AuditEvent
from usage.ingest import PENDING_KEY
from usage.models import PendingCharge

log = logging.getLogger(__name__)

NANOS_PER_MICRO = 1000
MICROS_PER_USD = Decimal(1_000_000)
LINE_ORDER = ["month", "project_id", "model_id", "price_id", "sku", "batch", "long_prompt"]  # an account's lines
# Accounts per transaction: statements per run fall with it; how long a chunk holds its pending
# rows (and so may keep an ingestion batch waiting) grows with it (bench/README.md, charge_run.py).
CHUNK_ACCOUNTS = 100
PENDING_FIELDS = [*PENDING_KEY, "id", "quantity", "amount_nanos", "events", "first_occurred_at", "last_occurred_at"]


@dataclass
class ChargeRun:
    """What a run did: accounts charged, usage-charge entries written, lines, the total charged, and
    the accounts whose charge failed (their usage stays pending)."""

    accounts: int = 0
    charges: int = 0
    lines: int = 0
    amount: Decimal = Decimal(0)
    entries: list[LedgerEntry] = field(default_factory=list, repr=False)
    failed: list[int] = field(default_factory=list)

    def add(self, entries: list[LedgerEntry]) -> None:
        self.accounts += len({entry.account_id for entry in entries})
        self.charges += len(entries)
        self.lines += sum(entry.line_count for entry in entries)
        self.amount += sum((entry.amount for entry in entries), Decimal(0))
        self.entries += entries


def chargeable_accounts() -> list[int]:
    """Accounts with at least a micro-dollar of usage not yet charged."""
    rows = PendingCharge.objects.filter(events__gt=0, amount_nanos__gte=NANOS_PER_MICRO).order_by("account_id")
    return list(rows.values_list("account_id", flat=True).distinct())


def charge_pending(*, at=None, chunk_size: int = CHUNK_ACCOUNTS) -> ChargeRun:
    """Charge every account's pending usage, `chunk_size` accounts per transaction (see the module)."""
    at = at or timezone.now()
    run = ChargeRun()
    accounts = chargeable_accounts()
    for start in range(0, len(accounts), chunk_size):
        chunk = accounts[start : start + chunk_size]
        if len(chunk) > 1:
            try:
                run.add(charge_accounts(chunk, at=at))
                continue
            except Exception:
                if not _connection_usable():
                    raise
                log.warning("charging accounts %s to %s failed; charging them one by one", chunk[0], chunk[-1])
        _charge_one_by_one(run, chunk, at=at)
    return run


def _charge_one_by_one(run: ChargeRun, account_ids: list[int], *, at) -> None:
    for account_id in account_ids:
        try:
            run.add(charge_accounts([account_id], at=at))
        except Exception:
            if not _connection_usable():
                raise
            log.exception("charging account %s failed; its usage stays pending", account_id)
            run.failed.append(account_id)


def charge_account(account_id: int, *, at=None) -> list[LedgerEntry]:
    """Charge one account's pending usage; returns the usage-charge entries written (none if
    another runner got there first or less than a micro-dollar is pending)."""
    return charge_accounts([account_id], at=at)


def charge_accounts(account_ids: list[int], *, at=None) -> list[LedgerEntry]:
    """Charge these accounts' pending usage in one transaction (steps 1–4 of the module); returns
    the usage-charge entries written, by account and month, each with `line_count`."""
    at = at or timezone.now()
    with transaction.atomic():
        locked = BillingAccount.objects.select_for_update().filter(pk__in=account_ids).order_by("pk")
        locked_ids = list(locked.values_list("pk", flat=True))
        rows = (
            PendingCharge.objects.select_for_update()
            .filter(account_id__in=locked_ids, events__gt=0, amount_nanos__gte=NANOS_PER_MICRO)
            .order_by(*PENDING_KEY)
            .values(*PENDING_FIELDS)
        )
        charges: dict[tuple, list[ledger.UsageLineIn]] = defaultdict(list)
        emptied, kept = [], []
        for row in rows:
            micros, rest = divmod(row["amount_nanos"], NANOS_PER_MICRO)
            charges[row["account_id"], row["month"]].append(
                ledger.UsageLineIn(
                    project_id=row["project_id"],
                    model_id=row["model_id"],
                    price_id=row["price_id"],
                    sku=row["sku"],
                    batch=row["batch"],
                    long_prompt=row["long_prompt"],
                    quantity=row["quantity"],
                    events=row["events"],
                    amount=Decimal(micros) / MICROS_PER_USD,
                    first_occurred_at=row["first_occurred_at"],
                    last_occurred_at=row["last_occurred_at"],
                )
            )
            (kept if rest else emptied).append(row["id"])
        if not charges:
            return []
        usage = [ledger.UsageChargeIn(account, month, lines) for (account, month), lines in sorted(charges.items())]
        entries = ledger.record_usage_charges(usage, at=at)
        for entry, charge in zip(entries, usage, strict=True):
            entry.line_count = len(charge.lines)
        # X10: one audit row per account charge (never per event), in one statement for the chunk.
        AuditEvent.objects.bulk_create(
            AuditEvent.build(
                actor=None,
                action="usage.charge",
                obj=BillingAccount(pk=entry.account_id),
                after={
                    "entry": entry.pk,
                    "month": str(charge.month),
                    "amount": str(entry.amount),
                    "lines": len(charge.lines),
                },
            )
            for entry, charge in zip(entries, usage, strict=True)
        )
        # Take what was charged off the pending rows, in the same transaction as the charge. The rows
        # are locked since they were read: what is left of each is its amount below a micro-dollar.
        PendingCharge.objects.filter(pk__in=emptied).delete()
        PendingCharge.objects.filter(pk__in=kept).update(
            amount_nanos=F("amount_nanos") % NANOS_PER_MICRO,
            quantity=0,
            events=0,
            first_occurred_at=None,
            last_occurred_at=None,
        )
    return entries


def _connection_usable() -> bool:
    return connection.connection is not None and connection.is_usable()
