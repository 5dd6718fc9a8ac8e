"""Admission learns what was used (SPEC §9): reported usage replaces the estimates quota:check reserved.

quota:check counts an estimate of each admitted request in the TPM window (the prompt's tokens as the fleet
estimated them) and in the spend window (that prompt at the model's prices plus an output allowance), and reserves
it under a reservation id (usage.limiter). When usage:report stores a new request event, its actual figures settle
that reservation: TPM counts its input tokens if it counts against quota (generate and batch, failed requests
included; never count_tokens or cache storage), the spend window its cost in micro-USD, rounded up (0 when it is not
billable; cache storage is not admitted, but what it costs is spent and counts too). An event without a reservation
id, or whose reservation is unknown or has lapsed, adds its actual figures (if it occurred in the last 10 minutes:
older usage is outside every window) to the counters of its project's current
tier (`admission.settlement_counters`), the ones the next check reads.

Only the events a batch newly inserted settle, so a replayed report changes nothing; and only once their write has
committed, so a write that rolled back settles nothing. A failure to settle never fails the report: the events are
stored, and the limiter logs it (usage.limiter: Redis errors are warnings, at most one per 10 s).

Cost per batch: one pass over its rows in Python, at most one query (the tiers of the projects whose usage settles,
only when there is any) and one limiter call (through Redis: one pipeline of one script call per project).
"""

import math
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from studio.models import Project, effective_tier
from usage.admission import INPUT_TOKENS, MICRO_USD, project_scope, settlement_counters
from usage.catalog import get_catalog
from usage.limiter import Usage, get_limiter

MICRO = Decimal(1_000_000)
SETTLED_HORIZON = timedelta(minutes=10)


def settle_after_commit(rows: list[tuple], columns: list[str], inserted: list[str], reservations: dict[str, str]):
    """Settle the usage of the `inserted` events of `rows` (tuples in `columns` order) when the current transaction
    commits (at once outside a transaction). `reservations` maps an event id to the reservation id it carries."""
    if not inserted:
        return

    def settle() -> None:  # named: a robust on_commit logs a failing callback by its __qualname__
        settle_reported(rows, columns, inserted, reservations)

    transaction.on_commit(settle, robust=True)


def settle_reported(rows: list[tuple], columns: list[str], inserted: list[str], reservations: dict[str, str]) -> None:
    """Settle, in the limiter, the actual usage of the events of `rows` whose ids are in `inserted`."""
    names = ("event_id", "project_id", "model_id", "counts_against_quota", "input_tokens", "billable", "cost")
    event_at, project_at, model_at, counts_at, tokens_at, billable_at, cost_at, occurred_at = (
        columns.index(name) for name in (*names, "occurred_at")
    )
    new = set(inserted)
    # Unreserved usage that occurred before the longest window it could count in (the spend limit's 10 minutes) adds
    # nothing: a report that comes late (up to 7 days, or the demo's history) must not fill today's windows.
    closed = timezone.now() - SETTLED_HORIZON
    # project pk -> [(reservation id, model, input tokens, micro-USD)]: each settles its own reservation
    reserved: dict[int, list[tuple[str, str, int, int]]] = defaultdict(list)
    # (project pk, model) -> [input tokens, micro-USD]: summed, they only add to the current windows
    unreserved: dict[tuple[int, str], list[int]] = {}
    for row in rows:
        event_id = row[event_at]
        if event_id not in new:
            continue
        tokens = row[tokens_at] if row[counts_at] else 0
        cost = row[cost_at]
        micro_usd = math.ceil(cost * MICRO) if row[billable_at] and cost else 0
        reservation_id = reservations.get(event_id)
        if reservation_id is not None:
            reserved[row[project_at]].append((reservation_id, row[model_at], tokens, micro_usd))
        elif (tokens or micro_usd) and row[occurred_at] >= closed:
            totals = unreserved.setdefault((row[project_at], row[model_at]), [0, 0])
            totals[0] += tokens
            totals[1] += micro_usd
    if not reserved and not unreserved:
        return

    # Every project settling needs its tier: a reservation may turn out to have lapsed, and then the usage counts
    # in the counters of the tier the project is on now, as a new check would read them.
    projects = set(reserved).union(project for project, _ in unreserved)
    tiers = {
        pk: effective_tier(tier, billing_state)
        for pk, tier, billing_state in Project.objects.filter(pk__in=projects).values_list(
            "pk", "tier", "billing_state"
        )
    }
    catalog = get_catalog()
    counters: dict[tuple[int, str], dict] = {}

    def counters_of(project: int, model: str) -> dict:
        found = counters.get((project, model))
        if found is None:
            tier = tiers.get(project)
            found = counters[(project, model)] = {} if tier is None else settlement_counters(tier, model, catalog)
        return found

    usages: dict[str, list[Usage]] = defaultdict(list)
    for (project, model), (tokens, micro_usd) in unreserved.items():
        amounts = {INPUT_TOKENS: tokens, MICRO_USD: micro_usd}
        usages[project_scope(project)].append(Usage(None, amounts, counters_of(project, model)))
    for project, events in reserved.items():
        scope = usages[project_scope(project)]
        for reservation_id, model, tokens, micro_usd in events:
            amounts = {INPUT_TOKENS: tokens, MICRO_USD: micro_usd}
            scope.append(Usage(reservation_id, amounts, counters_of(project, model)))
    get_limiter().settle_many(usages)
