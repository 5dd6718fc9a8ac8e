"""Reads for the Usage & Limits dashboard (SPEC §3.7: R20, R21, X5): sums over the rollups, never
over raw events, in the reader's time zone.

The rollups are kept per UTC minute, hour and day. A reader's bucket (a minute, an hour or a
calendar day in their zone) is cut into the coarsest rollups that fit inside it exactly: whole UTC
days, then whole UTC hours, then minutes at the edges. So a day in Los Angeles is 24 hour rollups
(23 or 25 across a DST change), a day in India (UTC+5:30) is 23 hour rollups and 60 minute
rollups, and a day in UTC is one day rollup: exact in every zone, and the cost of a query grows
with the number of buckets in the range, not with the number of events.

On PostgreSQL each read is one statement: the pieces go in as arrays (`unnest`) and are joined to
the rollups by an index range scan each, summed by the database. Elsewhere (SQLite, the embedded
default) the rows of the pieces are read and summed here.
"""

from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.db import connection
from django.db.models import Q

from usage.models import UsageRollup

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
        for item in fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))


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
    return out


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


def _read(project_id, window, column, *, models, keys, per_bucket) -> dict[tuple[int, object], Sums]:
    cut = pieces(window)
    if not cut:
        return {}
    if connection.vendor == "postgresql":
        return _read_postgres(project_id, cut, column, models, keys, per_bucket)
    return _read_orm(project_id, cut, column, models, keys, per_bucket)


def _read_postgres(project_id, cut, column, models, keys, per_bucket):
    table = UsageRollup._meta.db_table
    sums = ", ".join(f"sum(r.{name})" for name in SUM_COLUMNS)
    where, params = ["r.project_id = %s"], [project_id]
    if models:
        where.append("r.model_id = ANY(%s)")
        params.append(list(models))
    if keys:
        where.append("r.api_key_id = ANY(%s)")
        params.append(list(keys))
    bucket = "p.index" if per_bucket else "0"
    sql = f"""
        SELECT {bucket}, r.{column}, {sums}
        FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[], %s::int[]) AS p(granularity, lo, hi, index)
        JOIN {table} r ON r.granularity = p.granularity AND r.bucket_start >= p.lo AND r.bucket_start < p.hi
        WHERE {" AND ".join(where)}
        GROUP BY 1, 2
    """  # noqa: S608 - table and column names are constants
    arrays = [[p.granularity for p in cut], [p.start for p in cut], [p.end for p in cut], [p.index for p in cut]]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*arrays, *params])
        rows = cursor.fetchall()
    return {(index, group): Sums(*values) for index, group, *values in rows}


def _read_orm(project_id, cut, column, models, keys, per_bucket):
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
    out: dict[tuple[int, object], Sums] = {}
    for row in rows.values("granularity", "bucket_start", column, *SUM_COLUMNS):
        found = by_grain[row["granularity"]]
        piece = found[bisect_right(starts[row["granularity"]], row["bucket_start"]) - 1]
        key = (piece.index if per_bucket else 0, row[column])
        out.setdefault(key, Sums()).add(Sums(*(row[name] for name in SUM_COLUMNS)))
    return out
