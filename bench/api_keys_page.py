"""Benchmark: the API keys page against the Django admin changelist showing the same 100 keys.

Creates a throwaway PostgreSQL database (studio_bench), seeds 10,000 API keys with bulk_create,
then times GET /api-keys/ for a user with 100 keys and the admin changelist filtered to those
keys, in-process through django.test.Client with production-like settings (DEBUG=False,
persistent connections). Prints figures; it never asserts anything about timings.

    .venv/bin/python bench/api_keys_page.py [--requests 200] [--warmup 20] [--profile 50] [--extra-frames 0]
        [--database studio_bench] [--keep]
"""

import argparse
import functools
import os
import platform
import re
import resource
import secrets
import shlex
import statistics
import subprocess
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "studio_bench"  # the default; --database names another (it is dropped and recreated)
PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-q", "-v", "ON_ERROR_STOP=1"]

TOTAL_KEYS = 10_000
BENCH_EMAIL = "bench@bench.example"
ADMIN_EMAIL = "admin@bench.example"
# (e-mail, projects, keys) of the users whose keys page is measured; keys go round-robin over the projects.
MEASURED_USERS = [(BENCH_EMAIL, 50, 100), ("one-key@bench.example", 1, 1), ("three-keys@bench.example", 2, 3)]
OTHER_USERS = 99
PROJECTS_PER_OTHER_USER = 50
# Found once per table row: the key cell of the console page, the Key column of the admin changelist.
KEY_ROW = 'id="key-'
ADMIN_ROW = 'class="field-masked"'


def psql(sql: str) -> None:
    # Quiet the server's NOTICE for DROP DATABASE IF EXISTS.
    subprocess.run([*PSQL, "-c", sql], check=True, env={**os.environ, "PGOPTIONS": "-c client_min_messages=warning"})


def setup_django(db_name: str) -> None:
    """Production-like settings against the bench database, then django.setup()."""
    os.environ.update(
        DJANGO_SETTINGS_MODULE="studio.settings",
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{db_name}",
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        API_KEY_PEPPER=secrets.token_urlsafe(32),
        SECURE_SSL_REDIRECT="0",
        ALLOWED_HOSTS="testserver",
        # The admin's second-factor gate would send the superuser to /staff/2fa/ (force_login verifies no device);
        # with it on, a verified session costs the same attribute check.
        STAFF_REQUIRE_2FA="0",
    )
    sys.path.insert(0, str(ROOT))
    # Whitenoise looks for STATIC_ROOT, which only collectstatic creates; nothing here is served from it.
    warnings.filterwarnings("ignore", message="No directory at", category=UserWarning)
    import django
    from django.conf import settings

    django.setup()
    # DEBUG=0 selects Whitenoise's manifest storage, which needs collectstatic; plain URLs will do here.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def seed() -> None:
    """Users, imported projects (one owner membership each) and TOTAL_KEYS active keys."""
    from django.contrib.auth.hashers import make_password
    from django.utils import timezone

    from studio import keyformat
    from studio.models import ApiKey, BillingState, Membership, Project, Role, Tier, User

    # Every quota-tier cell variant appears on the page.
    profiles = [
        (Tier.FREE, BillingState.NONE, False),
        (Tier.FREE, BillingState.PREPAYMENT_DUE, False),
        (Tier.TIER_1, BillingState.ACTIVE, False),
        (Tier.TIER_1, BillingState.ACTIVE, True),
        (Tier.TIER_2, BillingState.ACTIVE, False),
        (Tier.TIER_3, BillingState.ACTIVE, False),
    ]
    other_keys = TOTAL_KEYS - sum(keys for _, _, keys in MEASURED_USERS)
    per_user, extra = divmod(other_keys, OTHER_USERS)
    plan = MEASURED_USERS + [
        (f"user{n:03d}@bench.example", PROJECTS_PER_OTHER_USER, per_user + (n < extra)) for n in range(OTHER_USERS)
    ]

    now = timezone.now()
    unusable = make_password(None)
    users = User.objects.bulk_create([User(email=email, password=unusable) for email, _, _ in plan])
    User.objects.create_superuser(ADMIN_EMAIL)

    projects = []
    for user, (_, project_count, _) in zip(users, plan, strict=True):
        for _ in range(project_count):
            n = len(projects)
            tier, billing, upgrade = profiles[n % len(profiles)]
            projects.append(
                Project(
                    project_id=f"gen-lang-client-{n:010d}",
                    number=str(10**11 + n),
                    name=f"Project {n} of {user.email}",
                    tier=tier,
                    billing_state=billing,
                    upgrade_available=upgrade,
                )
            )
    projects = Project.objects.bulk_create(projects, batch_size=1000)

    memberships, keys = [], []
    remaining = iter(projects)
    for user, (_, project_count, key_count) in zip(users, plan, strict=True):
        owned = [next(remaining) for _ in range(project_count)]
        memberships += [Membership(project=p, user=user, role=Role.OWNER, imported_at=now) for p in owned]
        for i in range(key_count):
            raw = keyformat.generate()
            keys.append(
                ApiKey(
                    project=owned[i % project_count],
                    name=f"Key {i + 1}",
                    prefix=keyformat.visible_prefix(raw),
                    last4=keyformat.last_four(raw),
                    secret_hash=keyformat.hash_key(raw),
                    created_by=user,
                    created_at=now - timedelta(minutes=len(keys)),
                )
            )
    Membership.objects.bulk_create(memberships, batch_size=1000)
    ApiKey.objects.bulk_create(keys, batch_size=1000)


def client_for(email: str):
    from django.test import Client

    from studio.models import User

    client = Client()
    client.force_login(User.objects.get(email=email))
    return client


def query_count(client, url: str) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        client.get(url)
    return len(queries)


def database_name(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise argparse.ArgumentTypeError("a lower-case PostgreSQL identifier, e.g. studio_bench")
    return name


def call_deeper(frames: int, fn):
    """fn(), called `frames` Python frames further down the stack (see README.md, "Call depth")."""
    return call_deeper(frames - 1, fn) if frames > 0 else fn()


def time_requests(get, *, warmup: int, requests: int) -> tuple[list[float], list[float], float]:
    """Time `get()` after `warmup` untimed calls.

    Returns wall-clock and CPU milliseconds per call, and the minor page faults per call. CPU time
    is this process only (not PostgreSQL), so it is steadier on a busy machine.
    """
    for _ in range(warmup):
        get()
    wall, cpu = [], []
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(requests):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        get()
        cpu.append((time.process_time() - start_cpu) * 1000)
        wall.append((time.perf_counter() - start_wall) * 1000)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before) / requests
    return wall, cpu, faults


def check_page(client, url: str, row_marker: str, rows: int) -> None:
    """Sanity check (not a timing): the page answers 200 and shows `rows` rows."""
    response = client.get(url)
    assert response.status_code == 200, f"{url}: HTTP {response.status_code}"
    found = response.content.decode().count(row_marker)
    assert found == rows, f"{url}: {found} rows, expected {rows}"


def profile(client, url: str, requests: int) -> None:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(requests):
        client.get(url)
    profiler.disable()
    print(f"\ncProfile of {requests} × GET {url}, top 30 by cumulative time:")
    pstats.Stats(profiler).strip_dirs().sort_stats("cumulative").print_stats(30)


def print_versions() -> None:
    import django
    from django.conf import settings
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        (pg_version,) = cursor.fetchone()
    print(f"command:    {shlex.join(sys.orig_argv)}")
    print(f"python:     {platform.python_version()}   django: {django.get_version()}   postgresql: {pg_version}")
    print(f"machine:    {platform.machine()}, {os.cpu_count()} CPUs")
    database = settings.DATABASES["default"]
    print(f"settings:   DEBUG={settings.DEBUG}, CONN_MAX_AGE={database['CONN_MAX_AGE']}, database={database['NAME']}")


def pages_to_time() -> list[tuple[str, str, str, str]]:
    """(label, e-mail of the viewer, URL, marker found once per row) of each page, 100 rows each."""
    from studio.models import User

    bench_user = User.objects.get(email=BENCH_EMAIL)
    admin = "/admin/studio/apikey/"
    return [
        ("/api-keys/ as the user", BENCH_EMAIL, "/api-keys/", KEY_ROW),
        ("admin, filtered by created_by", ADMIN_EMAIL, f"{admin}?created_by__id__exact={bench_user.pk}", ADMIN_ROW),
        ("admin, searched by e-mail", ADMIN_EMAIL, f"{admin}?q={BENCH_EMAIL}", ADMIN_ROW),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="timed requests per page (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests first (default 20)")
    parser.add_argument("--profile", type=int, metavar="N", default=0, help="also cProfile N keys-page requests")
    parser.add_argument("--extra-frames", type=int, default=0, help="make each request N frames deeper (README)")
    parser.add_argument(
        "--database", default=DB_NAME, type=database_name, help=f"database to drop, create and use (default {DB_NAME})"
    )
    parser.add_argument("--keep", action="store_true", help="leave the database behind")
    args = parser.parse_args()

    psql(f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)")
    psql(f"CREATE DATABASE {args.database}")
    try:
        setup_django(args.database)
        from django.core.management import call_command
        from django.db import connections

        from studio.models import ApiKey, User

        call_command("migrate", verbosity=0)
        start = time.perf_counter()
        seed()
        elapsed = time.perf_counter() - start
        print(f"seeded:     {ApiKey.objects.count()} keys, {User.objects.count()} users in {elapsed:.1f} s")
        print_versions()

        counts = []
        for email, _, key_count in sorted(MEASURED_USERS, key=lambda user: user[2]):
            client = client_for(email)
            check_page(client, "/api-keys/", KEY_ROW, key_count)
            counts.append(f"{key_count} key(s): {query_count(client, '/api-keys/')}")
        print(f"\nSQL queries for /api-keys/ by the user's number of keys: {', '.join(counts)}")

        pages = pages_to_time()
        print(f"\n{args.requests} timed requests per page after {args.warmup} warm-up, 100 rows each", end="")
        print(f", {args.extra_frames} extra frames deep" if args.extra_frames else "", end="")
        print("; milliseconds, and minor page faults per request:")
        print(f"{'page':<32} {'p50':>7} {'p95':>7} {'mean':>7} {'cpu p50':>8} {'faults':>7} {'queries':>8}")
        for label, email, url, row_marker in pages:
            client = client_for(email)
            check_page(client, url, row_marker, 100)
            get = functools.partial(call_deeper, args.extra_frames, functools.partial(client.get, url))
            wall, cpu, faults = time_requests(get, warmup=args.warmup, requests=args.requests)
            p50, mean, cpu_p50 = statistics.median(wall), statistics.fmean(wall), statistics.median(cpu)
            p95 = statistics.quantiles(wall, n=20, method="inclusive")[-1]
            queries = query_count(client, url)
            print(f"{label:<32} {p50:7.2f} {p95:7.2f} {mean:7.2f} {cpu_p50:8.2f} {faults:7.0f} {queries:8d}")
        for label, _, url, _ in pages:
            print(f"  {label}: GET {url}")

        if args.profile:
            profile(client_for(BENCH_EMAIL), "/api-keys/", args.profile)
        connections.close_all()
    finally:
        if not args.keep:
            psql(f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)")


if __name__ == "__main__":
    main()
