"""Benchmark: quota:check through the fleet API's own WSGI entry against the console's middleware stack, and the
fleet entry answered from the admission store in Redis (usage.admission_redis) against the database path.

Calls studio.wsgi's two handlers in process, as gunicorn would (a WSGI environ each call), alternating them, on
PostgreSQL and Redis with production settings (DEBUG=0). Prints the wall and CPU microseconds per check of each.
`--profile N` adds a cProfile of N checks through the fleet entry from the Redis store (the top functions by their
own time), to see where a check's time goes.

    .venv/bin/python bench/fleet_entry.py                      # 3 rounds of 2,000 checks per handler
    .venv/bin/python bench/fleet_entry.py --checks 5000 --database studio_mine --redis-url redis://127.0.0.1:6379/3

Needs PostgreSQL on 127.0.0.1:5432 (trust auth for postgres), psql, and Redis (the database given is flushed).
"""

import argparse
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.api_keys_page import database_name, psql, setup_django  # noqa: E402


def environ_for(body: bytes, token: str) -> dict:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/v1/quota:check",
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/json",
        "HTTP_AUTHORIZATION": f"Bearer {token}",
    }


def time_handler(handler, body: bytes, token: str, checks: int) -> tuple[float, float]:
    """(wall µs, CPU µs) per check."""
    statuses = []

    def start_response(status, headers, exc_info=None):
        statuses.append(status)

    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(checks):
        b"".join(handler(environ_for(body, token), start_response))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert set(statuses) == {"200 OK"}, set(statuses)
    return wall / checks * 1e6, cpu / checks * 1e6


def seed_one_key(database: str, redis_url: str) -> tuple[str, str]:
    """A new database (migrated) and an empty Redis with one free-tier key and one fleet token: (raw key, token).
    The free tier's limits of gemini-2.5-flash are lifted, so that a limit (not the load) never answers."""
    psql(f"DROP DATABASE IF EXISTS {database}")
    psql(f"CREATE DATABASE {database}")
    os.environ["REDIS_URL"] = redis_url
    setup_django(database)
    import redis
    from django.core.management import call_command

    from studio.models import ApiKey, Membership, Project, User
    from usage.models import FleetToken, RateLimit

    redis.Redis.from_url(redis_url).flushdb()
    call_command("migrate", verbosity=0)
    user = User.objects.create_user("fleet-bench@bench.example", "unused-password-123")
    project = Project.objects.create(name="Bench")
    Membership.objects.create(project=project, user=user, role="owner")
    _key, raw_key = ApiKey.issue(project=project, name="bench", created_by=user)
    _token, fleet_token = FleetToken.issue(name="bench")
    RateLimit.objects.filter(tier="free", model_id="gemini-2.5-flash").update(
        rpm=2 * 10**9, tpm=2 * 10**9, rpd=2 * 10**9
    )
    return raw_key, fleet_token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", type=database_name, default="studio_bench_entry")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--checks", type=int, default=2000, help="checks per handler per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=int, default=0, help="also profile this many checks (Redis store)")
    args = parser.parse_args()

    os.environ["CONN_MAX_AGE"] = "600"
    raw_key, fleet_token = seed_one_key(args.database, args.redis_url)
    body = json.dumps(
        {"api_key": raw_key, "model": "gemini-2.5-flash", "kind": "generate", "estimated_input_tokens": 10}
    ).encode()

    from django.conf import settings

    from studio import wsgi

    # (handler, ADMISSION_STORE): the console's stack and the fleet's, both from the database, then from Redis.
    handlers = {
        "console stack, database": (wsgi.console, False),
        "fleet stack, database": (wsgi.fleet, False),
        "fleet stack, Redis store": (wsgi.fleet, True),
    }
    for handler, store in handlers.values():
        settings.ADMISSION_STORE = store
        time_handler(handler, body, fleet_token, 200)  # warm-up: catalog snapshot, connections, Lua script, store
    results = {label: [] for label in handlers}
    for _round in range(args.rounds):
        for label, (handler, store) in handlers.items():
            settings.ADMISSION_STORE = store
            results[label].append(time_handler(handler, body, fleet_token, args.checks))
    print(f"command:  {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"settings: DEBUG=0, CONN_MAX_AGE=600, PostgreSQL {args.database}, Redis {args.redis_url}; in process")
    print(f"{args.rounds} rounds of {args.checks} quota:check calls per handler, alternated; µs per check:")
    for label, runs in results.items():
        walls = ", ".join(f"{w:.0f}" for w, _ in runs)
        cpus = ", ".join(f"{c:.0f}" for _, c in runs)
        print(f"  {label:24} wall {walls} (median {statistics.median(w for w, _ in runs):.0f}); CPU {cpus}")
    if args.profile:
        import cProfile
        import pstats

        settings.ADMISSION_STORE = True
        profiler = cProfile.Profile()
        profiler.enable()
        time_handler(wsgi.fleet, body, fleet_token, args.profile)
        profiler.disable()
        print(f"profile of {args.profile} checks (fleet stack, Redis store), by PROFILE_SORT (default: own time):")
        order, lines = os.environ.get("PROFILE_SORT", "tottime"), int(os.environ.get("PROFILE_LINES", "25"))
        pstats.Stats(profiler).sort_stats(order).print_stats(lines)
    from django.db import connections

    connections.close_all()
    psql(f"DROP DATABASE IF EXISTS {args.database}")


if __name__ == "__main__":
    main()
