"""Admission learns what was used (SPEC §9): reported usage replaces the estimates quota:check reserved.

quota:check counts an estimate of each admitted request in the TPM window (the prompt's tokens as the fleet
estimated them) and in the spend window (that prompt at the model's prices plus an output allowance), and reserves
it under a reservation id (usage.limiter: the id holds the reservation, signed; nothing is stored per reservation).
When usage:report stores a new request event, its actual figures settle that reservation: TPM counts its input tokens
if it counts against quota (generate and batch, failed requests included; never count_tokens or cache storage), the
spend window its cost in micro-USD, rounded up (0 when it is not billable; cache storage is not admitted, but what it
costs is spent and counts too). The limiter takes the id only for the counters the check counted in: those of the
project's current tier for the event's model (`admission.settlement_counters`, the ones the next check reads). An
event without a reservation id, or whose id is not taken (unknown, forged, lapsed, made for another tier or model),
adds its actual figures to those counters if it occurred in the last 10 minutes: older usage is outside every window.
A capped project's monthly spend counter (usage.spendcap) is the exception: it takes the cost of every new event, late
or not, reserved or not, in the Pacific month the event occurred in.

Only the events a batch newly inserted settle, so a replayed report changes nothing; and only once their write has
committed, so a write that rolled back settles nothing. That is what makes settlement exactly once: an id is read,
not looked up, so nothing else remembers that it was settled. A failure to settle never fails the report: the events
are stored, and the limiter logs it (usage.limiter: Redis errors are warnings, at most one per 10 s).

Cost per batch: one pass over its rows in Python (and a MAC per reservation id, about a microsecond), at most one
query (the tiers of the projects whose usage settles, only when there is any) and one limiter call (through Redis: one
pipeline of one script call per project whose counters change, its changes summed per counter and minute).
"""

from collections import defaultdict
from datetime import date, timedelta

from django.db import transaction
from django.utils import timezone

from studio.models import Project, effective_tier
from usage import rating
from usage.admission import INPUT_TOKENS, MICRO_USD, project_scope, settlement_counters
from usage.catalog import get_catalog
from usage.limiter import Usage, get_limiter
from usage.spendcap import MONTH_MICRO_USD

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
    names = ("event_id", "project_id", "model_id", "counts_against_quota", "input_tokens", "billable", "cost_nanos")
    event_at, project_at, model_at, counts_at, tokens_at, billable_at, cost_at, occurred_at, month_at = (
        columns.index(name) for name in (*names, "occurred_at", "month")
    )
    new = set(inserted)
    # Unreserved usage that occurred before the longest window it could count in (the spend limit's 10 minutes) adds
    # nothing: a report that comes late (up to 7 days, or the demo's history) must not fill today's windows. The same
    # holds for an event whose reservation id the limiter does not take (`Usage.recent`).
    closed = timezone.now() - SETTLED_HORIZON

    def month_of(first_day: date) -> int:
        """The Pacific month (YYYYMM) a monthly spend counter takes an event's cost in: the month it occurred in, as
        ingestion computed it (its first day, the events' partition key)."""
        return first_day.year * 100 + first_day.month

    # project pk -> [(reservation id, model, input tokens, micro-USD, recent, month)]: each settles its reservation
    reserved: dict[int, list[tuple[str, str, int, int, bool, int]]] = defaultdict(list)
    # (project pk, model, month, recent) -> [input tokens, micro-USD]: summed, they only add to the current windows
    # (recent), or only to a monthly spend counter (not recent: cost only)
    unreserved: dict[tuple[int, str, int, bool], list[int]] = {}
    for row in rows:
        event_id = row[event_at]
        if event_id not in new:
            continue
        tokens = row[tokens_at] if row[counts_at] else 0
        micro_usd = rating.micro_usd(row[cost_at]) if row[billable_at] else 0
        reservation_id = reservations.get(event_id)
        recent = row[occurred_at] >= closed
        if reservation_id is not None:
            reserved[row[project_at]].append(
                (reservation_id, row[model_at], tokens, micro_usd, recent, month_of(row[month_at]))
            )
        elif micro_usd or (tokens and recent):
            key = (row[project_at], row[model_at], month_of(row[month_at]), recent)
            totals = unreserved.setdefault(key, [0, 0])
            totals[0] += tokens if recent else 0
            totals[1] += micro_usd
    if not reserved and not unreserved:
        return

    # Every project settling needs its tier: a reservation id is taken only for the counters it was counted in, and
    # otherwise the usage counts in those of the tier the project is on now, as a new check would read them.
    projects = set(reserved).union(key[0] for key in unreserved)
    # Read after the commit, not with the batch's keys before its write: a spend cap set in between (whose counter a
    # check may have seeded from the books without this batch) must take this batch's cost.
    tiers = {
        pk: (effective_tier(tier, billing_state), since)
        for pk, tier, billing_state, since in Project.objects.filter(pk__in=projects).values_list(
            "pk", "tier", "billing_state", "spend_cap_since"
        )
    }
    catalog = get_catalog()
    counters: dict[tuple[int, str], dict] = {}

    def counters_of(project: int, model: str) -> dict:
        found = counters.get((project, model))
        if found is None:
            tier, since = tiers.get(project, (None, None))
            found = counters[(project, model)] = (
                {} if tier is None else settlement_counters(tier, model, catalog, spend_cap_since=since)
            )
        return found

    usages: dict[str, list[Usage]] = defaultdict(list)
    for (project, model, month, recent), (tokens, micro_usd) in unreserved.items():
        counted = counters_of(project, model)
        if not recent and MONTH_MICRO_USD not in counted:
            continue  # late, and no monthly counter to take it
        amounts = {INPUT_TOKENS: tokens, MICRO_USD: micro_usd, MONTH_MICRO_USD: micro_usd}
        usages[project_scope(project)].append(Usage(None, amounts, counted, recent, month))
    for project, events in reserved.items():
        scope = usages[project_scope(project)]
        for reservation_id, model, tokens, micro_usd, recent, month in events:
            amounts = {INPUT_TOKENS: tokens, MICRO_USD: micro_usd, MONTH_MICRO_USD: micro_usd}
            scope.append(Usage(reservation_id, amounts, counters_of(project, model), recent, month))
    get_limiter().settle_many({scope: found for scope, found in usages.items() if found})
