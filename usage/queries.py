"""Reads for the Usage & Limits dashboard (SPEC §3.7: R20, R21, X5): sums over the rollups, never
over raw events, in the reader's time zone.

The rollups are kept per UTC minute, hour and day. A reader's bucket (a minute, an hour or a
calendar day in their zone) is cut into the coarsest rollups that fit inside it exactly: whole UTC
days, then whole UTC hours, then minutes at the edges. So a day in Los Angeles is 24 hour rollups
(23 or 25 across a DST change), a day in India (UTC+5:30) is 23 hour rollups and 60 minute
rollups, and a day in UTC is one day rollup: exact in every zone, and the cost of a query grows
with the number of buckets in the range, not with the number of events.

On PostgreSQL each read is one statement: the pieces go in as arrays (`unnest`) and each is read
by its own index range scan (a LATERAL subquery that `OFFSET 0` keeps the planner from flattening:
as a plain join it chose a hash join on the grain alone and read the project's whole history),
summed by the database. Elsewhere (SQLite, the embedded
default) the rows of the pieces are read and summed here.
"""

import math
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from django.db import connection
from django.db.models import Q, Sum
from django.utils import timezone

from billing.tiers import ORDER
from studio.models import Tier, effective_tier
from usage.admission import limits_for, project_scope, quota_ids, raised
from usage.catalog import get_catalog
from usage.limiter import get_limiter, pacific_day_windows
from usage.models import QuotaDenial, QuotaOverride, UsagePeak, UsageRollup

MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
GRAINS = (("day", DAY), ("hour", HOUR), ("minute", MINUTE))  # coarsest first


@dataclass
class Sums:
    """What the dashboard shows of some usage. `errors` counts 4xx and 5xx answers together."""

    requests: int = 0
    errors: int = 0
    server_errors: int = 0  # 5xx
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost: object = 0  # Decimal, USD to the nano-dollar

    @property
    def client_errors(self) -> int:  # 4xx
        return self.errors - self.server_errors

    @property
    def succeeded(self) -> int:
        return self.requests - self.errors

    def add(self, other: "Sums") -> None:
        for name in SUM_COLUMNS:  # not fields(self) per call: the dashboard adds hundreds per page
            setattr(self, name, getattr(self, name) + getattr(other, name))


SUM_COLUMNS = [item.name for item in fields(Sums)]


@dataclass(frozen=True)
class Window:
    """A range of buckets in a time zone: [start, end) in UTC, cut at `edges` (the UTC instants of
    the local bucket boundaries, start and end included)."""

    tz: ZoneInfo
    bucket: str  # "minute", "hour" or "day"
    edges: tuple[datetime, ...]

    @property
    def start(self) -> datetime:
        return self.edges[0]

    @property
    def end(self) -> datetime:
        return self.edges[-1]

    @property
    def bucket_starts(self) -> list[datetime]:
        """Each bucket's start in the reader's zone."""
        return [edge.astimezone(self.tz) for edge in self.edges[:-1]]

    @classmethod
    def days(cls, first: date, last: date, tz: ZoneInfo) -> "Window":
        """Calendar days `first`..`last` (inclusive) in `tz`; a day lasts 23, 24 or 25 hours."""
        count = (last - first).days + 1
        edges = [_local_midnight(first + timedelta(days=n), tz) for n in range(count + 1)]
        return cls(tz, "day", tuple(edges))

    @classmethod
    def hours(cls, end: datetime, count: int, tz: ZoneInfo) -> "Window":
        """The `count` local hours up to the one holding `end` (an aware instant), that one included."""
        local = end.astimezone(tz)
        # Local hours are whole UTC hours, or start at :30 or :45 past: count back in UTC from the local hour start.
        last = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        edges = [last - HOUR * n for n in range(count - 1, -1, -1)] + [last + HOUR]
        return cls(tz, "hour", tuple(edges))

    @classmethod
    def minutes(cls, end: datetime, count: int, tz: ZoneInfo) -> "Window":
        """The `count` minutes up to the one holding `end`, that one included."""
        last = end.astimezone(UTC).replace(second=0, microsecond=0)
        edges = [last - MINUTE * n for n in range(count - 1, -1, -1)] + [last + MINUTE]
        return cls(tz, "minute", tuple(edges))


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    # Midnight exists in every zone the dashboard offers except a few that skip it at a DST change
    # (e.g. America/Havana); fold=0 then gives the instant just after the gap, as a clock would.
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


@dataclass(frozen=True)
class Piece:
    """A span of rollups of one grain that lies wholly inside bucket `index`."""

    granularity: str
    start: datetime
    end: datetime
    index: int


def pieces(window: Window) -> list[Piece]:
    """The window's buckets cut into the coarsest whole rollups, in time order."""
    return list(_pieces(window))


@lru_cache(maxsize=64)
def _pieces(window: Window) -> tuple[Piece, ...]:
    # Cached (a window is a value): a page reads its window twice (usage, denials), and 90 days in India are 270 pieces.
    out: list[Piece] = []
    for index, (low, high) in enumerate(zip(window.edges, window.edges[1:], strict=False)):
        moment = low
        while moment < high:
            for rank, (granularity, size) in enumerate(GRAINS):
                if moment != _truncate(moment, granularity) or moment + size > high:
                    continue
                # Run to the next boundary of a coarser grain (where a coarser rollup may fit), or to the end.
                stop = min([high] + [_truncate(moment, coarser) + big for coarser, big in GRAINS[:rank]])
                stop = moment + size * ((stop - moment) // size)
                if out and (out[-1].granularity, out[-1].end, out[-1].index) == (granularity, moment, index):
                    out[-1] = Piece(granularity, out[-1].start, stop, index)  # one span of the same grain
                else:
                    out.append(Piece(granularity, moment, stop, index))
                moment = stop
                break
            else:  # not even a whole minute: edges are whole minutes, so this cannot happen
                raise ValueError(f"bucket edge {moment} is not on a whole minute")
    return tuple(out)


def _arrays(cut: list[Piece]) -> list[str]:
    """The pieces as the four array literals the statements unnest (granularity, lo, hi, index). Literals, not lists:
    binding 4 × 270 Python values cost three times the CPU. ISO 8601 times need no quoting in an array literal."""
    return [
        "{" + ",".join(p.granularity for p in cut) + "}",
        "{" + ",".join(p.start.isoformat() for p in cut) + "}",
        "{" + ",".join(p.end.isoformat() for p in cut) + "}",
        "{" + ",".join(str(p.index) for p in cut) + "}",
    ]


def _truncate(moment: datetime, granularity: str) -> datetime:
    moment = moment.astimezone(UTC)
    if granularity == "minute":
        return moment.replace(second=0, microsecond=0)
    if granularity == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def usage_by_bucket(project_id: int, window: Window, *, models=None, keys=None) -> dict[tuple[int, str], Sums]:
    """{(bucket index, model id): Sums} of the project's usage in the window (buckets without usage left out)."""
    return _read(project_id, window, "model_id", models=models, keys=keys, per_bucket=True)


def usage_by_key(project_id: int, window: Window, *, models=None, keys=None) -> dict[int, Sums]:
    """{API key pk: Sums} over the whole window."""
    rows = _read(project_id, window, "api_key_id", models=models, keys=keys, per_bucket=False)
    return {key_id: sums for (_, key_id), sums in rows.items()}


def usage_by_bucket_and_key(
    project_id: int, window: Window, *, models=None, keys=None
) -> tuple[dict[tuple[int, str], Sums], dict[int, Sums]]:
    """(usage_by_bucket(…), usage_by_key(…)) from one read of the window's rollups, for the Usage tab, which shows
    both: on PostgreSQL one statement grouped both ways (GROUPING SETS), so the rows are scanned once, not twice."""
    cut = pieces(window)
    if not cut:
        return {}, {}
    if connection.vendor == "postgresql":
        return _read_both_postgres(project_id, cut, models, keys)
    by_bucket, by_key = _read_orm(project_id, cut, [("model_id", True), ("api_key_id", False)], models, keys)
    return by_bucket, {key_id: sums for (_, key_id), sums in by_key.items()}


def _read(project_id, window, column, *, models, keys, per_bucket) -> dict[tuple[int, object], Sums]:
    cut = pieces(window)
    if not cut:
        return {}
    if connection.vendor == "postgresql":
        return _read_postgres(project_id, cut, column, models, keys, per_bucket)
    return _read_orm(project_id, cut, [(column, per_bucket)], models, keys)[0]


def _rollups_of_pieces(project_id, models, keys) -> tuple[str, list]:
    """FROM the pieces, each joined to its rollups by its own index range scan (see the module's docstring), and the
    parameters after the pieces' arrays."""
    where, params = ["r.project_id = %s"], [project_id]
    if models:
        where.append("r.model_id = ANY(%s)")
        params.append(list(models))
    if keys:
        where.append("r.api_key_id = ANY(%s)")
        params.append(list(keys))
    sql = f"""
        FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[], %s::int[]) AS p(granularity, lo, hi, index)
        CROSS JOIN LATERAL (
            SELECT * FROM {UsageRollup._meta.db_table} r
            WHERE r.granularity = p.granularity AND r.bucket_start >= p.lo AND r.bucket_start < p.hi
              AND {" AND ".join(where)}
            OFFSET 0
        ) r
    """  # noqa: S608 - table and column names are constants
    return sql, params


SUMS_SQL = ", ".join(f"sum(r.{name})" for name in SUM_COLUMNS)


def _sums(counts, cost) -> Sums:
    # sum() of bigint is numeric: the counts come back as Decimal, and are ints as on SQLite.
    return Sums(*map(int, counts), cost)


def _read_postgres(project_id, cut, column, models, keys, per_bucket):
    rollups, params = _rollups_of_pieces(project_id, models, keys)
    bucket = "p.index" if per_bucket else "0"
    sql = f"SELECT {bucket}, r.{column}, {SUMS_SQL} {rollups} GROUP BY 1, 2"
    with connection.cursor() as cursor:
        cursor.execute(sql, [*_arrays(cut), *params])
        rows = cursor.fetchall()
    return {(index, group): _sums(counts, cost) for index, group, *counts, cost in rows}


def _read_both_postgres(project_id, cut, models, keys):
    rollups, params = _rollups_of_pieces(project_id, models, keys)
    # GROUPING(r.api_key_id) is 1 on the rows of the (bucket, model) set, where the key is summed over.
    sql = f"""
        SELECT GROUPING(r.api_key_id), p.index, r.model_id, r.api_key_id, {SUMS_SQL} {rollups}
        GROUP BY GROUPING SETS ((p.index, r.model_id), (r.api_key_id))
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [*_arrays(cut), *params])
        rows = cursor.fetchall()
    by_bucket, by_key = {}, {}
    for per_bucket, index, model_id, key_id, *counts, cost in rows:
        if per_bucket:
            by_bucket[(index, model_id)] = _sums(counts, cost)
        else:
            by_key[key_id] = _sums(counts, cost)
    return by_bucket, by_key


def _read_orm(project_id, cut, groupings, models, keys) -> list[dict[tuple[int, object], Sums]]:
    """One dict per (column, per_bucket) of `groupings`, from one read of the rows."""
    spans = Q()
    for piece in cut:
        spans |= Q(granularity=piece.granularity, bucket_start__gte=piece.start, bucket_start__lt=piece.end)
    rows = UsageRollup.objects.filter(spans, project_id=project_id)
    if models:
        rows = rows.filter(model_id__in=list(models))
    if keys:
        rows = rows.filter(api_key_id__in=list(keys))
    by_grain = defaultdict(list)
    for piece in cut:
        by_grain[piece.granularity].append(piece)
    starts = {grain: [piece.start for piece in found] for grain, found in by_grain.items()}
    outs: list[dict[tuple[int, object], Sums]] = [{} for _ in groupings]
    columns = list(dict.fromkeys(column for column, _ in groupings))
    for row in rows.values("granularity", "bucket_start", *columns, *SUM_COLUMNS):
        found = by_grain[row["granularity"]]
        piece = found[bisect_right(starts[row["granularity"]], row["bucket_start"]) - 1]
        sums = Sums(*(row[name] for name in SUM_COLUMNS))
        for out, (column, per_bucket) in zip(outs, groupings, strict=True):
            out.setdefault((piece.index if per_bucket else 0, row[column]), Sums()).add(sums)
    return outs


# --- Denials and limits (X6, R21) ---------------------------------------------------------------------------------

PACIFIC = ZoneInfo("America/Los_Angeles")  # quota days are Pacific days


def denials_by_bucket(project_pk: int, window: Window, *, models=None) -> dict[tuple[int, str, str], int]:
    """{(bucket index, model_id, quota_id): requests denied} — quota:check's RATE_LIMIT_EXCEEDED denials.

    Read from QuotaDenial (kept per UTC minute, hour and day, like the rollups) through the same pieces, so exact in
    every zone; buckets without denials are left out. One statement. Denials reach QuotaDenial within about a minute
    (usage.denials)."""
    return _read_denials(project_pk, window, models, per_bucket=True)


@dataclass(frozen=True)
class ModelLimits:
    """One model's row of the Limits tab: its limits at the project's tier and the next, and what was used of them.

    Peaks come from the rollups, so they count the requests the fleet reported (any status, not count_tokens);
    live usage comes from the limiter, which counts the requests it admitted. Live usage of a limit the tier does not
    have (None) is None as well: admission keeps no counter for a limit that does not exist."""

    model_id: str
    model_name: str
    tier: str  # the project's effective tier now
    rpm: int | None  # limits at that tier (None: no limit)
    tpm: int | None
    rpd: int | None
    next_tier: str | None  # None: already on the highest tier
    next_rpm: int | None
    next_tpm: int | None
    next_rpd: int | None
    quota_ids: dict[str, str]  # {"rpm": "GenerateRequestsPerMinutePerProjectPerModel-Tier1", "tpm": ..., "rpd": ...}
    peak_rpm: int  # most requests in one UTC minute of the window (all keys)
    peak_tpm: int  # most input tokens in one UTC minute of the window
    peak_rpd: int  # most requests in one Pacific day that overlaps the window (counted whole, as RPD counts it)
    live_rpm: int | None  # used now, from the limiter: the current minute and Pacific day (None: no such limit)
    live_tpm: int | None
    live_rpd: int | None
    rpm_resets_in: int  # seconds until the minute ends
    rpd_resets_in: int  # seconds until Pacific midnight
    denials: dict[str, int]  # {quota_id: requests denied in the window}, whatever the tier then
    raised: frozenset[str] = frozenset()  # the limits ("rpm", …) the project's override raises above the tier's


def limits_for_project(project, window: Window, *, now=None) -> list[ModelLimits]:
    """One row per model the project can use at its tier (free tier: the free models only), by model id.

    Four statements whatever the range (the per-minute peaks, the Pacific days' sums, the denials, the project's quota
    overrides: rpm, tpm and rpd are the figures in force, the tier's raised by them) and one limiter read
    (Limiter.peek, which counts nothing) for all models; the catalog comes from its snapshot. `now` (default:
    the current time) sets the reset times; the limiter reads its current windows by its own clock."""
    now = now or timezone.now()
    catalog = get_catalog()
    tier = effective_tier(project.tier, project.billing_state)
    following = ORDER.index(tier) + 1
    next_tier = ORDER[following] if following < len(ORDER) else None
    models = sorted(
        (m for m in catalog.models.values() if m.active and (tier != Tier.FREE or m.free_tier_available)),
        key=lambda m: m.model_id,
    )
    model_ids = [m.model_id for m in models]
    if not model_ids:
        return []

    minute_peaks = _minute_peaks(project.pk, window, model_ids)
    first = window.start.astimezone(PACIFIC).date()
    last = (window.end - MINUTE).astimezone(PACIFIC).date()
    day_peaks: dict[str, int] = defaultdict(int)
    for (_, model_id), sums in usage_by_bucket(project.pk, Window.days(first, last, PACIFIC), models=model_ids).items():
        day_peaks[model_id] = max(day_peaks[model_id], sums.requests)
    denied: dict[str, dict[str, int]] = defaultdict(dict)
    for (_, model_id, quota_id), count in _read_denials(project.pk, window, model_ids, per_bucket=False).items():
        denied[model_id][quota_id] = count
    # Overrides raise paid limits only (usage.admission.override_of).
    overrides = (
        {} if tier == Tier.FREE else {o.model_id: o for o in QuotaOverride.objects.filter(project_id=project.pk)}
    )
    live = _live_usage(project, tier, model_ids, catalog, overrides)

    ids = quota_ids(tier)
    moment = now.timestamp()
    rpm_resets_in = max(1, math.ceil(60 - moment % 60))
    rpd_resets_in = max(1, math.ceil(pacific_day_windows(moment)[1].end - moment))
    rows = []
    for model in models:
        limits = catalog.rate_limits.get((tier, model.model_id))
        upper = catalog.rate_limits.get((next_tier, model.model_id)) if next_tier else None
        requests, tokens = minute_peaks.get(model.model_id, (0, 0))
        used = live.get(model.model_id, {})
        override = overrides.get(model.model_id)
        figures = {name: getattr(limits, name) if limits else None for name in ("rpm", "tpm", "rpd")}
        in_force = {name: raised(value, getattr(override, name, None)) for name, value in figures.items()}
        rows.append(
            ModelLimits(
                model_id=model.model_id,
                model_name=model.display_name,
                tier=tier,
                rpm=in_force["rpm"],
                tpm=in_force["tpm"],
                rpd=in_force["rpd"],
                next_tier=next_tier,
                next_rpm=upper.rpm if upper else None,
                next_tpm=upper.tpm if upper else None,
                next_rpd=upper.rpd if upper else None,
                quota_ids={name: ids[name] for name in ("rpm", "tpm", "rpd")},
                peak_rpm=requests,
                peak_tpm=tokens,
                peak_rpd=day_peaks.get(model.model_id, 0),
                live_rpm=used.get("rpm"),
                live_tpm=used.get("tpm"),
                live_rpd=used.get("rpd"),
                rpm_resets_in=rpm_resets_in,
                rpd_resets_in=rpd_resets_in,
                denials=denied.get(model.model_id, {}),
                raised=frozenset(name for name, value in in_force.items() if value != figures[name]),
            )
        )
    return rows


def _minute_peaks(project_pk: int, window: Window, model_ids: list[str]) -> dict[str, tuple[int, int]]:
    """{model: (most requests, most input tokens) in one UTC minute of the window}, over all keys, in one statement:
    the busiest minute of each whole UTC hour inside the window from UsagePeak (kept by usage.peaks), and the minute
    rollups of the partial hours at its edges summed per minute. So 90 days read at most 2,160 rows per model and
    two hours of minutes, whatever the traffic."""
    first_hour = _truncate(window.start + HOUR - MINUTE, "hour")  # the first whole hour (edges are whole minutes)
    last_hour = _truncate(window.end, "hour")
    if first_hour < last_hour:
        edges = Q(bucket_start__gte=window.start, bucket_start__lt=first_hour)
        edges |= Q(bucket_start__gte=last_hour, bucket_start__lt=window.end)
    else:  # no whole hour: only minutes
        first_hour = last_hour = window.start
        edges = Q(bucket_start__gte=window.start, bucket_start__lt=window.end)
    hours = UsagePeak.objects.filter(
        project_id=project_pk, model_id__in=model_ids, hour__gte=first_hour, hour__lt=last_hour
    ).values_list("model_id", "requests", "input_tokens")
    minutes = (
        UsageRollup.objects.filter(edges, project_id=project_pk, granularity="minute", model_id__in=model_ids)
        .values("model_id", "bucket_start")
        .annotate(minute_requests=Sum("requests"), minute_tokens=Sum("input_tokens"))
        .order_by()
    )
    hours_sql, hours_params = hours.query.sql_with_params()
    minutes_sql, minutes_params = minutes.query.sql_with_params()
    sql = (
        "SELECT model_id, MAX(requests), MAX(input_tokens) FROM ("  # noqa: S608 - the ORM's own SQL
        f"SELECT model_id, requests, input_tokens FROM ({hours_sql}) AS hours UNION ALL "
        f"SELECT model_id, minute_requests, minute_tokens FROM ({minutes_sql}) AS minutes"
        ") AS peaks GROUP BY model_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*hours_params, *minutes_params])
        return {model_id: (int(requests), int(tokens)) for model_id, requests, tokens in cursor.fetchall()}


def _live_usage(project, tier: str, model_ids: list[str], catalog, overrides) -> dict[str, dict[str, int]]:
    """{model: {"rpm"|"tpm"|"rpd": used}} in the limiter's current windows, read without counting (one peek for all
    models, through the Limit objects admission builds). Used = limit − remaining; a counter past its limit (reported
    tokens above the estimate) reads as the limit."""
    names = {quota_id: name for name, quota_id in quota_ids(tier).items() if name in ("rpm", "tpm", "rpd")}
    owners, limits = [], []
    for model_id in model_ids:
        for limit in limits_for(project, model_id, estimated_input_tokens=0, catalog=catalog, overrides=overrides):
            if limit.quota_id in names:  # not the spend limit: one per project, not per model
                owners.append(model_id)
                limits.append(limit)
    if not limits:
        return {}
    live: dict[str, dict[str, int]] = defaultdict(dict)
    for model_id, state in zip(owners, get_limiter().peek(project_scope(project.pk), limits), strict=True):
        live[model_id][names[state.quota_id]] = state.limit - state.remaining
    return live


def _read_denials(project_pk, window, models, *, per_bucket) -> dict[tuple[int, str, str], int]:
    cut = pieces(window)
    if not cut:
        return {}
    if connection.vendor == "postgresql":
        return _read_denials_postgres(project_pk, cut, models, per_bucket)
    return _read_denials_orm(project_pk, cut, models, per_bucket)


def _read_denials_postgres(project_pk, cut, models, per_bucket):
    where, params = ["d.project_id = %s"], [project_pk]
    if models:
        where.append("d.model_id = ANY(%s)")
        params.append(list(models))
    bucket = "p.index" if per_bucket else "0"
    sql = f"""
        SELECT {bucket}, d.model_id, d.quota_id, sum(d.count)
        FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[], %s::int[]) AS p(granularity, lo, hi, index)
        CROSS JOIN LATERAL (
            SELECT * FROM {QuotaDenial._meta.db_table} d
            WHERE d.granularity = p.granularity AND d.bucket_start >= p.lo AND d.bucket_start < p.hi
              AND {" AND ".join(where)}
            OFFSET 0
        ) d
        GROUP BY 1, 2, 3
    """  # noqa: S608 - table and column names are constants
    with connection.cursor() as cursor:
        cursor.execute(sql, [*_arrays(cut), *params])
        return {(index, model_id, quota_id): int(count) for index, model_id, quota_id, count in cursor.fetchall()}


def _read_denials_orm(project_pk, cut, models, per_bucket):
    spans = Q()
    for piece in cut:
        spans |= Q(granularity=piece.granularity, bucket_start__gte=piece.start, bucket_start__lt=piece.end)
    rows = QuotaDenial.objects.filter(spans, project_id=project_pk)
    if models:
        rows = rows.filter(model_id__in=list(models))
    by_grain = defaultdict(list)
    for piece in cut:
        by_grain[piece.granularity].append(piece)
    starts = {grain: [piece.start for piece in found] for grain, found in by_grain.items()}
    out: dict[tuple[int, str, str], int] = defaultdict(int)
    for grain, start, model_id, quota_id, count in rows.values_list(
        "granularity", "bucket_start", "model_id", "quota_id", "count"
    ):
        piece = by_grain[grain][bisect_right(starts[grain], start) - 1]
        out[(piece.index if per_bucket else 0, model_id, quota_id)] += count
    return dict(out)
