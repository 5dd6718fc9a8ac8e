"""Benchmark: what one charge run (usage.charging.charge_pending) costs, by accounts and by events.

In-process, without HTTP. Creates a throwaway PostgreSQL database, seeds 1,001 billed Tier 3 projects (one key and one
billing account each, with bench/fleet_http.py's seed and seed_billing; the last one only warms up), then for each
case, a few rounds of:

1. report events for the case's accounts through usage.ingest.ingest (the real path: validated, rated, stored, and
   added to the pending charges in the same statement), in batches of 1,000 of fleet_http's mix (three models, 5 %
   failed, some batch, count_tokens and cache storage), spread evenly over the accounts' keys;
2. time charge_pending(): wall and CPU milliseconds of this process, CPU of its PostgreSQL backend, SQL queries
   (CaptureQueriesContext), and per account and per line.

Cases: 10 and 1,000 accounts with usage, each with --events events (default 20,000) and with 10× as many, so that
one sees what the cost follows: accounts and statement lines (ingestion already summed the events), not events.

    .venv/bin/python bench/charge_run.py [--events 20000] [--rounds 3] [--accounts 10 1000] [--no-tenfold] [--profile]
        [--database studio_bench_charge] [--redis-url redis://127.0.0.1:6379/14] [--keep]

Each round also prints "other": the share of the machine's CPUs that other processes (someone's tests, another
benchmark) used while it ran. The machine is shared: with "other" high, wall times are long and CPU times are the
figures to compare.
"""

import argparse
import os
import random
import secrets
import signal
import statistics
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import fleet_http  # bench/fleet_http.py: this script's directory is on sys.path
from fleet_http import BATCH, make_events

DB_NAME = "studio_bench_charge"
ACCOUNTS = (10, 1000)
MORE_EVENTS = 10


class Measured(NamedTuple):
    accounts: int  # charged
    lines: int
    wall: float  # seconds
    cpu: float  # seconds of this process
    backend_cpu: float  # seconds of its PostgreSQL backend
    queries: int
    other: float  # share of all the machine's CPUs used meanwhile by other processes (e.g. someone's tests)


def report_usage(rng: random.Random, key_ids: list[int], events: int) -> None:
    """`events` new events over `key_ids` (as evenly as chance makes it), through usage.ingest.ingest."""
    from usage.ingest import ingest

    now = datetime.now(UTC)
    for start in range(0, events, BATCH):
        batch = make_events(rng, key_ids, min(BATCH, events - start), now)
        report = ingest(batch)
        if report.accepted != len(batch):
            raise AssertionError(f"ingest accepted {report.accepted} of {len(batch)}: {report.rejected[:1]}")


class QueryCounter:
    """A connection.execute_wrapper counting statements by their first word (CaptureQueriesContext keeps at most
    9,000 and needs the debug cursor)."""

    def __init__(self):
        self.kinds: Counter[str] = Counter()

    def __call__(self, execute, sql, params, many, context):
        self.kinds[sql.lstrip().split(None, 1)[0].upper()] += 1
        return execute(sql, params, many, context)


def machine_cpu(backend: int) -> dict[str, float]:
    """CPU seconds so far: this process and its backend ("run"), the rest of this database's PostgreSQL, the machine's
    busy and total (fleet_http.cpu_seconds, without a server or clients)."""
    return fleet_http.cpu_seconds(-1, set(), {"run": {os.getpid(), backend}})


def charge_once(backend: int) -> tuple[Measured, Counter[str]]:
    """One timed charge_pending(); also returns its statements by kind."""
    from django.db import connection

    from usage.charging import charge_pending

    counter = QueryCounter()
    machine = machine_cpu(backend)
    with connection.execute_wrapper(counter):
        backend_cpu = fleet_http.process_cpu_seconds(backend)
        started, cpu = time.perf_counter(), time.process_time()
        run = charge_pending()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        backend_cpu = fleet_http.process_cpu_seconds(backend) - backend_cpu
    used = {group: seconds - machine[group] for group, seconds in machine_cpu(backend).items()}
    other = used["busy"] - sum(seconds for group, seconds in used.items() if group not in ("busy", "total"))
    measured = Measured(
        run.accounts, run.lines, wall, cpu, backend_cpu, counter.kinds.total(), max(other, 0) / used["total"]
    )
    return measured, counter.kinds


def line(label: str, measured: Measured) -> str:
    per_account = measured.wall / max(measured.accounts, 1) * 1000
    per_line = measured.wall / max(measured.lines, 1) * 1000
    return (
        f"  {label:<24} {measured.accounts:5,.0f} accounts {measured.lines:6,.0f} lines   "
        f"wall {measured.wall * 1000:8,.0f} ms   "
        f"CPU {measured.cpu * 1000:7,.0f} ms + PostgreSQL {measured.backend_cpu * 1000:6,.0f} ms   "
        f"{measured.queries:6,.0f} queries   {per_account:5.2f} ms/account   {per_line:5.2f} ms/line   "
        f"other {measured.other:.0%}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per round of the smaller cases")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (report, then charge) per case (default 3)")
    parser.add_argument(
        "--accounts", type=int, nargs="+", default=ACCOUNTS, choices=ACCOUNTS, help="cases' accounts (default: both)"
    )
    parser.add_argument(
        "--tenfold",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the cases with 10× the events (default: yes)",
    )
    parser.add_argument("--profile", action="store_true", help="also cProfile one more run of the largest case")
    fleet_http.add_target_arguments(parser, DB_NAME)
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))
    environment = fleet_http.server_environment(args.database, args.redis_url)
    fleet_http.psql(f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)")
    fleet_http.psql(f"CREATE DATABASE {args.database}")
    try:
        fleet_http.setup_django(environment)
        from django.core.management import call_command
        from django.db import connection

        call_command("migrate", verbosity=0)
        started = time.perf_counter()
        seeded = fleet_http.seed(max(ACCOUNTS) + 1)
        fleet_http.seed_billing(seeded.user_id, seeded.project_ids, since=datetime.now(UTC) - timedelta(hours=2))
        print(
            f"seeded:     {max(ACCOUNTS) + 1:,} billed Tier 3 projects, one key and billing account each, "
            f"in {time.perf_counter() - started:.1f} s"
        )
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid(), current_setting('server_version')")
            backend, pg_version = cursor.fetchone()
        print(f"command:    {' '.join(sys.orig_argv)}")
        print(f"versions:   python {sys.version.split()[0]}, PostgreSQL {pg_version}; DEBUG=0, in-process")
        rng = random.Random(secrets.randbits(64))

        report_usage(rng, seeded.key_ids[-1:], BATCH)  # warm-up: imports, catalog, staging table, first charge
        charge_once(backend)

        sizes = (args.events, args.events * MORE_EVENTS) if args.tenfold else (args.events,)
        cases = [(accounts, events) for accounts in args.accounts for events in sizes]
        summary = []
        for accounts, events in cases:
            print(f"\n{accounts:,} accounts with usage, {events:,} events before each run:")
            rounds = []
            for number in range(1, args.rounds + 1):
                started = time.perf_counter()
                report_usage(rng, seeded.key_ids[:accounts], events)
                reported = time.perf_counter() - started
                measured, kinds = charge_once(backend)
                rounds.append(measured)
                print(line(f"round {number}", measured) + f"   (reported in {reported:.1f} s)")
            by_kind = ", ".join(f"{kind} {n:,}" for kind, n in kinds.most_common())
            per_account = kinds.total() / max(measured.accounts, 1)
            print(f"  statements (last round): {by_kind}; {per_account:.2f} per account charged")
            median = Measured(*(statistics.median(values) for values in zip(*rounds, strict=True)))
            summary.append((accounts, events, median))

        print("\nmedians:")
        for accounts, events, median in summary:
            print(line(f"{accounts:,} × {events:,} events", median))

        if args.profile:
            import cProfile
            import pstats

            report_usage(rng, seeded.key_ids[: max(ACCOUNTS)], args.events)
            from usage.charging import charge_pending

            profiler = cProfile.Profile()
            profiler.enable()
            charge_pending()
            profiler.disable()
            print(f"\ncProfile of one charge run over {max(ACCOUNTS):,} accounts, top 25 by cumulative time:")
            pstats.Stats(profiler).strip_dirs().sort_stats("cumulative").print_stats(25)
        connection.close()
        return 0
    finally:
        if not args.keep:
            fleet_http.psql(f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)")


if __name__ == "__main__":
    sys.exit(main())
