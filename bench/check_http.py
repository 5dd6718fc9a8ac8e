"""Benchmark: quota:check over HTTP through gunicorn with wrk: the console's stack and the database lookup (before
issue 14), the fleet's stack with the database lookup, and the fleet's stack answered from the admission store in
Redis (one round trip, no database: usage.admission_redis).

Issue 14 asks for admission measured with a native load generator against the production server, today's path and
the new one in one run. All are the same gunicorn command on the same database and Redis; only the WSGI callable
(`studio.wsgi:console`: every request through settings.MIDDLEWARE; `studio.wsgi:application`: /api/v1/ through
settings.FLEET_MIDDLEWARE) and ADMISSION_STORE (0: the database path) differ. They alternate, `--rounds` times each.

    .venv/bin/python bench/check_http.py                                   # 2 workers, wrk -c8, 15 s a run
    .venv/bin/python bench/check_http.py --connections 16 --duration 20 --redis-url redis://127.0.0.1:6379/3

Needs PostgreSQL on 127.0.0.1:5432 (trust auth for postgres), psql, Redis (the database given is flushed) and wrk.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.api_keys_page import database_name, psql  # noqa: E402
from bench.fleet_entry import seed_one_key  # noqa: E402
from bench.keys_http import HOST, run_wrk, start_gunicorn, stop_gunicorn  # noqa: E402

WRK_SCRIPT = """wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", type=database_name, default="studio_bench_check")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--connections", type=int, default=8, help="wrk's open connections (default 8)")
    parser.add_argument("--duration", type=int, default=15, help="seconds of load per run (default 15)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2, one per CPU)")
    parser.add_argument("--port", type=int, default=8198)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each stack, alternated (default 2)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")

    raw_key, fleet_token = seed_one_key(args.database, args.redis_url)
    import redis
    from django.db import connections

    connections.close_all()
    body = {"api_key": raw_key, "model": "gemini-2.5-flash", "kind": "generate", "estimated_input_tokens": 10}
    script = Path(tempfile.gettempdir()) / "check_http.lua"
    script.write_text(WRK_SCRIPT.format(body=json.dumps(json.dumps(body)), token=fleet_token))
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=os.environ, check=True
    )
    stacks = [
        ("console stack, database", "studio.wsgi:console", "0"),
        ("fleet stack, database", "studio.wsgi:application", "0"),
        ("fleet stack, Redis store", "studio.wsgi:application", "1"),
    ]
    log = open(Path(tempfile.gettempdir()) / "check_http.gunicorn.log", "w")  # noqa: SIM115
    print(f"command:    {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"server:     gunicorn --workers {args.workers} (sync), DEBUG=0, CONN_MAX_AGE=600, Redis limiter")
    print(f"load:       wrk -t2 -c{args.connections} -d{args.duration}s, POST /api/v1/quota:check, one key, admitted")
    print(f"{'path':26} {'checks/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    try:
        for _round in range(args.rounds):
            for label, app, store in stacks:
                os.environ["ADMISSION_STORE"] = store
                server = start_gunicorn(args.port, args.workers, log, app=app)
                url, load = f"http://{HOST}:{args.port}/api/v1/quota:check", ("-s", str(script))
                try:
                    run_wrk(url, connections=args.connections, duration=3, threads=2, options=load)  # warm-up
                    f = run_wrk(url, connections=args.connections, duration=args.duration, threads=2, options=load)
                finally:
                    stop_gunicorn(server)
                print(f"{label:26} {f['rps']:9.1f} {f['p50']:8.2f} {f['p90']:8.2f} {f['p99']:8.2f} {f['non2xx']:8d}")
    finally:
        log.close()
        redis.Redis.from_url(args.redis_url).flushdb()
        psql(f"DROP DATABASE IF EXISTS {args.database}")


if __name__ == "__main__":
    main()
