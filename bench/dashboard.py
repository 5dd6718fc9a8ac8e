"""Benchmark: the Usage & Limits dashboard's reads over the rollups of 10 million events (issue 11).

Creates a throwaway PostgreSQL database, migrates it and writes the rollups ingestion would have
written for 10,000,000 events of 1,000 projects on the 6 catalog models over 90 days: one busy
project with traffic every minute (2 keys × 3 models) and 999 sparse ones (1-3 keys, 1-3 models,
from about 4,000 to 127,000 events each). Then, for the busy project and two sparse ones, for each range (1 hour,
24 hours, 7, 28, 90 days) in UTC, America/Los_Angeles and Asia/Kolkata, it times
`usage.queries.usage_by_bucket` and `usage_by_key`, and the Usage and Limits pages through
django.test.Client with production-like settings: p50 / p95 milliseconds, queries per call, and the
rollup rows each read. Prints figures; it never asserts anything about timings.

    .venv/bin/python bench/dashboard.py [--database studio_dashboard_bench] [--events 10000000]
        [--projects 1000] [--calls 30] [--pages 15] [--keep] [--reuse] [--explain] [--jit-off]
        [--zone ZONE] [--range RANGE] [--project busy|largest|median] [--profile N]

See bench/README.md for what it seeds, how, and the figures.
"""

import argparse
import importlib
import logging
import math
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.api_keys_page import database_name, print_versions, psql, setup_django, time_requests

DB_NAME = "studio_dashboard_bench"  # the default; --database names another (it is dropped and recreated)
DAYS = 90
MINUTES = DAYS * 24 * 60
BUSY_MODELS = ["gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-pro"]
BUSY_KEYS = 2
BUSY_EVENTS_PER_MINUTE = 16  # on average, over its 6 rows a minute (a daily cycle around it)
EMAIL = "bench@bench.example"
RANGES = ["1h", "24h", "7d", "28d", "90d"]
ZONES = ["UTC", "America/Los_Angeles", "Asia/Kolkata"]
SUM_COLUMNS = (
    "requests, errors, server_errors, input_tokens, output_tokens, cached_tokens, audio_input_tokens, "
    "cached_audio_tokens, cache_token_hours, cost"
)
ROLLUP = "usage_usagerollup"
DENIAL = "usage_quotadenial"
PEAK = "usage_usagepeak"


# --- Seeding --------------------------------------------------------------------------------------


def seed(total_events: int, project_count: int) -> dict:
    """Projects, keys, the bench user, then the rollups (and some denials) in SQL. Returns `read_meta()`."""
    from django.db import connection

    end = datetime.now(UTC).replace(second=0, microsecond=0)
    projects, keys = _projects_and_keys(project_count)
    busy, sparse = projects[0], projects[1:]
    with connection.cursor() as cursor:
        cursor.execute("SET work_mem = '1GB'")
        cursor.execute("SET maintenance_work_mem = '1GB'")
        # Bulk load: no triggers (the foreign keys' checks), indexes built once afterwards.
        cursor.execute("SET session_replication_role = replica")
        indexes = _drop_indexes(cursor, [ROLLUP, DENIAL, PEAK])
        start = time.perf_counter()
        busy_events = _busy_minutes(cursor, busy, keys[busy], end)
        plan = _sparse_plan(sparse, keys, total_events - busy_events)
        _sparse_minutes(cursor, plan, end)
        print(f"  minute rollups: {time.perf_counter() - start:.0f} s")
        _denials(cursor, busy, end)
        start = time.perf_counter()
        _coarser(cursor, ROLLUP, "hour", "minute", f"api_key_id, model_id, {SUM_COLUMNS}")
        _coarser(cursor, ROLLUP, "day", "hour", f"api_key_id, model_id, {SUM_COLUMNS}")
        _coarser(cursor, DENIAL, "hour", "minute", "model_id, quota_id, count")
        _coarser(cursor, DENIAL, "day", "hour", "model_id, quota_id, count")
        print(f"  hour and day rollups: {time.perf_counter() - start:.0f} s")
        start = time.perf_counter()
        # The busiest minute of each hour (UsagePeak), as usage.fold keeps it: computed from the minute rollups by the
        # statement of the migration that added it.
        cursor.execute(importlib.import_module("usage.migrations.0008_usage_peaks").BACKFILL)
        print(f"  hour peaks: {time.perf_counter() - start:.0f} s")
        start = time.perf_counter()
        for statement in indexes:
            cursor.execute(statement)
        cursor.execute("SET session_replication_role = DEFAULT")
        print(f"  indexes: {time.perf_counter() - start:.0f} s")
        cursor.execute(
            "CREATE TABLE bench_meta AS SELECT %s::timestamptz AS seeded_end, %s::int AS busy, %s::int[] AS sparse",
            [end, busy, [projects[n] for n in measured_sparse(project_count)]],
        )
    start = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {ROLLUP}")
        cursor.execute(f"VACUUM ANALYZE {DENIAL}")
        cursor.execute(f"VACUUM ANALYZE {PEAK}")
    print(f"  vacuum analyze: {time.perf_counter() - start:.0f} s")
    return read_meta()


def _projects_and_keys(count: int) -> tuple[list[int], dict[int, list[int]]]:
    """`count` projects (the first is the busy one), 1-3 keys each (2 for the busy one); the bench user
    imported the measured ones (`measured_sparse`) and every hundredth (the picker lists a dozen)."""
    from django.contrib.auth.hashers import make_password
    from django.utils import timezone

    from studio import keyformat
    from studio.models import ApiKey, BillingState, Membership, Project, Role, Tier, User

    user = User.objects.create(email=EMAIL, password=make_password(None))
    projects = Project.objects.bulk_create(
        [
            Project(
                project_id=f"gen-lang-client-{n:010d}",
                number=str(10**11 + n),
                name="Busy project" if n == 0 else f"Sparse project {n:04d}",
                tier=Tier.TIER_1,
                billing_state=BillingState.ACTIVE,
            )
            for n in range(count)
        ],
        batch_size=1000,
    )
    now = timezone.now()
    imported = sorted({0, *measured_sparse(count), *range(100, count, 100)})
    Membership.objects.bulk_create(
        [Membership(project=projects[n], user=user, role=Role.OWNER, imported_at=now) for n in imported]
    )
    rows = []
    for n, project in enumerate(projects):
        for k in range(BUSY_KEYS if n == 0 else 1 + n % 3):
            raw = keyformat.generate()
            rows.append(
                ApiKey(
                    project=project,
                    name=f"Key {k + 1}",
                    prefix=keyformat.visible_prefix(raw),
                    last4=keyformat.last_four(raw),
                    secret_hash=keyformat.hash_key(raw),
                    created_by=user,
                )
            )
    keys: dict[int, list[int]] = {}
    for key in ApiKey.objects.bulk_create(rows, batch_size=1000):
        keys.setdefault(key.project_id, []).append(key.pk)
    return [p.pk for p in projects], keys


def measured_sparse(count: int) -> tuple[int, int]:
    """The positions of the sparse projects measured: the largest (rank 1) and the median one."""
    return 1, 1 + (count - 1) // 2


def _drop_indexes(cursor, tables: list[str]) -> list[str]:
    """Drop the tables' indexes and unique constraints (not primary keys); returns the statements that recreate them."""
    cursor.execute(
        """
        SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)
        FROM pg_constraint c WHERE c.conrelid = ANY(%s::regclass[]) AND c.contype = 'u'
        """,
        [tables],
    )
    constraints = cursor.fetchall()
    cursor.execute(
        """
        SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
        FROM pg_index i
        WHERE i.indrelid = ANY(%s::regclass[]) AND NOT i.indisprimary
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
        """,
        [tables],
    )
    indexes = cursor.fetchall()
    for table, name, _ in constraints:
        cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        cursor.execute(f"DROP INDEX {name}")
    return [f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}' for table, name, definition in constraints] + [
        definition for _, definition in indexes
    ]


def _prices() -> str:
    """The catalog's input and output prices (USD per 1M tokens) as a VALUES list."""
    from usage.models import Price

    rows = [
        f"('{price.model_id}', {price.input or 0}, {price.output or 0})"
        for price in Price.objects.order_by("model_id", "-effective_from").distinct("model_id")
    ]
    return f"(VALUES {', '.join(rows)}) AS price(model_id, input, output)"


def _busy_minutes(cursor, project: int, keys: list[int], end: datetime) -> int:
    """The busy project: a row per minute per key and model for 90 days, requests following a daily
    cycle (busiest at 10:00 UTC). Returns its events."""
    combos = ", ".join(f"({key}, '{model}')" for key in keys for model in BUSY_MODELS)
    per_row = BUSY_EVENTS_PER_MINUTE / (len(keys) * len(BUSY_MODELS))
    cursor.execute(
        f"""
        INSERT INTO {ROLLUP} (granularity, bucket_start, project_id, api_key_id, model_id, {SUM_COLUMNS})
        SELECT 'minute', m.minute, %s, c.key, c.model_id, r.requests, e.errors, least(e.errors, floor(e.errors * 0.25
               + random())), t.input, t.output, t.input / 5, 0, 0, 0,
               round((t.input * price.input + t.output * price.output) / 1000000, 9)
        FROM generate_series(%s::timestamptz, %s::timestamptz - interval '1 minute', interval '1 minute') AS m(minute)
        CROSS JOIN (VALUES {combos}) AS c(key, model_id)
        JOIN {_prices()} USING (model_id)
        CROSS JOIN LATERAL (SELECT greatest(1, round({per_row} * (1 + 0.6 * sin(pi() * (extract(epoch FROM m.minute)
               / 43200.0 - 1 / 3.0))) * (0.5 + random())))::bigint AS requests) r
        CROSS JOIN LATERAL (SELECT floor(r.requests * 0.02 + random())::bigint AS errors) e
        CROSS JOIN LATERAL (SELECT r.requests * (500 + floor(random() * 3000))::bigint AS input,
                                   r.requests * floor(random() * 800)::bigint AS output) t
        """,
        [project, end - timedelta(minutes=MINUTES), end],
    )
    cursor.execute(f"SELECT sum(requests) FROM {ROLLUP} WHERE project_id = %s", [project])
    return int(cursor.fetchone()[0])


def _sparse_plan(projects: list[int], keys: dict[int, list[int]], events: int) -> list[tuple[int, int, list, list]]:
    """(project, events, keys, models) of each sparse project: events ∝ 1/√rank, 1-3 of the 6 models."""
    from usage.models import CatalogModel

    models = list(CatalogModel.objects.order_by("model_id").values_list("model_id", flat=True))
    weights = [1 / math.sqrt(rank) for rank in range(1, len(projects) + 1)]
    scale = events / sum(weights)
    return [
        (project, round(weight * scale), keys[project], [models[(n + m) % len(models)] for m in range(1 + n % 3)])
        for n, (project, weight) in enumerate(zip(projects, weights, strict=True))
    ]


def _sparse_minutes(cursor, plan, end: datetime) -> None:
    """Each sparse project's events at random minutes of the 90 days, each on a random key and model
    of the project, summed per minute × key × model as ingestion would (2 % errors, a quarter of them 5xx)."""
    cursor.execute("CREATE TEMPORARY TABLE bench_plan (project int, events int, keys int[], models text[])")
    with cursor.cursor.copy("COPY bench_plan FROM STDIN") as copy:
        for row in plan:
            copy.write_row(row)
    cursor.execute(
        f"""
        INSERT INTO {ROLLUP} (granularity, bucket_start, project_id, api_key_id, model_id, {SUM_COLUMNS})
        SELECT 'minute', e.minute, e.project, e.key, e.model_id, count(*), count(*) FILTER (WHERE e.r < 0.02),
               count(*) FILTER (WHERE e.r < 0.005), sum(e.input), sum(e.output), sum(e.cached), 0, 0, 0,
               sum(round((e.input * price.input + e.output * price.output) / 1000000, 9))
        FROM (
            SELECT p.project, %s::timestamptz + floor(random() * {MINUTES}) * interval '1 minute' AS minute,
                   p.keys[1 + floor(random() * cardinality(p.keys))::int] AS key,
                   p.models[1 + floor(random() * cardinality(p.models))::int] AS model_id,
                   g.r, g.input, CASE WHEN g.r > 0.8 THEN g.input / 4 ELSE 0 END AS cached,
                   CASE WHEN g.r < 0.02 THEN 0 ELSE floor(random() * 800)::bigint END AS output
            FROM bench_plan p CROSS JOIN LATERAL (
                SELECT random() AS r, (200 + floor(random() * 4000))::bigint AS input FROM generate_series(1, p.events)
            ) g
        ) e JOIN {_prices()} USING (model_id)
        GROUP BY e.minute, e.project, e.key, e.model_id
        """,
        [end - timedelta(minutes=MINUTES)],
    )


def _denials(cursor, busy: int, end: datetime) -> None:
    """The busy project's RPM denials: 1-20 requests in about one minute in a hundred."""
    cursor.execute(
        f"""
        INSERT INTO {DENIAL} (granularity, bucket_start, project_id, model_id, quota_id, count)
        SELECT 'minute', m.minute, %s, 'gemini-2.5-pro', 'GenerateRequestsPerMinutePerProjectPerModel-Tier1',
               1 + floor(random() * 20)
        FROM generate_series(%s::timestamptz, %s::timestamptz - interval '1 minute', interval '1 minute') AS m(minute)
        WHERE random() < 0.01
        """,
        [busy, end - timedelta(minutes=MINUTES), end],
    )


def _coarser(cursor, table: str, grain: str, finer: str, columns: str) -> None:
    """The `grain` rows as the sums of the `finer` rows, as ingestion keeps all three consistent."""
    names = [name.strip() for name in columns.split(",")]
    group = [name for name in names if name.endswith("_id")]
    sums = [f"sum({name})" for name in names if not name.endswith("_id")]
    cursor.execute(
        f"""
        INSERT INTO {table} (granularity, bucket_start, project_id, {columns})
        SELECT %s, date_trunc(%s, bucket_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', project_id,
               {", ".join(group)}, {", ".join(sums)}
        FROM {table} WHERE granularity = %s
        GROUP BY 2, 3, {", ".join(group)}
        """,
        [grain, grain, finer],
    )


def read_meta() -> dict:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT seeded_end, busy, sparse FROM bench_meta")
        end, busy, sparse = cursor.fetchone()
        cursor.execute(f"SELECT granularity, count(*) FROM {ROLLUP} GROUP BY 1 ORDER BY 1")
        rows = dict(cursor.fetchall())
        cursor.execute(f"SELECT sum(requests) FROM {ROLLUP} WHERE granularity = 'day'")
        (events,) = cursor.fetchone()
        cursor.execute("SELECT pg_size_pretty(pg_total_relation_size(%s))", [ROLLUP])
        (size,) = cursor.fetchone()
    return {"end": end, "busy": busy, "sparse": sparse, "rows": rows, "events": int(events), "size": size}


# --- Measuring ------------------------------------------------------------------------------------


def windows(now: datetime, zone_name: str) -> dict:
    """Each range's window, exactly as the pages build it (usage.forms.RangeForm)."""
    from zoneinfo import ZoneInfo

    from usage.forms import RangeForm

    zone = ZoneInfo(zone_name)
    out = {}
    for name in RANGES:
        form = RangeForm({"range": name}, today=now.astimezone(zone).date())
        assert form.is_valid(), form.errors
        out[name] = form.window(now, zone)
    return out


def rows_read(project: int, window) -> tuple[int, int]:
    """(rollup rows, events) the reads of `window` sum: the same join as usage.queries, counted."""
    from django.db import connection

    from usage.queries import pieces

    cut = pieces(window)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT count(*), coalesce(sum(r.requests), 0)
            FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[]) AS p(granularity, lo, hi)
            JOIN {ROLLUP} r ON r.granularity = p.granularity AND r.bucket_start >= p.lo AND r.bucket_start < p.hi
            WHERE r.project_id = %s
            """,
            [[p.granularity for p in cut], [p.start for p in cut], [p.end for p in cut], project],
        )
        rows, events = cursor.fetchone()
    return rows, int(events)


def queries_of(call) -> int:
    """Queries of one call: the fewer of two (the catalog snapshot's reload every CATALOG_TTL_SECONDS adds a few)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counts = []
    for _ in range(2):
        with CaptureQueriesContext(connection) as captured:
            call()
        counts.append(len(captured))
    return min(counts)


def p50_p95(call, *, calls: int, warmup: int) -> tuple[float, float]:
    wall, _cpu, _faults = time_requests(call, warmup=warmup, requests=calls)
    return statistics.median(wall), statistics.quantiles(wall, n=20, method="inclusive")[-1]


PROJECTS = {"busy": "busy", "largest": "sparse, largest", "median": "sparse, median"}


def profile_usage_page(client, url: str, requests: int, top: int = 30) -> None:
    """cProfile of `requests` Usage page requests (after one untimed): the top entries by own time
    and by cumulative time."""
    import cProfile
    import pstats

    client.get(url)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(requests):
        client.get(url)
    profiler.disable()
    for order in ("tottime", "cumulative"):
        print(f"\ncProfile of {requests} × GET {url}, top {top} by {order}:")
        pstats.Stats(profiler).strip_dirs().sort_stats(order).print_stats(top)


def measure(meta: dict, *, calls: int, pages: int, explain: bool, only: dict, profile: int = 0) -> None:
    """The table; `only` narrows it ({"zones": [...], "ranges": [...], "projects": [...]}, empty: all)."""
    import functools

    import time_machine
    from django.test import Client

    from studio.models import Project, User
    from usage.queries import pieces, usage_by_bucket, usage_by_key

    measured = [("busy", meta["busy"]), ("sparse, largest", meta["sparse"][0]), ("sparse, median", meta["sparse"][1])]
    ids = dict(Project.objects.filter(pk__in=[pk for _, pk in measured]).values_list("pk", "project_id"))
    if only.get("projects"):
        measured = [(label, pk) for label, pk in measured if label in {PROJECTS[p] for p in only["projects"]}]
    # The pages read the clock: they run at the moment the data ends (as if seeded just now).
    now = meta["end"] - timedelta(seconds=1)
    traveller = time_machine.travel(now, tick=True)
    traveller.start()
    client = Client()
    client.force_login(User.objects.get(email=EMAIL))
    if profile:
        url = f"/usage/?project={ids[meta['busy']]}&range=90d&tz=Asia/Kolkata"
        profile_usage_page(client, url, profile)

    print(f"\nusage_by_bucket / usage_by_key: {calls} timed calls after 3 warm-up; pages: {pages} after 2; ms")
    print("(usage cpu: the Usage page's CPU p50 in this process, i.e. without PostgreSQL's work)")
    header = (
        f"{'project':<16} {'zone':<20} {'range':>5} {'bkts':>5} {'pieces':>6} {'rows':>7} {'events':>9} "
        f"{'bucket p50':>10} {'p95':>6} {'key p50':>7} {'p95':>6} {'q':>2} "
        f"{'usage p50':>9} {'p95':>6} {'cpu':>5} {'q':>2} {'limits p50':>10} {'p95':>6} {'q':>2}"
    )
    print(header)
    for label, project in measured:
        for zone in only.get("zones") or ZONES:
            for name, window in windows(now, zone).items():
                if only.get("ranges") and name not in only["ranges"]:
                    continue
                rows, events = rows_read(project, window)
                by_bucket = functools.partial(usage_by_bucket, project, window)
                by_key = functools.partial(usage_by_key, project, window)
                bucket_p50, bucket_p95 = p50_p95(by_bucket, calls=calls, warmup=3)
                key_p50, key_p95 = p50_p95(by_key, calls=calls, warmup=3)
                query = f"?project={ids[project]}&range={name}&tz={zone}"
                cells = []
                for url in (f"/usage/{query}", f"/usage/limits/{query}"):
                    response = client.get(url)
                    assert response.status_code == 200, f"{url}: HTTP {response.status_code}"
                    get = functools.partial(client.get, url)
                    wall, cpu, _faults = time_requests(get, warmup=2, requests=pages)
                    p95 = statistics.quantiles(wall, n=20, method="inclusive")[-1]
                    cells.append((statistics.median(wall), p95, statistics.median(cpu), queries_of(get)))
                (usage_p50, usage_p95, usage_cpu, usage_q), (limits_p50, limits_p95, _cpu, limits_q) = cells
                print(
                    f"{label:<16} {zone:<20} {name:>5} {len(window.edges) - 1:>5} {len(pieces(window)):>6} "
                    f"{rows:>7,} {events:>9,} {bucket_p50:>10.1f} {bucket_p95:>6.1f} {key_p50:>7.1f} "
                    f"{key_p95:>6.1f} {queries_of(by_bucket):>2} {usage_p50:>9.1f} {usage_p95:>6.1f} "
                    f"{usage_cpu:>5.1f} {usage_q:>2} {limits_p50:>10.1f} {limits_p95:>6.1f} {limits_q:>2}"
                )
    if explain:
        explain_read(meta["busy"], windows(now, "Asia/Kolkata")["90d"])
    traveller.stop()


def explain_read(project: int, window) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of usage_by_bucket's statement: the busy project, 90 days in India."""
    from django.db import connection

    from usage import queries

    captured = []

    def keep(execute, sql, params, many, context):
        captured.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(keep):
        queries.usage_by_bucket(project, window)
    sql, params = captured[-1]
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)
        print("\nEXPLAIN (ANALYZE, BUFFERS) of usage_by_bucket, busy project, 90 days in Asia/Kolkata:")
        for (line,) in cursor.fetchall():
            print(f"  {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default=DB_NAME, type=database_name, help=f"default {DB_NAME}")
    parser.add_argument("--events", type=int, default=10_000_000, help="events behind the rollups (default 10M)")
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=30, help="timed calls per read (default 30)")
    parser.add_argument("--pages", type=int, default=15, help="timed requests per page (default 15)")
    parser.add_argument("--keep", action="store_true", help="leave the database behind")
    parser.add_argument("--reuse", action="store_true", help="measure a database kept by --keep (no seeding)")
    parser.add_argument("--explain", action="store_true", help="also print the plan of the 90-day read in India")
    parser.add_argument("--jit-off", action="store_true", help="connect with jit=off (PostgreSQL's default is on)")
    parser.add_argument("--zone", action="append", choices=ZONES, help="measure only this zone (repeatable)")
    parser.add_argument("--range", action="append", choices=RANGES, help="measure only this range (repeatable)")
    parser.add_argument("--project", action="append", choices=list(PROJECTS), help="measure only this project")
    parser.add_argument(
        "--profile", type=int, metavar="N", default=0, help="first cProfile N Usage page requests (busy, 90 d, India)"
    )
    args = parser.parse_args()

    if not args.reuse:
        psql(f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)")
        psql(f"CREATE DATABASE {args.database}")
    try:
        setup_django(args.database)
        logging.getLogger("studio.request").setLevel(logging.WARNING)  # one line per page request otherwise
        if args.jit_off:
            from django.conf import settings

            settings.DATABASES["default"].setdefault("OPTIONS", {})["options"] = "-c jit=off"
        from django.core.management import call_command
        from django.db import connections

        if args.reuse:
            meta = read_meta()
        else:
            call_command("migrate", verbosity=0)
            start = time.perf_counter()
            print("seeding:")
            meta = seed(args.events, args.projects)
            print(f"  in all {time.perf_counter() - start:.0f} s")
        print(
            f"seeded:     {meta['events']:,} events behind {sum(meta['rows'].values()):,} rollup rows "
            f"({', '.join(f'{n:,} {g}' for g, n in meta['rows'].items())}; {meta['size']} with indexes), "
            f"ending {meta['end']:%Y-%m-%d %H:%M} UTC"
        )
        print_versions()
        print(f"load:       {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1, 5, 15 min)")
        only = {"zones": args.zone, "ranges": args.range, "projects": args.project}
        measure(meta, calls=args.calls, pages=args.pages, explain=args.explain, only=only, profile=args.profile)
        print(f"load:       {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1, 5, 15 min)")
        connections.close_all()
    finally:
        if not args.keep and not args.reuse:
            psql(f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)")


if __name__ == "__main__":
    main()
