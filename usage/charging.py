"""Charging (SPEC §9, R15, R24): rated usage of paid projects becomes money in the ledger.

Ingestion adds what each new billed event costs to `PendingCharge`, one row per statement line to
be (account × project × model × price version × Pacific month × SKU, batch and long prompts
apart), in the same statement that inserts the event: a replayed event id inserts nothing and so
adds nothing. A charge run (`charge_pending`, the `charge_usage` job) then takes, per billing
account in one transaction:

1. the account's row lock (the ledger's lock, so no other ledger write interleaves);
2. its pending rows with new usage, locked;
3. one usage charge per Pacific month (normally one) with a UsageLine per row, drawing down
   credits in the R24 order (`billing.ledger.record_usage`);
4. what it charged off the pending rows.

Exactly once per event: steps 3 and 4 commit together or not at all, so a runner killed at any
point leaves either the charge and the decrement or neither; a second runner at the same time
waits for the account's lock and then finds nothing left to charge. Each line is charged in whole
micro-dollars (the ledger's unit) and the remainder, under one micro-dollar, stays pending for the
line's next charge: charges plus what is pending always equal the sum of the events' costs, to
the nano-dollar.

A run's cost grows with the accounts and lines that had usage since the last run, not with the
number of events (ingestion already summed them).
"""

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from billing import ledger
from billing.models import BillingAccount, LedgerEntry
from usage.models import PendingCharge

log = logging.getLogger(__name__)

NANOS_PER_MICRO = 1000
MICROS_PER_USD = Decimal(1_000_000)
LINE_ORDER = ["month", "project_id", "model_id", "price_id", "sku", "batch", "long_prompt"]


@dataclass
class ChargeRun:
    """What a run did: accounts charged, usage-charge entries written, lines, and the total charged."""

    accounts: int = 0
    charges: int = 0
    lines: int = 0
    amount: Decimal = Decimal(0)
    entries: list[LedgerEntry] = field(default_factory=list, repr=False)


def chargeable_accounts() -> list[int]:
    """Accounts with at least a micro-dollar of usage not yet charged."""
    rows = PendingCharge.objects.filter(events__gt=0, amount_nanos__gte=NANOS_PER_MICRO)
    return sorted(set(rows.values_list("account_id", flat=True)))


def charge_pending(*, at=None) -> ChargeRun:
    """Charge every account's pending usage (one transaction per account)."""
    at = at or timezone.now()
    run = ChargeRun()
    for account_id in chargeable_accounts():
        charged = charge_account(account_id, at=at)
        if charged:
            run.accounts += 1
            run.charges += len(charged)
            run.lines += sum(entry.line_count for entry in charged)
            run.amount += sum((entry.amount for entry in charged), Decimal(0))
            run.entries += charged
    return run


def charge_account(account_id: int, *, at=None) -> list[LedgerEntry]:
    """Charge one account's pending usage; returns the usage-charge entries written (none if
    another runner got there first or less than a micro-dollar is pending)."""
    at = at or timezone.now()
    with transaction.atomic():
        account = BillingAccount.objects.select_for_update().get(pk=account_id)
        rows = list(
            PendingCharge.objects.select_for_update()
            .filter(account_id=account_id, events__gt=0, amount_nanos__gte=NANOS_PER_MICRO)
            .order_by(*LINE_ORDER)
        )
        by_month: dict = defaultdict(list)
        for row in rows:
            micros = row.amount_nanos // NANOS_PER_MICRO
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
                    amount=Decimal(micros) / MICROS_PER_USD,
                    first_occurred_at=row.first_occurred_at,
                    last_occurred_at=row.last_occurred_at,
                )
            )
            row.amount_nanos -= micros * NANOS_PER_MICRO
            row.quantity, row.events, row.first_occurred_at, row.last_occurred_at = 0, 0, None, None
        entries = []
        for month, lines in sorted(by_month.items()):
            entry = ledger.record_usage(account, month=month, lines=lines, at=at)
            entry.line_count = len(lines)
            entries.append(entry)
        # Take what was charged off the pending rows, in the same transaction as the charge.
        PendingCharge.objects.filter(pk__in=[row.pk for row in rows if not row.amount_nanos]).delete()
        PendingCharge.objects.bulk_update(
            [row for row in rows if row.amount_nanos],
            ["amount_nanos", "quantity", "events", "first_occurred_at", "last_occurred_at"],
        )
    return entries
