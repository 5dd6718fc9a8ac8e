"""Benchmark: ingestion into the month-partitioned event table, empty and with 100 million rows (issue 14).

Creates a throwaway PostgreSQL database (studio_hp_bench), migrates it, seeds 20 Tier 3 projects with a key each,
billed to an account each (fleet_http.py's seed), then times `usage.ingest.ingest()` in this process on batches of
1,000 events (fleet_http.py's generator) in phases:

1. the event table's partitions empty;
2. a third of `--rows` (33.3 million) loaded into the current Pacific month's partition in SQL, with the table's
   indexes dropped and built again afterwards (INDEXES: the primary key (id, month), the unique (event_key, month)),
   the boundary claims those events would have made (usage_usageeventguard, near the month's start and the next
   one's), VACUUM ANALYZE, and the indexes ingestion writes into read into the OS cache (pg_prewarm);
3. the other two thirds loaded into the two months before (each into a table of its own, indexed like a partition,
   then ATTACH PARTITION), measured right after the load, and
4. again after the indexes ingestion writes into were read into the OS cache, as continuous ingestion keeps them.

Each phase runs at two clocks:

- mid-month: the 15th of the current month at noon, Pacific, events of the hour before: no event within the replay
  window of a month start, so no boundary claim (one statement fewer);
- near the boundary: the 3rd at midnight, Pacific: every event within 7 days 5 minutes of the month's start, so the
  batch first claims its ids there (usage.partitions).

Per clock: `--batches` new batches (p50 / mean wall ms, events/s), then `--replays` of them sent again (all
duplicates). Per batch it also prints this process's CPU, the CPU of the connection's PostgreSQL backend (/proc), and
the wall time of the statements by kind (the boundary claim, the insert with its rollups and pending charges, the
peaks, the rest); per phase, EXPLAIN (ANALYZE, BUFFERS, WAL) of a plain INSERT of 1,000 events (rolled back): pages
read, full-page images. Prints figures; never asserts timings. The loaded events never go through ingestion: the
rollups and pending charges stay those of the measured batches.

    .venv/bin/python bench/event_partitions.py [--database studio_hp_bench] [--rows 100000000] [--batches 300]
        [--replays 50] [--loaders 2] [--chunk 5000000] [--keep] [--baseline]

`--baseline` measures the layout before (the code of BASELINE: one unpartitioned table, a unique event_id,
`ON CONFLICT (event_id)`): the database is migrated to usage 0010, `usage/ingest.py` is taken from that commit
(`git show`), and all the rows are loaded into the one table at once (phases 1, 3 and 4). Linux only (/proc).
"""

import argparse
import importlib
import os
import platform
import random
import secrets
import shlex
import statistics
import subprocess
import sys
import threading
import time
import types
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fleet_http import (
    BATCH,
    database_name,
    make_events,
    process_cpu_seconds,
    psql,
    seed,
    seed_billing,
    server_environment,
    setup_django,
)

DB_NAME = "studio_hp_bench"
ROOT = Path(__file__).resolve().parent.parent
BASELINE = "f2e7371"  # the last commit before the partitions (issue 14): one table, unique event_id
# The old table's indexes and constraints, as migrations 0001-0010 named them.
BASELINE_INDEXES = [
    "ALTER TABLE usage_usageevent ADD CONSTRAINT usage_usageevent_pkey PRIMARY KEY (id)",
    "ALTER TABLE usage_usageevent ADD CONSTRAINT one_usage_event_per_id UNIQUE (event_id)",
    "CREATE INDEX usage_event_project_time ON usage_usageevent (project_id, occurred_at)",
]
# The partitioned table's indexes and constraints, as migrations 0011, 0012 and 0015 left them.
INDEXES = [
    "ALTER TABLE usage_usageevent ADD CONSTRAINT usage_usageevent_pkey PRIMARY KEY (id, month)",
    "ALTER TABLE usage_usageevent ADD CONSTRAINT one_usage_event_per_key_and_month UNIQUE (event_key, month)",
]
MONTHS = 3
MODELS = ["gemini-2.5-flash", "gemini-2.0-flash", "gemini-2.5-pro"]
KINDS = {
    "CLAIM": "boundary claim",
    "INSERT_AND_ROLL_UP": "insert + rollups",
    "PEAKS": "peaks",
    "FOLD": "fold (rollups, peaks)",
    "OTHER": "other",
}


# --- timing ---------------------------------------------------------------------------------------------------


class StatementClock:
    """A connection.execute_wrapper: wall seconds per kind of statement (COPY is not executed through it: "other"
    below is the staging statement and the lookups; the COPY is in the batch's wall time only)."""

    def __init__(self, ingest):
        self.ingest = ingest
        self.seconds: dict[str, float] = defaultdict(float)

    def __call__(self, execute, sql, params, many, context):
        from usage import fold, peaks

        ingest = self.ingest
        old_peaks = getattr(ingest, "_baseline_peaks", peaks)
        if sql in (getattr(ingest, "CLAIM_NEAR_BOUNDARY", None), getattr(ingest, "RELEASE_CLAIMS", None)):
            kind = "CLAIM"
        elif sql in (ingest.INSERT_AND_ROLL_UP, getattr(ingest, "INSERT_NEW", None)):
            kind = "INSERT_AND_ROLL_UP"
        elif sql in (getattr(old_peaks, "LOCK_HOURS", None), getattr(old_peaks, "RAISE_PEAKS", None)):
            kind = "PEAKS"  # the baseline's: kept in the ingestion transaction
        elif sql in (getattr(fold, "FOLD", None), getattr(peaks, "RAISE_FOLDED_PEAKS", None)):
            kind = "FOLD"
        else:
            kind = "OTHER"
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.seconds[kind] += time.perf_counter() - started


def backend_pid() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def baseline_ingest() -> types.ModuleType:
    """usage/ingest.py as it was at BASELINE, as a module of its own, with the usage/peaks.py of BASELINE (which kept
    the peaks in the ingestion transaction; today's leaves that to usage.fold); the rest of the code is today's."""
    peaks = types.ModuleType("usage_peaks_baseline")
    exec(compile(_source_at_baseline("usage/peaks.py"), f"usage/peaks.py@{BASELINE}", "exec"), peaks.__dict__)
    source = _source_at_baseline("usage/ingest.py").replace(
        "from usage.peaks import update_peaks\n", "update_peaks = _baseline_peaks.update_peaks\n"
    )
    module = types.ModuleType("usage_ingest_baseline")
    module.__dict__["_baseline_peaks"] = peaks
    exec(compile(source, f"usage/ingest.py@{BASELINE}", "exec"), module.__dict__)
    return module


def _source_at_baseline(path: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{BASELINE}:{path}"], capture_output=True, text=True, check=True
    ).stdout


def measure(label, key_ids, clocks: dict[str, datetime], batches: int, replays: int, seed_: int, module) -> None:
    from django.db import connection

    ingest = module.ingest

    rng = random.Random(seed_)
    for clock_name, clock in clocks.items():
        bodies = [make_events(rng, key_ids, BATCH, clock) for _ in range(batches + 2)]
        for events in bodies[:2]:  # warm-up: catalog, staging tables, the backend's caches
            ingest(events, now=clock)
        pid = backend_pid()
        walls, cpus, pg_cpus = [], [], []
        statements = StatementClock(module)
        with connection.execute_wrapper(statements):
            for events in bodies[2:]:
                wall, cpu, pg = time.perf_counter(), time.process_time(), process_cpu_seconds(pid)
                report = ingest(events, now=clock)
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
                pg_cpus.append(process_cpu_seconds(pid) - pg)
                assert (report.accepted, report.duplicates, report.rejected) == (BATCH, 0, []), report
        replay_walls = []
        for events in bodies[2 : 2 + replays]:
            wall = time.perf_counter()
            report = ingest(events, now=clock)
            replay_walls.append(time.perf_counter() - wall)
            assert (report.accepted, report.duplicates) == (0, BATCH), report
        mean = statistics.fmean(walls)
        per_kind = ", ".join(
            f"{KINDS[kind]} {statements.seconds[kind] / batches * 1000:.1f}"
            for kind in KINDS
            if statements.seconds[kind]
        )
        print(
            f"  {label}, {clock_name} ({clock:%Y-%m-%d %H:%M %Z}): {batches} batches: p50 "
            f"{statistics.median(walls) * 1000:.1f} ms, mean {mean * 1000:.1f} ms = {BATCH / mean:,.0f} events/s; "
            f"per batch: this process's CPU {statistics.fmean(cpus) * 1000:.1f} ms, PostgreSQL backend CPU "
            f"{statistics.fmean(pg_cpus) * 1000:.1f} ms; statements' wall ms: {per_kind}"
        )
        if replays:
            print(
                f"    {replays} of them sent again (all duplicates): p50 "
                f"{statistics.median(replay_walls) * 1000:.1f} ms, mean {statistics.fmean(replay_walls) * 1000:.1f} ms"
            )
        sys.stdout.flush()


# --- loading --------------------------------------------------------------------------------------------------

ID_SQL = "'evt-' || md5(%(salt)s || n::text)"  # a loaded event's id
LOAD = """
INSERT INTO {partition} (id, event_id, kind, source, status_code, input_tokens, output_tokens, cached_tokens,
    cache_token_hours, occurred_at, received_at, billable, counts_against_quota, cost, cost_input, cost_output,
    cost_cached, cost_storage, api_key_id, model_id, price_id, project_id, audio_input_tokens, cached_audio_tokens,
    cost_audio, cost_cached_audio, account_id, long_prompt{month_column})
SELECT n, {id}, 'generate', 'api', 200, t.input, t.output, 0, 0,
       t.at, t.at + interval '2 seconds', true, true,
       (t.input * 0.0000003 + t.output * 0.0000025)::numeric(20, 9), (t.input * 0.0000003)::numeric(20, 9),
       (t.output * 0.0000025)::numeric(20, 9), 0, 0,
       (%(keys)s::bigint[])[1 + n %% %(projects)s], (%(models)s::text[])[1 + n %% 3],
       (%(prices)s::bigint[])[1 + n %% 3], (%(project_ids)s::bigint[])[1 + n %% %(projects)s], 0, 0, 0, 0,
       (%(accounts)s::bigint[])[1 + n %% %(projects)s], false{month_value}
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS n
CROSS JOIN LATERAL (
    SELECT %(start)s::timestamptz + %(span)s::interval * ((n - %(month_first)s)::float8 / %(month_rows)s) AS at,
           100 + (n * 7919) %% 5000 AS input, (n * 104729) %% 800 AS output
) AS t
"""


def _work(months: list, first_id: int, per_month: int, chunk: int, ids: dict, table_of) -> list[dict]:
    """The loading statements' parameters: `per_month` events per month, ids from `first_id`, time-ordered."""
    from billing.statements import month_start, next_month
    from usage.catalog import get_catalog

    catalog = get_catalog()
    work = []
    for at, month in enumerate(months):
        first = first_id + at * per_month
        start, end = month_start(month), month_start(next_month(month))
        prices = [catalog.price_at(model, start).id for model in MODELS]
        for low in range(first, first + per_month, chunk):
            work.append(
                {
                    "table": table_of(month),
                    "salt": secrets.token_hex(4),
                    "keys": ids["keys"],
                    "projects": len(ids["keys"]),
                    "models": MODELS,
                    "prices": prices,
                    "project_ids": ids["projects"],
                    "accounts": ids["accounts"],
                    "month": month,
                    "first": low,
                    "last": min(low + chunk, first + per_month) - 1,
                    "start": start,
                    "span": end - start,
                    "month_first": first,
                    "month_rows": per_month,
                }
            )
    return work


def _extra(*, baseline: bool) -> dict[str, str]:
    """LOAD's format fields: the id, and the columns the partitioned table has and the baseline's had not (the month
    and the key)."""
    from usage.models import EVENT_KEY_SQL

    if baseline:
        return {"id": ID_SQL, "month_column": "", "month_value": ""}
    return {
        "id": ID_SQL,
        "month_column": ", month, event_key",
        "month_value": f", %(month)s, {EVENT_KEY_SQL.format(ID_SQL)}",
    }


def _fill(work: list[dict], loaders: int, *, month_column: bool) -> None:
    """Run the loading statements on `loaders` connections at once, printing progress."""
    import psycopg
    from django.db import connection

    dsn = "postgresql://postgres@127.0.0.1:5432/" + connection.settings_dict["NAME"]
    extra = _extra(baseline=not month_column)
    started = time.perf_counter()
    done, lock, failures = [0], threading.Lock(), []

    def loader():
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET synchronous_commit = off")
            while True:
                with lock:
                    if not work or failures:
                        return
                    item = work.pop(0)
                try:
                    conn.execute(LOAD.format(partition=item["table"], **extra), item)
                except Exception as error:  # reported by the main thread
                    failures.append(error)
                    return
                with lock:
                    done[0] += item["last"] - item["first"] + 1
                    elapsed = time.perf_counter() - started
                    print(f"    {done[0]:,} rows in {elapsed:.0f} s ({done[0] / elapsed:,.0f} rows/s)", flush=True)

    threads = [threading.Thread(target=loader) for _ in range(loaders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    print(f"  rows: {time.perf_counter() - started:.0f} s", flush=True)


def _run_timed(cursor, statements: list[str], title: str) -> None:
    started = time.perf_counter()
    cursor.execute("SET maintenance_work_mem = '2GB'")
    cursor.execute("SET max_parallel_maintenance_workers = 2")
    for statement in statements:
        began = time.perf_counter()
        cursor.execute(statement)
        print(f"    {statement[:100]}: {time.perf_counter() - began:.0f} s", flush=True)
    print(f"  {title}: {time.perf_counter() - started:.0f} s", flush=True)


def _next_id(cursor) -> int:
    cursor.execute("SELECT coalesce(max(id), 0) + 1 FROM usage_usageevent")
    return cursor.fetchone()[0]


def _set_sequence(cursor) -> None:
    cursor.execute("SELECT setval(pg_get_serial_sequence('usage_usageevent', 'id'), max(id)) FROM usage_usageevent")


def load_one_table(per_month: int, months: list, ids: dict, loaders: int, chunk: int) -> None:
    """The baseline: every month into the one table, its indexes dropped while loading and built again after."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE usage_usageevent DROP CONSTRAINT usage_usageevent_pkey")
        cursor.execute("ALTER TABLE usage_usageevent DROP CONSTRAINT one_usage_event_per_id")
        cursor.execute("DROP INDEX usage_event_project_time")
        cursor.execute("ALTER TABLE usage_usageevent SET (autovacuum_enabled = false)")
        first = _next_id(cursor)
    _fill(_work(months, first, per_month, chunk, ids, lambda month: "usage_usageevent"), loaders, month_column=False)
    with connection.cursor() as cursor:
        _set_sequence(cursor)
        _run_timed(cursor, BASELINE_INDEXES, "indexes")
        _run_timed(
            cursor,
            ["VACUUM (ANALYZE) usage_usageevent", "ALTER TABLE usage_usageevent RESET (autovacuum_enabled)"],
            "vacuum analyze",
        )


def load_current_month(per_month: int, current, ids: dict, loaders: int, chunk: int) -> None:
    """The current month's partition, the table's indexes dropped while loading and built again after (by the
    migration's own statements), then the claims its events near the month's start and end made."""
    from django.db import connection

    from usage import partitions

    name = partitions.partition_name(partitions.RAW, current)
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE usage_usageevent DROP CONSTRAINT usage_usageevent_pkey")
        cursor.execute("ALTER TABLE usage_usageevent DROP CONSTRAINT one_usage_event_per_key_and_month")
        cursor.execute("DROP INDEX IF EXISTS usage_event_project_time")  # migration 0012 dropped it
        cursor.execute(f"ALTER TABLE {name} SET (autovacuum_enabled = false)")
        first = _next_id(cursor)
    _fill(_work([current], first, per_month, chunk, ids, lambda month: name), loaders, month_column=True)
    with connection.cursor() as cursor:
        _set_sequence(cursor)
        _run_timed(cursor, INDEXES, "indexes")
    _claims(first)
    with connection.cursor() as cursor:
        _run_timed(
            cursor,
            [f"VACUUM (ANALYZE) {name}", f"ALTER TABLE {name} RESET (autovacuum_enabled)", "ANALYZE usage_usageevent"],
            "vacuum analyze",
        )


def load_older_months(per_month: int, months: list, ids: dict, loaders: int, chunk: int) -> None:
    """Older months as ingestion's partitions would be by then: each loaded into a table of its own, indexed like a
    partition, and attached (ATTACH PARTITION finds its indexes), then the claims near the current month's start."""
    from django.db import connection

    from billing.statements import next_month
    from usage import partitions

    names = {month: partitions.partition_name(partitions.RAW, month) for month in months}
    with connection.cursor() as cursor:
        for name in names.values():
            cursor.execute(f"ALTER TABLE usage_usageevent DETACH PARTITION {name}")
            cursor.execute(f"DROP TABLE {name}")
            cursor.execute(f"CREATE TABLE {name} (LIKE usage_usageevent) WITH (autovacuum_enabled = false)")
        first = _next_id(cursor) + 10**9  # clear of the ids ingestion takes meanwhile
    _fill(_work(months, first, per_month, chunk, ids, names.get), loaders, month_column=True)
    with connection.cursor() as cursor:
        statements = []
        for month, name in names.items():
            statements += [
                f"ALTER TABLE {name} ADD PRIMARY KEY (id, month)",
                f"ALTER TABLE {name} ADD UNIQUE (event_key, month)",
                f"ALTER TABLE usage_usageevent ATTACH PARTITION {name} "
                f"FOR VALUES FROM ('{month.isoformat()}') TO ('{next_month(month).isoformat()}')",
            ]
        _run_timed(cursor, statements, "indexes and attach")
    _claims(first)
    with connection.cursor() as cursor:
        statements = [f"VACUUM (ANALYZE) {name}" for name in names.values()]
        statements += [f"ALTER TABLE {name} RESET (autovacuum_enabled)" for name in names.values()]
        _run_timed(cursor, [*statements, "ANALYZE usage_usageevent"], "vacuum analyze")


def _claims(first_id: int) -> None:
    """The claims ingestion would have made for the loaded events (ids from `first_id`) near the current month's
    start and the next month's: the boundaries a report can still meet at the measured clocks (the claims of older
    boundaries are dropped by then)."""
    from django.db import connection

    from billing.statements import month_of, month_start, next_month

    migration = importlib.import_module("usage.migrations.0011_partitioned_usage_events")
    current = month_of(datetime.now(UTC))
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE usage_usageeventguard DROP CONSTRAINT usage_usageeventguard_pkey")
        for boundary in (current, next_month(current)):
            cursor.execute(
                f"INSERT INTO usage_usageeventguard (boundary, event_key) SELECT boundary, event_key FROM "
                f"(SELECT event_key, {migration.BOUNDARY_SQL} AS boundary FROM usage_usageevent "
                f"WHERE occurred_at >= %s AND occurred_at < %s AND id >= %s) AS near WHERE boundary = %s",
                [
                    month_start(boundary) - migration.WINDOW - timedelta(hours=1),
                    month_start(boundary) + migration.WINDOW + timedelta(hours=1),
                    first_id,
                    boundary,
                ],
            )
        cursor.execute(
            "ALTER TABLE usage_usageeventguard ADD CONSTRAINT usage_usageeventguard_pkey "
            "PRIMARY KEY (boundary, event_key)"
        )
        cursor.execute("VACUUM (ANALYZE) usage_usageeventguard")
        cursor.execute("SELECT count(*) FROM usage_usageeventguard")
        claims = cursor.fetchone()[0]
    print(f"  boundary claims: {claims:,} in all, {time.perf_counter() - started:.0f} s", flush=True)


def prewarm(current, *, baseline: bool) -> None:
    """Read the indexes ingestion writes into (the current month's partition's and its boundary claims', or the one
    table's) into the OS cache, where continuous ingestion keeps them; a bulk load of older months pushes them out."""
    from django.db import connection

    from billing.statements import next_month
    from usage import partitions

    tables = (
        [partitions.RAW]
        if baseline
        else [
            partitions.partition_name(partitions.RAW, current),
            partitions.partition_name(partitions.GUARD, current),
            partitions.partition_name(partitions.GUARD, next_month(current)),
        ]
    )
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        blocks = 0
        for table in tables:
            cursor.execute(
                "SELECT sum(pg_prewarm(indexrelid, 'read')) FROM pg_index WHERE indrelid = %s::regclass", [table]
            )
            blocks += cursor.fetchone()[0]
    print(f"  indexes read into the OS cache: {blocks * 8 / 2**20:.2f} GiB in {time.perf_counter() - started:.0f} s")


PROBE_ROWS = 1000


def probe(clock: datetime, ids: dict, *, baseline: bool, times: int = 5) -> None:
    """What inserting 1,000 new events into the month of `clock` costs PostgreSQL, from EXPLAIN (ANALYZE, BUFFERS,
    WAL) of a plain INSERT of them (rolled back): the medians of `times` tries. Explains the batches' times: pages
    read into shared buffers, and WAL full-page images (the first change of a page after a checkpoint)."""

    import psycopg
    from django.db import connection

    from billing.statements import month_of

    month = month_of(clock)
    dsn = "postgresql://postgres@127.0.0.1:5432/" + connection.settings_dict["NAME"]
    extra = _extra(baseline=baseline)
    samples = defaultdict(list)
    with psycopg.connect(dsn) as conn:
        for _ in range(times):
            item = _work([month], 10**12 + random.getrandbits(32), PROBE_ROWS, PROBE_ROWS, ids, lambda m: "")[0]
            sql = "EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) " + LOAD.format(partition="usage_usageevent", **extra)
            (plan,) = conn.execute(sql, item).fetchone()[0]
            conn.rollback()
            node = plan["Plan"]
            samples["ms"].append(plan["Execution Time"])
            for key in ("Shared Hit Blocks", "Shared Read Blocks", "Shared Dirtied Blocks", "Shared Written Blocks"):
                samples[key].append(node[key])
            for key in ("WAL Records", "WAL FPI", "WAL Bytes"):
                samples[key].append(node.get(key, 0))
    median = {key: statistics.median(values) for key, values in samples.items()}
    print(
        f"    an INSERT of {PROBE_ROWS:,} events (EXPLAIN ANALYZE, median of {times}): {median['ms']:.1f} ms; "
        f"shared buffers hit {median['Shared Hit Blocks']:,.0f}, read {median['Shared Read Blocks']:,.0f}, dirtied "
        f"{median['Shared Dirtied Blocks']:,.0f}, written {median['Shared Written Blocks']:,.0f}; WAL "
        f"{median['WAL Records']:,.0f} records, {median['WAL FPI']:,.0f} full-page images, "
        f"{median['WAL Bytes'] / 2**20:.1f} MiB",
        flush=True,
    )


def print_sizes(baseline: bool) -> None:
    from django.db import connection

    from usage import partitions

    tables = [] if baseline else [p.name for t in (partitions.RAW, partitions.GUARD) for p in partitions.partitions(t)]
    with connection.cursor() as cursor:
        for name in tables or [partitions.RAW]:  # the one table of the baseline
            cursor.execute("SELECT pg_relation_size(%s::regclass), pg_indexes_size(%s::regclass)", [name, name])
            heap, indexes = cursor.fetchone()
            cursor.execute(f"SELECT count(*) FROM {name}")
            rows = cursor.fetchone()[0]
            if rows:
                print(f"  {name}: {rows:,} rows, heap {heap / 2**30:.2f} GiB, indexes {indexes / 2**30:.2f} GiB")


def disk_free() -> str:
    return subprocess.run(["df", "-h", "--output=avail", "/"], capture_output=True, text=True).stdout.split()[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database", default=DB_NAME, type=database_name, help=f"database to drop, create and use (default {DB_NAME})"
    )
    parser.add_argument("--rows", type=int, default=100_000_000, help="events loaded over the three months")
    parser.add_argument("--batches", type=int, default=300, help="timed batches of 1,000 events per phase and clock")
    parser.add_argument("--replays", type=int, default=50, help="of those, sent again (all duplicates)")
    parser.add_argument("--loaders", type=int, default=2, help="connections loading at once")
    parser.add_argument("--chunk", type=int, default=5_000_000, help="rows per loading statement")
    parser.add_argument("--keep", action="store_true", help="leave the database behind")
    parser.add_argument("--baseline", action="store_true", help=f"the unpartitioned table and ingestion of {BASELINE}")
    args = parser.parse_args()

    psql(f"DROP DATABASE IF EXISTS {args.database}")
    psql(f"CREATE DATABASE {args.database}")
    setup_django({**server_environment(args.database, ""), "CONN_MAX_AGE": "0"})
    from django.core.management import call_command
    from django.db import connection

    from billing.statements import PACIFIC, month_of, month_start, previous_month
    from usage import ingest, partitions

    current = month_of(datetime.now(PACIFIC))
    months = [current]
    while len(months) < MONTHS:
        months.insert(0, previous_month(months[0]))
    clocks = {
        "mid-month": datetime(current.year, current.month, 15, 12, tzinfo=PACIFIC),
        "near the boundary": datetime(current.year, current.month, 3, tzinfo=PACIFIC),
    }
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        (pg_version,) = cursor.fetchone()
        cursor.execute("SHOW shared_buffers")
        (shared_buffers,) = cursor.fetchone()
    print(f"command:    {shlex.join(sys.orig_argv)}")
    print(
        f"versions:   python {platform.python_version()}, postgresql {pg_version} (shared_buffers {shared_buffers}); "
        f"{os.cpu_count()} CPUs, shared; disk free {disk_free()}"
    )
    module = baseline_ingest() if args.baseline else ingest
    print(f"layout:     {f'one table, unique event_id ({BASELINE})' if args.baseline else 'partitioned by month'}")
    call_command("migrate", verbosity=0)
    if args.baseline:
        call_command("migrate", "usage", "0010_quota_increases", verbosity=0)
    else:
        partitions.ensure(months)
    seeded = seed()
    accounts = seed_billing(seeded.user_id, seeded.project_ids, since=month_start(months[0]) - timedelta(days=1))
    ids = {"keys": seeded.key_ids, "projects": seeded.project_ids, "accounts": accounts}
    per_month = args.rows // MONTHS

    def phase(label: str, seed_: int, *, warm: bool = False) -> None:
        if warm:
            prewarm(current, baseline=args.baseline)
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM usage_usageevent")
            load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
            print(f"\n{label}: {cursor.fetchone()[0]:,} events stored (load average {load})", flush=True)
        print_sizes(args.baseline)
        measure(label, seeded.key_ids, clocks, args.batches, args.replays, seed_=seed_, module=module)
        probe(clocks["mid-month"], ids, baseline=args.baseline)

    phase("empty", 1)
    started = time.perf_counter()
    if args.baseline:
        print(f"\nloading {per_month * MONTHS:,} events over {', '.join(f'{m:%Y-%m}' for m in months)}:", flush=True)
        load_one_table(per_month, months, ids, args.loaders, args.chunk)
    else:
        print(f"\nloading {per_month:,} events into {current:%Y-%m}:", flush=True)
        load_current_month(per_month, current, ids, args.loaders, args.chunk)
        print(f"  loaded in {(time.perf_counter() - started) / 60:.1f} min; disk free {disk_free()}", flush=True)
        phase("the current month loaded", 2, warm=True)
        started = time.perf_counter()
        older = months[:-1]
        print(f"\nloading {per_month * len(older):,} events into {', '.join(f'{m:%Y-%m}' for m in older)}:")
        load_older_months(per_month, older, ids, args.loaders, args.chunk)
    print(f"  loaded in {(time.perf_counter() - started) / 60:.1f} min; disk free {disk_free()}", flush=True)
    phase(f"{MONTHS} months loaded, right after the load", 3)
    phase(f"{MONTHS} months loaded, the indexes ingestion writes into read first", 4, warm=True)
    connection.close()
    if not args.keep:
        psql(f"DROP DATABASE {args.database}")
        print(f"\ndropped {args.database}; disk free {disk_free()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
