"""Raw usage events in monthly partitions (PostgreSQL; issue 14): create them ahead, list them, drop old ones.

`usage_usageevent` is partitioned by RANGE on `month`, the first day of the Pacific month of `occurred_at`, so a
partition is exactly one statement month (`usage_usageevent_p202612` holds December 2026, Pacific). Its unique key
is (event_key, month), the key a digest of the event id (usage.models.event_key): a replay is refused by the
database anywhere in its month. A replay whose occurred_at moved across a month start is caught by a second table,
`usage_usageeventguard` (boundary, event_key), partitioned by boundary: ingestion claims there the key of every
event within REPLAY_WINDOW of a month start (usage.ingest, the boundary from `Zones`, which agrees with
`guard_boundary`), so two reports of one event that could both be accepted
at the same moment meet in one unique index, concurrent or not; a claim whose event turns out to be stored in its
month already is given back in the same transaction, so every claim stands for a stored event. The rule, exactly
(docs/ARCHITECTURE.md, "How it scales"): a report is a duplicate iff an event with its id is stored with the same
month, or both lie within REPLAY_WINDOW of the same month start.

Partitions are made ahead by the `ensure_usage_partitions` job (the current month, the one before while late
events for it are still accepted, and USAGE_PARTITIONS_AHEAD more) and, should one still be missing, by ingestion
itself on PostgreSQL's "no partition of relation found for row" (`usage.ingest._store`). A partition is a plain
table attached with ATTACH PARTITION, which takes only a SHARE UPDATE EXCLUSIVE lock on the parent: inserts and
long reads go on meanwhile (CREATE TABLE … PARTITION OF would queue every insert behind the longest running read).
There is no DEFAULT partition: rows parked there would make the month's own partition impossible to attach later
without a scan under an exclusive lock, and would make DETACH … CONCURRENTLY impossible.

`drop_usage_partitions` drops a month's raw events once the month is USAGE_RAW_RETENTION_MONTHS behind and its
usage is final (`retention_plan`), with DETACH PARTITION … CONCURRENTLY (no lock that stops ingestion) and then
DROP TABLE; rollups are never touched. Guard partitions go as soon as no acceptable event can fall in their zone.
SQLite keeps one plain table: nothing here does anything there (its ingestion applies the same rule by looking
the ids up among the stored events, one writer at a time).
"""

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from billing.models import UsageLine
from billing.statements import month_of, month_start, next_month, previous_month
from studio.models import ActorKind, AuditEvent
from usage.models import PendingCharge, UsageEvent

log = logging.getLogger(__name__)

RAW = "usage_usageevent"
GUARD = "usage_usageeventguard"
# usage.ingest.OLDEST + NEWEST (ingest asserts it): two reports of one event accepted at the same moment have
# occurred_at values at most this far apart, so if they lie in different months both are within it of the month
# start between them (months are longer than twice this).
REPLAY_WINDOW = timedelta(days=7, minutes=5)
OLDEST = timedelta(days=7)  # usage.ingest.OLDEST: the oldest event ingestion accepts
# A batch is validated against the clock when it arrives and stored a moment later: a day of margin before a
# guard partition that its events could still need is dropped.
GUARD_MARGIN = timedelta(days=1)
LOCK = "usage_partitions"  # advisory lock: one process at a time creates partitions
BOUNDS = re.compile(r"FOR VALUES FROM \('(\d{4}-\d{2}-\d{2})'\) TO \('(\d{4}-\d{2}-\d{2})'\)")


def on_postgres() -> bool:
    return connection.vendor == "postgresql"


def partition_name(table: str, month: date) -> str:
    return f"{table}_p{month:%Y%m}"


def guard_boundary(moment: datetime) -> date | None:
    """The month start (as the month's first day) that `moment` lies within REPLAY_WINDOW of, if any. Absolute time:
    the window is counted in UTC, so a daylight-saving change inside it moves nothing."""
    month = month_of(moment)
    if moment < month_start(month).astimezone(UTC) + REPLAY_WINDOW:
        return month
    following = next_month(month)
    if moment >= month_start(following).astimezone(UTC) - REPLAY_WINDOW:
        return following
    return None


class Zones:
    """month_of and guard_boundary for the events of a batch, computed once per UTC hour (a Pacific month starts on
    a whole UTC hour; the window's edges are compared exactly)."""

    def __init__(self):
        self._hours: dict[int, tuple] = {}

    def of(self, moment: datetime) -> tuple[date, date | None]:
        hour = int(moment.timestamp()) // 3600
        known = self._hours.get(hour)
        if known is None:
            month = month_of(moment)
            following = next_month(month)
            known = self._hours[hour] = (
                month,
                month_start(month).astimezone(UTC) + REPLAY_WINDOW,
                following,
                month_start(following).astimezone(UTC) - REPLAY_WINDOW,
            )
        month, after_start, following, before_next = known
        if moment < after_start:
            return month, month
        if moment >= before_next:
            return month, following
        return month, None


@dataclass(frozen=True)
class Partition:
    table: str  # the partitioned table (RAW or GUARD)
    name: str
    month: date  # RAW: the events' Pacific month; GUARD: the month whose start the ids lie near
    attached: bool  # False: a table left detached by an interrupted drop
    detach_pending: bool  # an interrupted DETACH … CONCURRENTLY: finish it (FINALIZE) before anything else
    rows: int  # PostgreSQL's estimate (reltuples; 0 before the first ANALYZE)
    bytes: int  # with its indexes

    @property
    def label(self) -> str:
        return f"{self.month:%Y-%m}"


def partitions(table: str = RAW) -> list[Partition]:
    """The table's monthly partitions, oldest first, including tables of its name pattern left detached by an
    interrupted drop. Empty on SQLite."""
    if not on_postgres():
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), i.inhdetachpending, c.reltuples::bigint,
                   pg_total_relation_size(c.oid)
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = %s::regclass
            """,
            [table],
        )
        found = []
        for name, bound, pending, rows, size in cursor.fetchall():
            start, end = (date.fromisoformat(text) for text in BOUNDS.fullmatch(bound).groups())
            if end != next_month(start):
                raise ValueError(f"{name} is not one month: {bound}")
            found.append(Partition(table, name, start, True, pending, max(rows, 0), size))
        attached = {partition.name for partition in found}
        cursor.execute(
            """
            SELECT c.relname, c.reltuples::bigint, pg_total_relation_size(c.oid) FROM pg_class c
            WHERE c.relkind = 'r' AND NOT c.relispartition AND c.relnamespace = current_schema()::regnamespace
              AND c.relname ~ %s
            """,
            [f"^{table}_p[0-9]{{6}}$"],
        )
        for name, rows, size in cursor.fetchall():
            if name not in attached:
                month = date(int(name[-6:-2]), int(name[-2:]), 1)
                found.append(Partition(table, name, month, False, False, max(rows, 0), size))
    return sorted(found, key=lambda partition: partition.month)


def ensure(months: Iterable[date]) -> list[str]:
    """Make sure each month has its raw partition, and the guard partitions of its start and of the next month's
    start exist. Safe to call concurrently and repeatedly (one creator at a time, under an advisory lock, each
    partition checked for first). Returns the names created, [] on SQLite."""
    if not on_postgres():
        return []
    wanted: dict[str, tuple[str, date]] = {}
    for month in sorted(set(months)):
        for table, start in ((RAW, month), (GUARD, month), (GUARD, next_month(month))):
            wanted.setdefault(partition_name(table, start), (table, start))
    created = []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [LOCK])
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent IN (%s::regclass, %s::regclass)",
            [RAW, GUARD],
        )
        existing = {name for (name,) in cursor.fetchall()}
        for name, (table, start) in sorted(wanted.items()):
            if name in existing:
                continue
            # Dates are formatted by us (isoformat), never user input: DDL takes no parameters.
            cursor.execute(f"CREATE TABLE IF NOT EXISTS {name} (LIKE {table})")
            cursor.execute(
                f"ALTER TABLE {table} ATTACH PARTITION {name} "
                f"FOR VALUES FROM ('{start.isoformat()}') TO ('{next_month(start).isoformat()}')"
            )
            created.append(name)
    for name in created:
        log.info("usage partitions: created %s", name)
    return created


def months_to_keep_ready(now: datetime, ahead: int) -> list[date]:
    """The months ingestion can write to now, and `ahead` more: from the month of the oldest acceptable event to
    the current Pacific month + `ahead`."""
    month, last = month_of(now - OLDEST), month_of(now)
    for _ in range(ahead):
        last = next_month(last)
    months = []
    while month <= last:
        months.append(month)
        month = next_month(month)
    return months


def ensure_ahead(*, now: datetime | None = None, ahead: int | None = None) -> list[str]:
    """The `ensure_usage_partitions` job: the partitions of `months_to_keep_ready` (USAGE_PARTITIONS_AHEAD)."""
    now = now or timezone.now()
    return ensure(months_to_keep_ready(now, settings.USAGE_PARTITIONS_AHEAD if ahead is None else ahead))


def ensure_for(moments: Iterable[datetime]) -> list[str]:
    """The partitions events at these moments are stored in (ingestion, after "no partition found")."""
    return ensure({month_of(moment) for moment in moments})


def raw_events_kept(month: date) -> bool:
    """Whether the raw events of `month` can be read (always on SQLite; on PostgreSQL, while its partition is
    attached). A month without a partition has no events: never made, or dropped by retention."""
    if not on_postgres():
        return True
    return any(p.month == month and p.attached and not p.detach_pending for p in partitions(RAW))


# Retention


@dataclass(frozen=True)
class Verdict:
    partition: Partition
    drop: bool
    reason: str


def oldest_kept_month(now: datetime, keep_months: int) -> date:
    """The first month whose raw events are kept whatever its statements: `keep_months` before the current one."""
    month = month_of(now)
    for _ in range(keep_months):
        month = previous_month(month)
    return month


def retention_plan(*, now: datetime | None = None, keep_months: int | None = None) -> list[Verdict]:
    """For each raw partition, oldest first: drop it or keep it, and why.

    A month's raw events are dropped when (1) the month is before `oldest_kept_month` (USAGE_RAW_RETENTION_MONTHS,
    at least 1, so no event of it can still be reported: ingestion takes events up to 7 days old), (2) none of its
    usage is still pending (PendingCharge of the month: not charged yet), and (3) every usage line charged for it
    is on an issued statement. A Statement row exists only once issued, with its lines, whatever its status since
    (issued, paid, payment_failed, nothing_due): none of them changes what it says about the month's usage, and
    usage charged after its month's statement is on a later statement (a late line), which (3) waits for. After
    that the raw events serve only `reconcile_statement`, which then says they are gone (usage.statements)."""
    now = now or timezone.now()
    keep_months = settings.USAGE_RAW_RETENTION_MONTHS if keep_months is None else keep_months
    if keep_months < 1:
        raise ValueError("keep at least the month before the current one: its late events still arrive")
    oldest = oldest_kept_month(now, keep_months)
    verdicts = []
    for partition in partitions(RAW):
        verdicts.append(Verdict(partition, *_judge(partition, oldest, keep_months)))
    return verdicts


def _judge(partition: Partition, oldest: date, keep_months: int) -> tuple[bool, str]:
    month = partition.month
    if month >= oldest:
        return False, f"within USAGE_RAW_RETENTION_MONTHS ({keep_months}): raw events are kept from {oldest:%Y-%m} on"
    if not partition.attached or partition.detach_pending:
        return True, "left detached by an interrupted drop, whose checks it had passed"
    pending = PendingCharge.objects.filter(month=month)
    if pending.exists():
        accounts = sorted(set(pending.values_list("account_id", flat=True)))
        return False, f"{pending.count()} pending charge line(s) not charged yet (accounts {_ids(accounts)})"
    unstated = UsageLine.objects.filter(month=month, entry__statement_link__isnull=True)
    if unstated.exists():
        accounts = sorted(set(unstated.values_list("account_id", flat=True)))
        return (
            False,
            f"{unstated.count()} usage line(s) charged but on no issued statement yet (accounts {_ids(accounts)})",
        )
    accounts = UsageLine.objects.filter(month=month).values("account_id").distinct().count()
    if not accounts:
        return True, "no billed usage: no statement needs its events"
    return True, f"all its usage is on issued statements ({accounts} account(s) with usage of {month:%Y-%m})"


def _ids(pks: list[int], shown: int = 10) -> str:
    text = ", ".join(str(pk) for pk in pks[:shown])
    return text + (f" and {len(pks) - shown} more" if len(pks) > shown else "")


def expired_guards(*, now: datetime | None = None) -> list[Partition]:
    """Guard partitions no acceptable event can need any more: their month start lies more than REPLAY_WINDOW +
    OLDEST (+ a day) in the past, so every event within REPLAY_WINDOW of it is now too old to be accepted."""
    now = now or timezone.now()
    return [
        partition
        for partition in partitions(GUARD)
        if month_start(partition.month).astimezone(UTC) + REPLAY_WINDOW + OLDEST + GUARD_MARGIN < now
    ]


def drop(partition: Partition, *, reason: str) -> None:
    """Detach the partition without stopping ingestion (DETACH … CONCURRENTLY, outside a transaction), then drop
    it; a raw partition's drop is audited in the same transaction (usage.raw_events.drop). Inside a transaction
    (tests) the plain DETACH is used, which takes an exclusive lock on the parent for the moment it lasts."""
    parent = partition.table
    with connection.cursor() as cursor:
        if partition.detach_pending:
            cursor.execute(f"ALTER TABLE {parent} DETACH PARTITION {partition.name} FINALIZE")
        elif partition.attached:
            concurrently = "" if connection.in_atomic_block else " CONCURRENTLY"
            cursor.execute(f"ALTER TABLE {parent} DETACH PARTITION {partition.name}{concurrently}")
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {partition.name}")
        if parent == RAW:
            AuditEvent.objects.create(
                actor=None,
                actor_kind=ActorKind.SYSTEM,
                action="usage.raw_events.drop",
                object_type=UsageEvent._meta.label_lower,
                object_id=partition.name,
                after={"month": partition.label, "rows_estimate": partition.rows, "bytes": partition.bytes},
                reason=reason,
            )
    log.info("usage partitions: dropped %s (%s)", partition.name, reason)
