"""Benchmark: the API keys page and the admin changelist of the same 100 keys, over HTTP through gunicorn, with wrk.

Issue 14 asks the keys page to be at least as fast as the admin and p50 <= 25 ms, measured through the production
server with a native load generator (so that the client does not eat the server's CPUs). This script:

1. drops, creates and migrates a database and seeds it as bench/api_keys_page.py does (10,000 keys; the bench user
   sees 100 of them, in every Quota tier state);
2. signs the bench user and a superuser in (a session row each, as the sign-in view would write);
3. starts `gunicorn studio.wsgi --workers 2` with production settings (DEBUG=0, persistent connections, the cached
   template loader, STAFF_REQUIRE_2FA=0: the admin's gate is one attribute check for a verified session);
4. runs `wrk --latency` against each page in turn, signed in, and prints requests/s and the latency percentiles.

    .venv/bin/python bench/keys_http.py                       # 2 connections, 20 s a page
    .venv/bin/python bench/keys_http.py --connections 4 --duration 30 --database studio_mine

Needs PostgreSQL on 127.0.0.1:5432 (trust auth for postgres), psql and wrk (`apt-get install wrk`).
"""

import argparse
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.api_keys_page import (  # noqa: E402
    ADMIN_EMAIL,
    ADMIN_ROW,
    BENCH_EMAIL,
    KEY_ROW,
    database_name,
    psql,
    seed,
    setup_django,
)

HOST = "127.0.0.1"


def sign_in(email: str) -> str:
    """A session for `email`, as django.contrib.auth.login would store it; returns its key (the cookie)."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    from studio.models import User

    user = User.objects.get(email=email)
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return session.session_key


def start_gunicorn(port: int, workers: int, log, *, app: str = "studio.wsgi") -> subprocess.Popen:
    """gunicorn serving `app` with the environment's production settings, once it answers /healthz."""
    gunicorn = Path(sys.executable).with_name("gunicorn")
    command = [str(gunicorn), app, "--workers", str(workers), "--bind", f"{HOST}:{port}", "--no-control-socket"]
    environment = {**os.environ, "ALLOWED_HOSTS": HOST, "CONN_MAX_AGE": "600", "LOG_LEVEL": "WARNING"}
    server = subprocess.Popen(
        command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"gunicorn exited with status {server.returncode}")
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=5)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return server
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer within 30 s")


def stop_gunicorn(server: subprocess.Popen) -> None:
    os.killpg(server.pid, 15)  # the master stops its workers
    server.wait(timeout=15)


def check(port: int, path: str, session: str, marker: str, rows: int) -> None:
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    connection.request("GET", path, headers={"Cookie": f"sessionid={session}"})
    response = connection.getresponse()
    body = response.read().decode()
    assert response.status == 200, f"{path}: HTTP {response.status}"
    assert body.count(marker) == rows, f"{path}: {body.count(marker)} rows, not {rows}"


def run_wrk(url: str, *, connections: int, duration: int, threads: int = 1, options: tuple = ()) -> dict:
    """wrk --latency against `url`: requests/s, p50/p90/p99 in ms and the count of non-2xx/3xx answers."""
    command = ["wrk", "--latency", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", *options, url]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    figures = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for percentile in ("50", "90", "99"):
        value, unit = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\b", out, re.M).groups()
        figures[f"p{percentile}"] = float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    figures["non2xx"] = int(errors.group(1)) if errors else 0
    return figures


def signed_in_wrk(port: int, path: str, session: str, *, connections: int, duration: int) -> dict:
    cookie = ("-H", f"Cookie: sessionid={session}")
    return run_wrk(f"http://{HOST}:{port}{path}", connections=connections, duration=duration, options=cookie)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", type=database_name, default="studio_bench_http")
    parser.add_argument("--connections", type=int, default=2, help="wrk's open connections (default 2)")
    parser.add_argument("--duration", type=int, default=20, help="seconds of load per page (default 20)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2, one per CPU)")
    parser.add_argument("--port", type=int, default=8199)
    parser.add_argument("--rounds", type=int, default=2, help="each page this many times, alternated (default 2)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")

    psql(f"DROP DATABASE IF EXISTS {args.database}")
    psql(f"CREATE DATABASE {args.database}")
    setup_django(args.database)
    os.environ["STAFF_REQUIRE_2FA"] = "0"
    from django.core.management import call_command

    from studio.models import User

    call_command("migrate", verbosity=0)
    seed()
    bench_user = User.objects.get(email=BENCH_EMAIL)
    pages = [
        ("/api-keys/ as the user", sign_in(BENCH_EMAIL), "/api-keys/", KEY_ROW),
        (
            "admin changelist, same 100 keys",
            sign_in(ADMIN_EMAIL),
            f"/admin/studio/apikey/?created_by__id__exact={bench_user.pk}",
            ADMIN_ROW,
        ),
    ]
    from django.db import connections

    connections.close_all()
    # As a deployment does: the manifest storage of DEBUG=0 serves hashed names from STATIC_ROOT.
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=os.environ, check=True
    )
    log_path = Path(tempfile.gettempdir()) / "keys_http.gunicorn.log"  # read it when a check fails
    log = open(log_path, "w")  # noqa: SIM115 (open for gunicorn's lifetime)
    server = start_gunicorn(args.port, args.workers, log)
    try:
        for _label, session, path, marker in pages:
            check(args.port, path, session, marker, 100)
            signed_in_wrk(args.port, path, session, connections=args.connections, duration=3)  # warm-up
        print(f"command:    {' '.join([Path(sys.executable).name, *sys.argv])}")
        print(
            f"server:     gunicorn --workers {args.workers} (sync), DEBUG=0, CONN_MAX_AGE=600; 2 CPUs shared with wrk"
        )
        print(f"load:       wrk -t1 -c{args.connections} -d{args.duration}s, signed in, 100 rows a page")
        print(f"{'page':36} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
        for _round in range(args.rounds):
            for label, session, path, _marker in pages:
                f = signed_in_wrk(args.port, path, session, connections=args.connections, duration=args.duration)
                print(f"{label:36} {f['rps']:8.1f} {f['p50']:8.2f} {f['p90']:8.2f} {f['p99']:8.2f} {f['non2xx']:8d}")
    finally:
        stop_gunicorn(server)
        log.close()
        psql(f"DROP DATABASE IF EXISTS {args.database}")


if __name__ == "__main__":
    main()
