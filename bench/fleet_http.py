"""Benchmark: the fleet API (usage:report, quota:check) over HTTP, against gunicorn as in production.

Creates a throwaway PostgreSQL database (studio_bench_fleet), seeds 20 Tier 3 projects with a key each and a fleet
token, starts `gunicorn studio.wsgi --workers 2` with production settings (DEBUG=0, persistent connections, Redis for
the limiter), then drives it from client processes on the same machine:

- usage:report: batches of 1,000 events, pre-serialised, sent back to back for a fixed time; then the same with a
  replay of an earlier batch mixed in every few batches;
- quota:check: single checks for random keys and models, sent back to back for a fixed time.

With --charging, the projects' usage is billed and charged as in production: the ingestion run happens three times
on the same server, first before the projects are billed (no BillingPeriod rows: ingestion adds no pending charges),
then billed (each project linked to its own billing account since before the events occurred) without the charge job,
then billed with the charge job (`manage.py charge_usage` every 20 s from a separate process), and prints the charge
runs' durations; --charging-rounds N repeats the last two in turn.

Alongside throughput and client-side latency it prints where the machine's CPU went (gunicorn, PostgreSQL, Redis, the
clients, the charge job, anything else), then times usage.ingest.ingest() in-process on the same kind of batches,
without HTTP. Prints figures; it never asserts anything about timings. Sanity checks (events stored = events accepted,
a replayed batch is all duplicates, charged + pending = what the billed events cost) make the exit status 1 when they
fail. Linux only (/proc, prctl). bench/charge_lag.py and bench/charge_run.py import its helpers.

    .venv/bin/python bench/fleet_http.py [--duration 20] [--check-duration 15] [--clients 3] [--check-clients 4]
        [--workers 2] [--worker-class sync] [--replay-every 5] [--in-process 20] [--profile 0] [--keep]
        [--charging] [--charge-interval 20] [--charging-rounds 1]
        [--database studio_bench_fleet] [--redis-url redis://127.0.0.1:6379/14]
"""

import argparse
import ctypes
import http.client
import io
import math
import multiprocessing
import os
import platform
import random
import re
import secrets
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path
from typing import NamedTuple

import orjson

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "studio_bench_fleet"  # the default; --database names another (it is dropped and recreated)
REDIS_URL = "redis://127.0.0.1:6379/14"  # the default; flushed before and after the admission run
PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-q", "-v", "ON_ERROR_STOP=1"]
HOST = "127.0.0.1"
REPORT_PATH = "/api/v1/usage:report"
CHECK_PATH = "/api/v1/quota:check"
FALLBACK_WARNING = "Redis unavailable for quota checks"  # usage.limiter logs it at most every 10 s per worker

PR_SET_PDEATHSIG = 1
PROJECTS = 20
CREDIT_USD = Decimal(1000)  # each bench billing account's promotional credit (--charging)
BATCH = 1000
# Batches each ingestion client prepares: enough for this many events/s over the whole run, shared by the clients.
CEILING_EVENTS_PER_S = 40_000
# (value, weight) of the generated events.
MODELS = [("gemini-2.5-flash", 60), ("gemini-2.0-flash", 25), ("gemini-2.5-pro", 15)]
KINDS = [("generate", 85), ("batch", 8), ("count_tokens", 7)]
STATUSES = [(200, 95), (429, 2.5), (500, 2.5)]
# How long before its report an event occurred, at most (uniformly): an hour unless --spread says otherwise. Read from
# the environment, which the client processes (spawned) inherit.
SPREAD_ENV = "FLEET_BENCH_SPREAD_SECONDS"
SPREAD_SECONDS = 3600


def psql(sql: str) -> None:
    # Quiet the server's NOTICE for DROP DATABASE IF EXISTS.
    subprocess.run([*PSQL, "-c", sql], check=True, env={**os.environ, "PGOPTIONS": "-c client_min_messages=warning"})


def database_name(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise argparse.ArgumentTypeError("a lower-case PostgreSQL identifier, e.g. studio_bench_fleet")
    return name


def database_url(name: str) -> str:
    # PGPORT (psql reads it too): another PostgreSQL on this machine, e.g. one configured differently.
    return f"postgres://postgres@127.0.0.1:{os.environ.get('PGPORT', '5432')}/{name}"


def server_environment(database: str, redis_url: str) -> dict[str, str]:
    """Production-like settings, shared by this process (seeding) and gunicorn: the key hashes need one pepper."""
    return {
        "DJANGO_SETTINGS_MODULE": "studio.settings",
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50)[:50],
        "API_KEY_PEPPER": secrets.token_urlsafe(32),
        "ALLOWED_HOSTS": HOST,
        "SECURE_SSL_REDIRECT": "0",
        "DATABASE_URL": database_url(database),
        "CONN_MAX_AGE": "600",
        "REDIS_URL": redis_url,
        # Whitenoise warns that STATIC_ROOT does not exist (no collectstatic): the API serves no static files.
        "PYTHONWARNINGS": "ignore:No directory at:UserWarning",
    }


def setup_django(environment: dict[str, str]) -> None:
    os.environ.update(environment)
    sys.path.insert(0, str(ROOT))
    import warnings

    warnings.filterwarnings("ignore", message="No directory at", category=UserWarning)
    import django

    django.setup()


class Seeded(NamedTuple):
    user_id: int
    project_ids: list[int]
    key_ids: list[int]  # one key per project, in the same order
    raw_keys: list[str]
    token: str  # the raw fleet token


def seed(projects: int = PROJECTS) -> Seeded:
    """A user, `projects` Tier 3 projects with one key each, and a fleet token. The projects are not billed yet:
    without BillingPeriod rows (seed_billing) ingestion rates their usage but adds no pending charges."""
    from studio.models import ApiKey, BillingState, Membership, Project, Role, Tier, User
    from usage.models import FleetToken

    user = User.objects.create_user("fleet-bench@bench.example", None)
    created = Project.objects.bulk_create(
        Project(
            project_id=f"gen-lang-client-{n:010d}",
            number=str(10**11 + n),
            name=f"Fleet bench {n}",
            tier=Tier.TIER_3,
            billing_state=BillingState.ACTIVE,
        )
        for n in range(projects)
    )
    Membership.objects.bulk_create(Membership(project=p, user=user, role=Role.OWNER) for p in created)
    issued = [ApiKey.issue(project=p, name="Fleet bench", created_by=user) for p in created]
    _, raw_token = FleetToken.issue(name="fleet bench")
    return Seeded(
        user.pk, [p.pk for p in created], [key.pk for key, _ in issued], [raw for _, raw in issued], raw_token
    )


def seed_billing(user_id: int, project_ids: list[int], *, since: datetime) -> list[int]:
    """Bill each project to a billing account of its own from `since` on, as linking it then would have: one
    payments profile and card of the user, and per project an account (the user its administrator, a promotional
    credit of CREDIT_USD granted at `since`), the project's link and its BillingPeriod row (what ingestion reads
    to decide that an event is billed, and to whom). Bulk-created rather than through billing.services (one
    project per transaction, under locks), so that thousands take seconds. Returns the accounts' pks, in the
    order of `project_ids`."""
    from billing.models import (
        BillingAccount,
        BillingAdministrator,
        BillingPeriod,
        Credit,
        CreditKind,
        EntryKind,
        LedgerEntry,
        PaymentMethod,
        PaymentsProfile,
        ProjectBilling,
    )
    from studio.models import Tier

    profile = PaymentsProfile.objects.create(
        owner_id=user_id,
        profile_type="business",
        name="Fleet bench",
        address_line1="1 Bench Way",
        city="San Francisco",
        postal_code="94105",
        country_id="US",
        email="fleet-bench@bench.example",
        phone="+1 415 555 0100",
    )
    card = PaymentMethod.objects.create(
        profile=profile, brand="visa", last4="4242", exp_month=12, exp_year=2099, processor_token="tok_bench"
    )
    accounts = BillingAccount.objects.bulk_create(
        BillingAccount(
            display_name=f"Fleet bench {n}",
            country_id="US",
            payments_profile=profile,
            primary_payment_method=card,
            created_by_id=user_id,
            created_at=since,
        )
        for n in range(len(project_ids))
    )
    BillingAdministrator.objects.bulk_create(
        BillingAdministrator(account=account, user_id=user_id, added_at=since) for account in accounts
    )
    pairs = list(zip(project_ids, accounts, strict=True))
    ProjectBilling.objects.bulk_create(
        ProjectBilling(project_id=project_id, account=account, linked_at=since, linked_by_id=user_id)
        for project_id, account in pairs
    )
    BillingPeriod.objects.bulk_create(
        BillingPeriod(project_id=project_id, starts_at=since, account=account, tier=Tier.TIER_3)
        for project_id, account in pairs
    )
    credits = Credit.objects.bulk_create(
        Credit(
            account=account,
            kind=CreditKind.PROMOTIONAL,
            original_amount=CREDIT_USD,
            granted_at=since,
            source="fleet bench",
        )
        for account in accounts
    )
    LedgerEntry.objects.bulk_create(
        LedgerEntry(
            account=credit.account, kind=EntryKind.CREDIT_GRANT, amount=CREDIT_USD, credit=credit, created_at=since
        )
        for credit in credits
    )
    return [account.pk for account in accounts]


# --- gunicorn ---------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def gunicorn_command(args, port: int) -> list[str]:
    gunicorn = Path(sys.executable).with_name("gunicorn")  # the virtualenv's
    command = [str(gunicorn), "studio.wsgi", "--workers", str(args.workers)]
    command += ["--bind", f"{HOST}:{port}", "--no-control-socket"]  # not the shared ~/.gunicorn/gunicorn.ctl
    if args.worker_class != "sync":
        command += ["--worker-class", args.worker_class, "--threads", str(args.threads)]
    return command


def _die_with_parent() -> None:
    """SIGTERM to this process when its parent ends, even by SIGKILL (Linux prctl): for gunicorn's master (called
    before exec) and the client processes."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_gunicorn(command: list[str], port: int, environment: dict[str, str], log) -> subprocess.Popen:
    # Its own session, so that stopping it (os.killpg) reaches the workers and nothing else.
    server = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **environment},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent,  # safe: this process runs no other thread
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"gunicorn exited with status {server.returncode}")
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=5)
            connection.request("GET", "/api/v1/openapi.json")
            if connection.getresponse().status == 200:
                return server
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer within 30 s")


def stop_gunicorn(server: subprocess.Popen | None) -> None:
    if server is None or server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)  # the master stops its workers gracefully
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


# --- load generation (client processes; nothing here imports Django) ---------------------------------------------


def weighted(pairs):
    values, weights = zip(*pairs, strict=True)
    return list(values), list(weights)


def make_events(rng: random.Random, key_ids: list[int], count: int, now: datetime) -> list[dict]:
    """`count` valid events with unique ids, as the fleet would report them."""
    models, model_weights = weighted(MODELS)
    kinds, kind_weights = weighted(KINDS)
    statuses, status_weights = weighted(STATUSES)
    spread = float(os.environ.get(SPREAD_ENV, SPREAD_SECONDS))
    events = []
    for model, kind, status in zip(
        rng.choices(models, model_weights, k=count),
        rng.choices(kinds, kind_weights, k=count),
        rng.choices(statuses, status_weights, k=count),
        strict=True,
    ):
        input_tokens = min(int(rng.lognormvariate(7, 1.3)), 1_000_000)
        if model == "gemini-2.5-pro" and rng.random() < 0.02:
            input_tokens = rng.randint(200_001, 900_000)  # a long prompt, at the long-prompt prices
        produced = kind != "count_tokens" and status == 200
        event = {
            "event_id": f"evt-{uuid.UUID(int=rng.getrandbits(128)).hex}",
            "key_id": str(rng.choice(key_ids)),
            "model": model,
            "kind": kind,
            "source": "studio" if rng.random() < 0.03 else "api",
            "status_code": status,
            "input_tokens": input_tokens,
            "output_tokens": min(int(rng.lognormvariate(5.5, 1)), 65_536) if produced else 0,
            "cached_tokens": int(input_tokens * rng.random()) if produced and rng.random() < 0.2 else 0,
            "occurred_at": (now - timedelta(seconds=rng.uniform(0, spread))).isoformat(),
        }
        if produced and rng.random() < 0.05:  # cache storage is its own event: token-hours, not a request
            event = {name: event[name] for name in ("event_id", "key_id", "model", "source", "occurred_at")}
            event.update(kind="cache_storage", cache_token_hours=round(rng.uniform(0.001, 50), 3))
        events.append(event)
    return events


def make_bodies(seed: int, key_ids: list[int], batches: int) -> list[bytes]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    return [orjson.dumps({"events": make_events(rng, key_ids, BATCH, now)}) for _ in range(batches)]


class Batch(NamedTuple):
    """One usage:report request, as a client saw it."""

    finished: float  # time.monotonic()
    seconds: float
    accepted: int
    duplicates: int
    rejected: int
    status: int
    replay: bool


class Check(NamedTuple):
    """One quota:check request, as a client saw it."""

    finished: float  # time.monotonic()
    seconds: float
    allowed: bool


class Client:
    """A minimal HTTP/1.1 client for the load: one connection, kept alive until the server closes it (gunicorn's sync
    workers close every one). It takes about half the CPU of http.client per request (0.3 against 0.6 ms for a
    quota check here), CPU that the server would otherwise lose on a machine that the load generator shares."""

    def __init__(self, port: int, headers: dict[str, str]):
        self.port = port
        fields = {"Host": f"{HOST}:{port}", "Content-Type": "application/json", **headers}
        self.head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.connects = 0

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """(status, body) of the answer to a POST; retried once on a new connection if a kept-alive one was
        closed meanwhile (both endpoints may take a retry: usage:report is idempotent, a check costs one more)."""
        request = f"POST {path} HTTP/1.1\r\n{self.head}Content-Length: {len(body)}\r\n\r\n".encode() + body
        reused = self.sock is not None
        try:
            return self._exchange(request)
        except OSError:  # ConnectionError included
            self.close()
            if not reused:
                raise
            return self._exchange(request)

    def _exchange(self, request: bytes) -> tuple[int, bytes]:
        if self.sock is None:
            self.sock = socket.create_connection((HOST, self.port), timeout=60)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buffer = b""
            self.connects += 1
        self.sock.sendall(request)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._receive()
        lines = self.buffer[:end].decode("latin-1").split("\r\n")
        self.buffer = self.buffer[end + 4 :]
        headers = {
            name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])
        }
        length = int(headers["content-length"])  # Django's CommonMiddleware sets it; no chunked answers here
        while len(self.buffer) < length:
            self._receive()
        content, self.buffer = self.buffer[:length], self.buffer[length:]
        if headers.get("connection", "").lower() == "close":
            self.close()
        return int(lines[0].split(" ", 2)[1]), content

    def _receive(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def ingest_client(number, port, token, key_ids, batches, replay_every, seed, pace, ready, go, window, results) -> None:
    """Send the prepared batches until the window closes: back to back, or with `pace` batches per second (each
    batch at its scheduled time, at once if late: a server that cannot keep up shows as a lower rate); every
    `replay_every`-th request replays a batch this client sent before. Puts its Batch samples, its first body, the
    number of connections it opened and whether it ran out of prepared batches on `results`."""
    _die_with_parent()
    bodies = make_bodies(seed + number, key_ids, batches)
    client = Client(port, {"Authorization": f"Bearer {token}"})
    rng = random.Random(number)
    ready.put(number)
    if not go.wait(timeout=600):
        return  # the benchmark is gone
    end = window.value
    samples, sent = [], 0
    # Paced clients start a fraction of a period apart, so that their batches do not arrive together.
    scheduled = time.monotonic() + (rng.random() / pace if pace else 0)
    while time.monotonic() < end:
        replay = bool(replay_every) and sent > 0 and len(samples) % replay_every == replay_every - 1
        if not replay and sent == len(bodies):
            break  # out of prepared batches: reported as such
        if pace:
            time.sleep(max(0.0, scheduled - time.monotonic()))
            scheduled += 1 / pace
        body = bodies[rng.randrange(sent)] if replay else bodies[sent]
        started = time.monotonic()
        status, content = client.post(REPORT_PATH, body)
        finished = time.monotonic()
        sent += not replay
        report = orjson.loads(content) if status == 200 else {}
        accepted, duplicates, rejected = (
            report.get("accepted", 0),
            report.get("duplicates", 0),
            report.get("rejected", ()),
        )
        samples.append(Batch(finished, finished - started, accepted, duplicates, len(rejected), status, replay))
    results.put((number, samples, bodies[0], client.connects, sent == len(bodies)))


def check_client(number, port, token, raw_keys, ready, go, window, results) -> None:
    """quota:check for random keys and models until the window closes. Puts its Check samples, the number of
    connections it opened and the count of each HTTP status on `results`."""
    _die_with_parent()
    rng = random.Random(2000 + number)
    models, model_weights = weighted(MODELS)
    bodies = [
        orjson.dumps(
            {
                "api_key": rng.choice(raw_keys),
                "model": model,
                "kind": "count_tokens" if rng.random() < 0.05 else "generate",
                "estimated_input_tokens": rng.randint(500, 1500),
            }
        )
        for model in rng.choices(models, model_weights, k=4096)
    ]
    client = Client(port, {"Authorization": f"Bearer {token}"})
    ready.put(number)
    if not go.wait(timeout=600):
        return  # the benchmark is gone
    end = window.value
    samples, statuses = [], {}
    while time.monotonic() < end:
        started = time.monotonic()
        status, content = client.post(CHECK_PATH, bodies[len(samples) % len(bodies)])
        finished = time.monotonic()
        statuses[status] = statuses.get(status, 0) + 1
        samples.append(Check(finished, finished - started, status == 200 and orjson.loads(content)["allowed"]))
    results.put((number, samples, client.connects, statuses))


CPU_GROUPS = ("gunicorn", "PostgreSQL", "Redis", "clients")
NOISY_SHARE = 0.1  # of all CPUs, used by other processes while measuring
SAMPLE_SECONDS = 0.1  # how often a run's sampler (if any) is called while measuring


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by one process, e.g. a connection's PostgreSQL backend (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# PostgreSQL process titles: a client backend's "postgres: [cluster: ]user database client(port) activity", and a
# parallel query's worker's "postgres: [cluster: ]parallel worker for PID <its client backend>".
BACKEND_TITLE = re.compile(r"postgres: (?:\S+: )?\S+ (\S+) (?:\[local\]|\S+\(\d+\))")
PARALLEL_WORKER_TITLE = re.compile(r"postgres: (?:\S+: )?parallel worker for PID (\d+)")


def other_database_backend(process: str, database: str) -> bool:
    """Is /proc/`process` a PostgreSQL client backend of a database other than `database` (e.g. someone's tests), or
    a parallel worker of one?"""
    try:
        title = Path(process, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    if leader := PARALLEL_WORKER_TITLE.match(title):
        return other_database_backend(f"/proc/{leader[1]}", database)
    match = BACKEND_TITLE.match(title)
    return match is not None and match[1] != database


def cpu_seconds(
    server_pid: int, client_pids: set[int], extra_pids: dict[str, set[int]] | None = None
) -> dict[str, float]:
    """CPU seconds used so far by gunicorn (master and workers), PostgreSQL, Redis, the clients and each group of
    `extra_pids` (e.g. the charge job: its process and its PostgreSQL backend), and the machine's busy and total CPU
    seconds (Linux /proc). PostgreSQL is the server's own processes (autovacuum and WAL writer included) and the
    backends of this process's database: backends of other databases on a shared machine count as "other"."""
    from django.db import connection

    database = connection.settings_dict["NAME"]
    ticks = os.sysconf("SC_CLK_TCK")
    extra_pids = extra_pids or {}
    used = dict.fromkeys((*CPU_GROUPS, *extra_pids), 0.0)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        pid, ppid, seconds = int(entry.name), int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks
        group = next((group for group, pids in extra_pids.items() if pid in pids), None)
        if group is not None:
            used[group] += seconds
        elif server_pid in (pid, ppid):
            used["gunicorn"] += seconds
        elif name == "postgres" and not other_database_backend(entry.path, database):
            used["PostgreSQL"] += seconds
        elif name == "redis-server":
            used["Redis"] += seconds
        elif pid in client_pids:
            used["clients"] += seconds
    cpu = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    used["busy"] = (sum(cpu) - cpu[3] - cpu[4]) / ticks  # all but idle and iowait
    used["total"] = sum(cpu) / ticks
    return used


@dataclass
class Run:
    results: list  # what each client put on the results queue, by client number
    start: float  # the measured part of the window, time.monotonic() (after the warm-up)
    end: float
    cpu: dict[str, float]  # CPU seconds used during the measured part, by group (CPU_GROUPS and the
    # extra processes'), "busy" and "total"
    extras: dict = field(default_factory=dict)  # what each extra process put on its results queue, by name
    groups: tuple[str, ...] = CPU_GROUPS

    def share(self, seconds: float) -> str:
        return f"{seconds / self.cpu['total']:.0%}"

    def cpu_line(self) -> str:
        """Where the machine's CPU went while measured, as shares of all its CPUs ("other": the rest of the
        machine, e.g. a test suite running meanwhile)."""
        other = self.cpu["busy"] - sum(self.cpu[group] for group in self.groups)
        shares = [f"{group} {self.share(self.cpu[group])}" for group in self.groups]
        idle = self.share(self.cpu["total"] - self.cpu["busy"])
        line = f"{', '.join(shares)}, other {self.share(max(other, 0))}, idle {idle}"
        if other > NOISY_SHARE * self.cpu["total"]:
            line += "\n  NOTE: other processes took a share of the CPUs: these figures are low, run again when quiet"
        return line


class Extra(NamedTuple):
    """A process that runs alongside the clients (the charge job, a probe): `target(*arguments, ready, go, window,
    results)`. When prepared it puts (name, the pids whose CPU is its own) on `ready`, then waits for `go`; it puts
    one value on its own `results` queue when done, at most `seconds_after` seconds after the window closes."""

    name: str
    target: object
    arguments: tuple
    seconds_after: float


def run_clients(
    target,
    count: int,
    arguments: tuple,
    warmup: float,
    duration: float,
    server_pid: int,
    *,
    extras: tuple[Extra, ...] = (),
    sample=None,
) -> Run:
    """Start `count` client processes (and the `extras`), wait until each has prepared its data, open the window for
    all of them at once, and measure the CPU used by each party after the warm-up. `sample()`, if given, is called
    every SAMPLE_SECONDS while measuring."""
    context = multiprocessing.get_context("spawn")  # clean children: no Django, no inherited connections
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    window = context.Value("d", 0.0)
    processes = [
        context.Process(target=target, args=(n, *arguments, ready, go, window, results), daemon=True)
        for n in range(count)
    ]
    extra_results = {extra.name: context.Queue() for extra in extras}
    processes += [
        context.Process(
            target=extra.target, args=(*extra.arguments, ready, go, window, extra_results[extra.name]), daemon=True
        )
        for extra in extras
    ]
    try:
        for process in processes:
            process.start()
        extra_pids = {}
        for _ in processes:
            prepared = ready.get(timeout=600)
            if isinstance(prepared, tuple):
                name, pids = prepared
                extra_pids[name] = set(pids)
        start = time.monotonic()
        end = start + warmup + duration
        window.value = end
        go.set()
        clients = {process.pid for process in processes[:count]}
        time.sleep(warmup)
        before = cpu_seconds(server_pid, clients, extra_pids)
        while (left := end - time.monotonic()) > 0:
            if sample is not None:
                sample()
            time.sleep(min(left, SAMPLE_SECONDS))
        after = cpu_seconds(server_pid, clients, extra_pids)
        collected = sorted((results.get(timeout=120) for _ in range(count)), key=lambda r: r[0])
        collected_extras = {
            extra.name: extra_results[extra.name].get(timeout=extra.seconds_after + 600) for extra in extras
        }
        for process in processes:
            process.join(timeout=10)
        cpu = {name: after[name] - before[name] for name in after}
        groups = (*CPU_GROUPS, *(extra.name for extra in extras))
        return Run(collected, start + warmup, end, cpu, collected_extras, groups)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()


# --- the charge job (--charging, bench/charge_lag.py) ---------------------------------------------------------------

JOB_NAME = "charge job"  # its CPU group, and its connection's application_name (for LockSampler)
CHARGED = re.compile(r"Charged (\d+) account\(s\): \d+ charge\(s\), (\d+) line\(s\)")


class ChargeRunSample(NamedTuple):
    """One run of the charge job, as its process saw it."""

    started: float  # time.monotonic(), before the command (and so before it takes its job lock)
    finished: float  # time.monotonic() when the command returned: its last account's transaction had committed
    cpu: float  # CPU seconds of the job's process
    backend_cpu: float  # CPU seconds of its PostgreSQL backend
    accounts: int  # charged
    lines: int
    output: str  # the command's summary


def charge_job(environment: dict[str, str], interval: float, ready, go, window, results) -> None:
    """The charge job as production runs it: `manage.py charge_usage` every `interval` seconds (huey's
    charge_usage job runs it every CHARGE_INTERVAL_SECONDS), here through call_command in one long-lived process with
    a persistent connection, as huey's worker does, on a steady tick (production schedules a minute's later runs from
    the end of its first one: the same while runs are short, see bench/README.md). The first run is `interval` seconds
    after the clients start; a tick that comes while a run is still going is skipped (huey's next charge_usage_later
    finds the job's lock taken and does nothing), and the last run starts after the window closed, so that every batch
    answered in the window has a run that started after it. Puts its ChargeRunSample list on `results`."""
    _die_with_parent()
    setup_django(environment)
    from django.core.management import call_command
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET application_name = %s", [JOB_NAME])
        cursor.execute("SELECT pg_backend_pid()")
        (backend,) = cursor.fetchone()
    ready.put((JOB_NAME, (os.getpid(), backend)))
    if not go.wait(timeout=600):
        return  # the benchmark is gone
    runs: list[ChargeRunSample] = []
    tick = time.monotonic() + interval
    while not runs or runs[-1].started < window.value:
        time.sleep(max(0.0, tick - time.monotonic()))
        output = io.StringIO()
        started, cpu, backend_cpu = time.monotonic(), time.process_time(), process_cpu_seconds(backend)
        call_command("charge_usage", stdout=output)
        finished = time.monotonic()
        text = output.getvalue().strip()
        charged = CHARGED.search(text)
        accounts, lines = (int(charged[1]), int(charged[2])) if charged else (0, 0)
        cpu, backend_cpu = time.process_time() - cpu, process_cpu_seconds(backend) - backend_cpu
        runs.append(ChargeRunSample(started, finished, cpu, backend_cpu, accounts, lines, text))
        tick += interval * max(1, math.ceil((finished - tick) / interval))  # the next tick after this run
    connection.close()
    results.put(runs)


def charge_job_extra(environment: dict[str, str], interval: float) -> Extra:
    return Extra(JOB_NAME, charge_job, (environment, interval), seconds_after=interval)


def print_charge_runs(runs: list[ChargeRunSample], start: float, end: float) -> None:
    """One line per run that started in the measured part of the window (offsets from its start)."""
    timed = [run for run in runs if start <= run.started < end]
    if not timed:
        print("  charge runs         none started while measured")
        return
    durations = [(run.finished - run.started) * 1000 for run in timed]
    print(
        f"  charge runs         {len(timed)} while measured, {statistics.median(durations):,.0f} ms median, "
        f"{max(durations):,.0f} ms longest"
    )
    for run in timed:
        print(
            f"    at {run.started - start:5.1f} s: {(run.finished - run.started) * 1000:7,.0f} ms, {run.accounts} "
            f"accounts, {run.lines:,} lines; CPU ms: job {run.cpu * 1000:,.0f}, its PostgreSQL backend "
            f"{run.backend_cpu * 1000:,.0f}"
        )


class LockSampler:
    """Called every SAMPLE_SECONDS while measuring (run_clients' `sample`): from this process's own connection, how
    many of the bench database's other client backends (gunicorn's, the charge job excluded) are active, how many of
    them wait for a lock, how many of those wait behind the charge job, and whether the charge job waits for one."""

    QUERY = """
        SELECT count(*) FILTER (WHERE NOT job AND state = 'active'),
               count(*) FILTER (WHERE NOT job AND wait_event_type = 'Lock'),
               count(*) FILTER (WHERE NOT job AND wait_event_type = 'Lock' AND pg_blocking_pids(pid) && ARRAY(
                   SELECT pid FROM pg_stat_activity WHERE application_name = %(job)s)),
               coalesce(bool_or(job AND wait_event_type = 'Lock'), false)
        FROM (SELECT *, application_name = %(job)s AS job FROM pg_stat_activity
              WHERE datname = current_database() AND backend_type = 'client backend'
                    AND pid <> pg_backend_pid()) AS backends
    """

    def __init__(self):
        self.samples: list[tuple[float, int, int, int, bool]] = []  # (time.monotonic(), the four figures)

    def __call__(self) -> None:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(self.QUERY, {"job": JOB_NAME})
            self.samples.append((time.monotonic(), *cursor.fetchone()))

    def print(self, runs: list[ChargeRunSample]) -> None:
        def summary(samples) -> str:
            active, waiting, behind_job = (statistics.fmean(sample[i] for sample in samples) for i in (1, 2, 3))
            return f"{waiting:.2f} of {active:.2f} active waiting for a lock ({behind_job:.2f} behind the charge job)"

        def charging(moment: float) -> bool:
            return any(run.started <= moment <= run.finished for run in runs)

        during = [sample for sample in self.samples if charging(sample[0])]
        outside = [sample for sample in self.samples if not charging(sample[0])]
        print(f"  lock waits          ingestion backends, {len(self.samples):,} samples of pg_stat_activity:")
        if outside:
            label = "outside charge runs" if during else "throughout"
            print(f"    {label + ':':<22}{summary(outside)}")
        if during:
            job_waits = sum(sample[4] for sample in during) / len(during)
            print(
                f"    {'during charge runs:':<22}{summary(during)}; the job itself waiting {job_waits:.0%} of the time"
            )
        self.samples.clear()


# --- figures ------------------------------------------------------------------------------------------------------


def percentile(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] if len(values) > 1 else values[0]


def ingestion(
    args,
    server_pid: int,
    port: int,
    token: str,
    key_ids: list[int],
    replay_every: int,
    *,
    title: str = "",
    job_environment: dict[str, str] | None = None,
    sampler: LockSampler | None = None,
) -> tuple[int, bytes, float]:
    """One ingestion run, with the charge job running if `job_environment` is given; prints its figures, returns
    (events accepted in all, one body that was sent, events accepted per second while timed)."""
    per_client = math.ceil(CEILING_EVENTS_PER_S * (args.warmup + args.duration) / BATCH / args.clients)
    arguments = (port, token, key_ids, per_client, replay_every, secrets.randbits(64), 0)  # new event ids every run
    extras = (charge_job_extra(job_environment, args.charge_interval),) if job_environment else ()
    run = run_clients(
        ingest_client, args.clients, arguments, args.warmup, args.duration, server_pid, extras=extras, sample=sampler
    )
    samples = [sample for _, client_samples, *_ in run.results for sample in client_samples]
    timed = [s for s in samples if run.start <= s.finished < run.end]
    fresh = [s for s in timed if not s.replay]
    replays = [s for s in timed if s.replay]
    errors = [s for s in samples if s.status != 200 or s.rejected]
    accepted = sum(s.accepted for s in timed)
    handled = sum(s.accepted + s.duplicates + s.rejected for s in timed)
    connects = sum(c[3] for c in run.results)
    label = f"with a replay every {replay_every} batches" if replay_every else "new events only"
    label += f", {title}" if title else ""
    print(f"\nusage:report, {label}: {args.clients} clients × {BATCH:,}-event batches, {args.duration:g} s timed")
    print(f"  events accepted/s   {accepted / args.duration:10,.0f}")
    if replay_every:
        print(f"  events handled/s    {handled / args.duration:10,.0f}   (accepted + duplicates, replays included)")
    print(f"  batches/s           {len(timed) / args.duration:10.1f}   ({len(fresh)} new, {len(replays)} replays)")
    for label, batch in (("new batches", fresh), ("replayed batches", replays)):
        if batch:
            latencies = [s.seconds * 1000 for s in batch]
            p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
            print(f"  latency, {label + ':':<18} p50 {p50:6.1f} ms   p95 {p95:6.1f} ms   max {max(latencies):6.1f} ms")
    if timed:
        per_batch = {group: run.cpu[group] / len(timed) * 1000 for group in ("gunicorn", "PostgreSQL")}
        print(f"  CPU ms per batch    gunicorn {per_batch['gunicorn']:.0f}, PostgreSQL {per_batch['PostgreSQL']:.0f}")
    print(f"  CPU, of all CPUs    {run.cpu_line()}")
    print(f"  TCP connections     {connects:10,}   for {len(samples):,} requests (warm-up included)")
    runs = run.extras.get(JOB_NAME, [])
    if job_environment:
        print_charge_runs(runs, run.start, run.end)
    if sampler is not None:
        sampler.print(runs)
    if any(c[4] for c in run.results):
        print(f"  NOTE: a client ran out of its {per_client} prepared batches: the figures are a lower bound")
    if errors:
        print(f"  ERRORS: {len(errors)} batches answered non-200 or with rejected events, e.g. {errors[0]}")
    return sum(s.accepted for s in samples), run.results[0][2], accepted / args.duration


def charging_runs(args, server_pid: int, port: int, seeded: Seeded, environment: dict[str, str]) -> tuple[int, bytes]:
    """--charging: an ingestion run before the projects are billed, then --charging-rounds pairs of billed runs
    without and with the charge job, ordered without-with, with-without, ... so that a steady drift (each run adds
    millions of events to the tables, and throughput falls run after run) weighs on both alike. Prints the billed
    runs' events/s side by side; returns (events accepted in all, one body that was sent)."""
    sampler = LockSampler()
    title = f"billed and charged every {args.charge_interval:g} s"
    accepted, body, unbilled = ingestion(
        args, server_pid, port, seeded.token, seeded.key_ids, 0, title="projects not billed", sampler=sampler
    )
    started = time.perf_counter()
    seed_billing(seeded.user_id, seeded.project_ids, since=datetime.now(UTC) - timedelta(hours=2))
    print(
        f"\nbilled:     each project linked to its own billing account (USD {CREDIT_USD:,} credit) since 2 hours ago, "
        f"in {time.perf_counter() - started:.1f} s"
    )
    rates: dict[bool, list[float]] = {False: [], True: []}  # charge job running: events/s of each run
    for number in range(args.charging_rounds):
        for charged in (False, True) if number % 2 == 0 else (True, False):
            more, _, rate = ingestion(
                args,
                server_pid,
                port,
                seeded.token,
                seeded.key_ids,
                0,
                title=title if charged else "billed",
                job_environment=environment if charged else None,
                sampler=sampler,
            )
            accepted += more
            rates[charged].append(rate)
    print("\nusage:report, events accepted/s while timed:")
    print(f"  projects not billed               {unbilled:10,.0f}")
    for charged, label in ((False, "billed"), (True, title)):
        runs = ", ".join(f"{rate:,.0f}" for rate in rates[charged])
        print(f"  {label:<33} {statistics.fmean(rates[charged]):10,.0f}   (mean of {runs})")
    return accepted, body


def admission(args, server_pid: int, port: int, token: str, raw_keys: list[str], log) -> None:
    import redis

    redis.Redis.from_url(args.redis_url).flushdb()
    log_start = len(Path(log.name).read_bytes())
    arguments = (port, token, raw_keys)
    run = run_clients(check_client, args.check_clients, arguments, args.warmup, args.check_duration, server_pid)
    samples = [sample for _, client_samples, *_ in run.results for sample in client_samples]
    timed = [s for s in samples if run.start <= s.finished < run.end]
    latencies = [s.seconds * 1000 for s in timed]
    statuses = {}
    for _, _, _, client_statuses in run.results:
        for status, count in client_statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    allowed = sum(s.allowed for s in timed)
    connects = sum(c[2] for c in run.results)
    print(f"\nquota:check: {args.check_clients} clients, one check per request, {args.check_duration:g} s timed")
    print(f"  checks/s            {len(timed) / args.check_duration:10,.0f}   ({allowed / len(timed):.1%} allowed)")
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(f"  latency             p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   max {max(latencies):6.2f} ms")
    per_check = {group: run.cpu[group] / len(timed) * 1000 for group in CPU_GROUPS}
    print(
        f"  CPU ms per check    gunicorn {per_check['gunicorn']:.2f}, PostgreSQL {per_check['PostgreSQL']:.2f}, "
        f"Redis {per_check['Redis']:.2f}, clients {per_check['clients']:.2f}"
    )
    print(f"  CPU, of all CPUs    {run.cpu_line()}")
    print(f"  TCP connections     {connects:10,}   for {len(samples):,} requests (warm-up included)")
    print(f"  HTTP statuses       {dict(sorted(statuses.items()))}")
    fallbacks = Path(log.name).read_bytes()[log_start:].decode(errors="replace").count(FALLBACK_WARNING)
    print(
        f"  Redis fallbacks     {fallbacks:10,}   server warnings that checks were counted in-process (Redis too slow)"
    )
    redis.Redis.from_url(args.redis_url).flushdb()


def post_once(port: int, token: str, path: str, body: bytes) -> tuple[int, dict]:
    status, content = Client(port, {"Authorization": f"Bearer {token}"}).post(path, body)
    return status, orjson.loads(content)


def sanity(port: int, token: str, accepted: int, body: bytes) -> bool:
    """Not timings: every accepted event is stored once, in the rollups too, and a replay changes nothing."""
    from django.db.models import Sum

    from usage.models import UsageEvent, UsageRollup

    try:  # what the last batches appended, as the charge job would roll it up (usage.fold, since issue 10)
        from usage.fold import fold
    except ImportError:  # an older tree: ingestion kept the rollups itself
        pass
    else:
        fold()
    stored = UsageEvent.objects.count()
    counted = UsageEvent.objects.exclude(kind__in=["count_tokens", "cache_storage"]).count()
    rolled = UsageRollup.objects.filter(granularity="day").aggregate(n=Sum("requests"))["n"] or 0
    status, replay = post_once(port, token, REPORT_PATH, body)
    after = UsageEvent.objects.count()
    checks = [
        (f"events stored = events accepted: {stored:,} = {accepted:,}", stored == accepted),
        (
            f"day rollups count every stored request (not count_tokens, not cache_storage): {rolled:,} = {counted:,}",
            rolled == counted,
        ),
        (
            f"a replayed batch: HTTP {status}, {replay.get('accepted')} accepted, {replay.get('duplicates')} "
            f"duplicates, {len(replay.get('rejected', ()))} rejected; events stored after it: {after:,}",
            status == 200 and replay.get("accepted") == 0 and replay.get("duplicates") == BATCH and after == stored,
        ),
    ]
    print("\nsanity (not timings):")
    for text, ok in checks:
        print(f"  {'ok  ' if ok else 'FAIL'} {text}")
    return all(ok for _, ok in checks)


def books_balance() -> bool:
    """Not timings: what the charge runs wrote adds up. Every usage charge equals the sum of its lines, and per
    account, charged + still pending equals what its billed events cost, to the nano-dollar (usage.charging)."""
    from django.db.models import Count, Sum

    from billing.models import EntryKind, LedgerEntry
    from usage.models import PendingCharge, UsageEvent

    costs = dict(
        UsageEvent.objects.filter(account_id__isnull=False)
        .values_list("account_id")
        .annotate(total=Sum("cost"))
        .order_by()
    )
    charges = (
        LedgerEntry.objects.filter(kind=EntryKind.USAGE_CHARGE)
        .values_list("account_id")
        .annotate(total=Sum("amount"), entries=Count("pk"))
        .order_by()
    )
    charged = {account_id: total for account_id, total, _ in charges}
    pending = dict(PendingCharge.objects.values_list("account_id").annotate(total=Sum("amount_nanos")).order_by())
    unequal = len(
        LedgerEntry.objects.raw(
            """SELECT e.id FROM billing_ledgerentry e LEFT JOIN billing_usageline l ON l.entry_id = e.id
               WHERE e.kind = 'usage_charge' GROUP BY e.id HAVING e.amount IS DISTINCT FROM sum(l.amount)"""
        )
    )
    mismatched = [
        account_id
        for account_id in costs.keys() | charged.keys() | pending.keys()
        if charged.get(account_id, 0) + Decimal(pending.get(account_id, 0)) / 10**9 != costs.get(account_id, 0)
    ]
    total_charged, total_pending = sum(charged.values(), Decimal(0)), Decimal(sum(pending.values())) / 10**9
    checks = [
        (
            f"every usage charge equals its lines: {sum(n for *_, n in charges):,} charges, {unequal} unequal",
            not unequal,
        ),
        (
            f"per account, charged + pending = the billed events' cost, for {len(costs)} accounts "
            f"({len(mismatched)} not): USD {total_charged:,} + {total_pending:,.9f} = "
            f"{sum(costs.values(), Decimal(0)):,.9f}",
            not mismatched,
        ),
    ]
    for text, ok in checks:
        print(f"  {'ok  ' if ok else 'FAIL'} {text}")
    return all(ok for _, ok in checks)


def in_process(key_ids: list[int], batches: int, profile_batches: int) -> None:
    """The same work as the server's, without HTTP: orjson.loads of the body, then usage.ingest.ingest."""
    from django.db import connection

    from usage.ingest import ingest

    bodies = make_bodies(secrets.randbits(64), key_ids, batches + profile_batches + 2)
    for body in bodies[:2]:  # warm-up: catalog, staging table
        ingest(orjson.loads(body)["events"])
    seconds, cpu = [], []
    for body in bodies[2 : 2 + batches]:
        started, started_cpu = time.perf_counter(), time.process_time()
        report = ingest(orjson.loads(body)["events"])
        seconds.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
        assert report.accepted == BATCH, report
    mean, mean_cpu = statistics.fmean(seconds), statistics.fmean(cpu)
    print(f"\nin-process (no HTTP, one process, {batches} batches): ingest() of {BATCH:,} events after orjson.loads")
    print(f"  p50 {statistics.median(seconds) * 1000:.1f} ms, mean {mean * 1000:.1f} ms: {BATCH / mean:,.0f} events/s")
    print(
        f"  of which this process's CPU {mean_cpu * 1000:.1f} ms (validation, rating, COPY rows), "
        f"the rest {(mean - mean_cpu) * 1000:.1f} ms mostly waiting for PostgreSQL"
    )
    if profile_batches:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        for body in bodies[2 + batches :]:
            ingest(orjson.loads(body)["events"])
        profiler.disable()
        print(f"\ncProfile of {profile_batches} × ingest() in-process, top 25 by internal time:")
        pstats.Stats(profiler).strip_dirs().sort_stats("tottime").print_stats(25)
    connection.close()


def print_versions(command: list[str], args) -> None:
    import django
    import redis
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        (pg_version,) = cursor.fetchone()
    redis_version = redis.Redis.from_url(args.redis_url).info("server")["redis_version"]
    print(f"command:    {shlex.join(sys.orig_argv)}")
    versions = [
        f"python: {platform.python_version()}",
        f"django: {django.get_version()}",
        f"postgresql: {pg_version}",
        f"redis: {redis_version}",
        f"gunicorn: {version('gunicorn')}",
    ]
    print(f"versions:   {'   '.join(versions)}")
    print(f"machine:    {platform.machine()}, {os.cpu_count()} CPUs (server, PostgreSQL, Redis and clients share them)")
    threads = f", {args.threads} threads each" if args.worker_class != "sync" else ""
    program = Path(command[0])
    shown = [str(program.relative_to(ROOT)) if program.is_relative_to(ROOT) else str(program), *command[1:]]
    print(f"server:     {args.workers} {args.worker_class} workers{threads}: {shlex.join(shown)}")
    print(
        f"settings:   DEBUG=0, CONN_MAX_AGE=600, DATABASE_URL={database_url(args.database)}, REDIS_URL={args.redis_url}"
    )


def add_target_arguments(parser: argparse.ArgumentParser, database: str = DB_NAME) -> None:
    """--database and --redis-url, --keep: the services a run uses (each person on a shared machine their own)."""
    parser.add_argument(
        "--database",
        default=database,
        type=database_name,
        help=f"database to drop, create and use (default {database})",
    )
    parser.add_argument("--redis-url", default=REDIS_URL, help=f"Redis database to use and flush (default {REDIS_URL})")
    parser.add_argument("--keep", action="store_true", help="leave the database behind")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20, help="timed seconds per ingestion run (default 20)")
    parser.add_argument("--check-duration", type=float, default=15, help="timed seconds of quota:check (default 15)")
    parser.add_argument("--warmup", type=float, default=3, help="untimed seconds before each run (default 3)")
    parser.add_argument("--clients", type=int, default=3, help="usage:report client processes (default 3)")
    parser.add_argument("--check-clients", type=int, default=4, help="quota:check client processes (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--worker-class", default="sync", help="gunicorn worker class (default sync, as deployed)")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker when not sync (default 4)")
    parser.add_argument(
        "--replay-every", type=int, default=5, help="second ingestion run: every Nth batch a replay (0: no such run)"
    )
    parser.add_argument("--in-process", type=int, default=20, help="batches to time through ingest() without HTTP")
    parser.add_argument("--profile", type=int, metavar="N", default=0, help="also cProfile N ingest() in-process")
    parser.add_argument(
        "--charging",
        action="store_true",
        help="three ingestion runs: projects not billed, billed without the charge job, billed with it",
    )
    parser.add_argument(
        "--charge-interval", type=float, default=20, help="seconds between charge runs (default 20, as deployed)"
    )
    parser.add_argument(
        "--charging-rounds",
        type=int,
        default=1,
        help="with --charging: billed runs without and with the charge job, this many times in turn (default 1)",
    )
    parser.add_argument(
        "--spread",
        type=float,
        default=SPREAD_SECONDS,
        help=f"events occurred up to this many seconds before they are sent, uniformly (default {SPREAD_SECONDS}; "
        "a fleet that reports as it serves: 60)",
    )
    add_target_arguments(parser)
    args = parser.parse_args()
    os.environ[SPREAD_ENV] = str(args.spread)  # for make_events, here and in the client processes

    # A SIGTERM (or a closed terminal) unwinds through the finally clauses: gunicorn stopped, database dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))
    environment = server_environment(args.database, args.redis_url)
    psql(f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)")
    psql(f"CREATE DATABASE {args.database}")
    server = None
    # Appending (O_APPEND), so that gunicorn's writes never depend on where this process reads.
    log = tempfile.NamedTemporaryFile("a", prefix="fleet-bench-gunicorn-", suffix=".log")  # noqa: SIM115
    try:
        setup_django(environment)
        from django.core.management import call_command
        from django.db import connections

        call_command("migrate", verbosity=0)
        started = time.perf_counter()
        seeded = seed()
        key_ids, raw_keys, token = seeded.key_ids, seeded.raw_keys, seeded.token
        elapsed = time.perf_counter() - started
        print(f"seeded:     {PROJECTS} Tier 3 projects with one key each, a fleet token, in {elapsed:.1f} s")
        port = free_port()
        command = gunicorn_command(args, port)
        print_versions(command, args)
        connections.close_all()  # no idle connection of ours while the server works

        server = start_gunicorn(command, port, environment, log)
        if args.charging:
            accepted, body = charging_runs(args, server.pid, port, seeded, environment)
            connections.close_all()
        else:
            accepted, body, _ = ingestion(args, server.pid, port, token, key_ids, replay_every=0)
        if args.replay_every:
            more, _, _ = ingestion(args, server.pid, port, token, key_ids, replay_every=args.replay_every)
            accepted += more
        ok = sanity(port, token, accepted, body)
        if args.charging:
            ok = books_balance() and ok
        connections.close_all()
        admission(args, server.pid, port, token, raw_keys, log)
        stop_gunicorn(server)

        if args.in_process or args.profile:
            in_process(key_ids, args.in_process, args.profile)
        connections.close_all()
        return 0 if ok else 1
    except Exception:
        tail = Path(log.name).read_bytes()[-4000:].decode(errors="replace")
        if tail:
            print(f"\ngunicorn's log (last 4,000 characters):\n{tail}", file=sys.stderr)
        raise
    finally:
        stop_gunicorn(server)
        log.close()
        if not args.keep:
            psql(f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)")


if __name__ == "__main__":
    sys.exit(main())
