"""Benchmark: the fleet API (usage:report, quota:check) over HTTP, against gunicorn as in production.

Creates a throwaway PostgreSQL database (studio_bench_fleet), seeds 20 Tier 3 projects with a key each and a fleet
token, starts `gunicorn studio.wsgi --workers 2` with production settings (DEBUG=0, persistent connections, Redis for
the limiter), then drives it from client processes on the same machine:

- usage:report: batches of 1,000 events, pre-serialised, sent back to back for a fixed time; then the same with a
  replay of an earlier batch mixed in every few batches;
- quota:check: single checks for random keys and models, sent back to back for a fixed time.

Alongside throughput and client-side latency it prints where the machine's CPU went (gunicorn, PostgreSQL, Redis, the
clients, anything else), then times usage.ingest.ingest() in-process on the same kind of batches, without HTTP.
Prints figures; it never asserts anything about timings. Sanity checks (events stored = events accepted, a replayed
batch is all duplicates) make the exit status 1 when they fail. Linux only (/proc, prctl).

    .venv/bin/python bench/fleet_http.py [--duration 20] [--check-duration 15] [--clients 3] [--check-clients 4]
        [--workers 2] [--worker-class sync] [--replay-every 5] [--in-process 20] [--profile 0] [--keep]
"""

import argparse
import ctypes
import http.client
import math
import multiprocessing
import os
import platform
import random
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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import NamedTuple

import orjson

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "studio_bench_fleet"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
REDIS_URL = "redis://127.0.0.1:6379/14"  # flushed before and after the admission run
PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-q", "-v", "ON_ERROR_STOP=1"]
HOST = "127.0.0.1"
REPORT_PATH = "/api/v1/usage:report"
CHECK_PATH = "/api/v1/quota:check"
FALLBACK_WARNING = "Redis unavailable for quota checks"  # usage.limiter logs it at most every 10 s per worker

PR_SET_PDEATHSIG = 1
PROJECTS = 20
BATCH = 1000
# Batches each ingestion client prepares: enough for this many events/s over the whole run, shared by the clients.
CEILING_EVENTS_PER_S = 40_000
# (value, weight) of the generated events.
MODELS = [("gemini-2.5-flash", 60), ("gemini-2.0-flash", 25), ("gemini-2.5-pro", 15)]
KINDS = [("generate", 85), ("batch", 8), ("count_tokens", 7)]
STATUSES = [(200, 95), (429, 2.5), (500, 2.5)]


def psql(sql: str) -> None:
    # Quiet the server's NOTICE for DROP DATABASE IF EXISTS.
    subprocess.run([*PSQL, "-c", sql], check=True, env={**os.environ, "PGOPTIONS": "-c client_min_messages=warning"})


def server_environment() -> dict[str, str]:
    """Production-like settings, shared by this process (seeding) and gunicorn: the key hashes need one pepper."""
    return {
        "DJANGO_SETTINGS_MODULE": "studio.settings",
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50)[:50],
        "API_KEY_PEPPER": secrets.token_urlsafe(32),
        "ALLOWED_HOSTS": HOST,
        "SECURE_SSL_REDIRECT": "0",
        "DATABASE_URL": DATABASE_URL,
        "CONN_MAX_AGE": "600",
        "REDIS_URL": REDIS_URL,
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


def seed() -> tuple[list[int], list[str], str]:
    """A user, PROJECTS Tier 3 projects with one key each, and a fleet token: (key ids, raw keys, raw token)."""
    from studio.models import ApiKey, BillingState, Membership, Project, Role, Tier, User
    from usage.models import FleetToken

    user = User.objects.create_user("fleet-bench@bench.example", None)
    projects = Project.objects.bulk_create(
        Project(
            project_id=f"gen-lang-client-{n:010d}",
            number=str(10**11 + n),
            name=f"Fleet bench {n}",
            tier=Tier.TIER_3,
            billing_state=BillingState.ACTIVE,
        )
        for n in range(PROJECTS)
    )
    Membership.objects.bulk_create(Membership(project=p, user=user, role=Role.OWNER) for p in projects)
    issued = [ApiKey.issue(project=p, name="Fleet bench", created_by=user) for p in projects]
    _, raw_token = FleetToken.issue(name="fleet bench")
    return [key.pk for key, _ in issued], [raw for _, raw in issued], raw_token


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
            "occurred_at": (now - timedelta(seconds=rng.uniform(0, 3600))).isoformat(),
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


def ingest_client(number, port, token, key_ids, batches, replay_every, seed, ready, go, window, results) -> None:
    """Send the prepared batches back to back until the window closes; every `replay_every`-th request replays a
    batch this client sent before. Puts its Batch samples, its first body, the number of connections it opened and
    whether it ran out of prepared batches on `results`."""
    _die_with_parent()
    bodies = make_bodies(seed + number, key_ids, batches)
    client = Client(port, {"Authorization": f"Bearer {token}"})
    rng = random.Random(number)
    ready.put(number)
    if not go.wait(timeout=600):
        return  # the benchmark is gone
    end = window.value
    samples, sent = [], 0
    while time.monotonic() < end:
        replay = bool(replay_every) and sent > 0 and len(samples) % replay_every == replay_every - 1
        if not replay and sent == len(bodies):
            break  # out of prepared batches: reported as such
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


def cpu_seconds(server_pid: int, client_pids: set[int]) -> dict[str, float]:
    """CPU seconds used so far by gunicorn (master and workers), PostgreSQL, Redis and the clients, and the machine's
    busy and total CPU seconds (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = dict.fromkeys(CPU_GROUPS, 0.0)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        pid, ppid, seconds = int(entry.name), int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks
        if server_pid in (pid, ppid):
            used["gunicorn"] += seconds
        elif name == "postgres":
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
    cpu: dict[str, float]  # CPU seconds used during the measured part, by CPU_GROUPS, "busy" and "total"

    def share(self, seconds: float) -> str:
        return f"{seconds / self.cpu['total']:.0%}"

    def cpu_line(self) -> str:
        """Where the machine's CPU went while measured, as shares of all its CPUs ("other": the rest of the
        machine, e.g. a test suite running meanwhile)."""
        other = self.cpu["busy"] - sum(self.cpu[group] for group in CPU_GROUPS)
        shares = [f"{group} {self.share(self.cpu[group])}" for group in CPU_GROUPS]
        idle = self.share(self.cpu["total"] - self.cpu["busy"])
        line = f"{', '.join(shares)}, other {self.share(max(other, 0))}, idle {idle}"
        if other > NOISY_SHARE * self.cpu["total"]:
            line += "\n  NOTE: other processes took a share of the CPUs: these figures are low, run again when quiet"
        return line


def run_clients(target, count: int, arguments: tuple, warmup: float, duration: float, server_pid: int) -> Run:
    """Start `count` client processes, wait until each has prepared its data, open the window for all of them at
    once, and measure the CPU used by each party after the warm-up."""
    context = multiprocessing.get_context("spawn")  # clean children: no Django, no inherited connections
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    window = context.Value("d", 0.0)
    processes = [
        context.Process(target=target, args=(n, *arguments, ready, go, window, results), daemon=True)
        for n in range(count)
    ]
    try:
        for process in processes:
            process.start()
        for _ in processes:
            ready.get(timeout=600)
        start = time.monotonic()
        window.value = start + warmup + duration
        go.set()
        clients = {process.pid for process in processes}
        time.sleep(warmup)
        before = cpu_seconds(server_pid, clients)
        time.sleep(max(0.0, start + warmup + duration - time.monotonic()))
        after = cpu_seconds(server_pid, clients)
        collected = sorted((results.get(timeout=120) for _ in processes), key=lambda r: r[0])
        for process in processes:
            process.join(timeout=10)
        cpu = {name: after[name] - before[name] for name in after}
        return Run(collected, start + warmup, start + warmup + duration, cpu)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()


# --- figures ------------------------------------------------------------------------------------------------------


def percentile(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] if len(values) > 1 else values[0]


def ingestion(args, server_pid: int, port: int, token: str, key_ids: list[int], replay_every: int) -> tuple[int, bytes]:
    """One ingestion run; prints its figures, returns (events accepted in all, one body that was sent)."""
    per_client = math.ceil(CEILING_EVENTS_PER_S * (args.warmup + args.duration) / BATCH / args.clients)
    arguments = (port, token, key_ids, per_client, replay_every, secrets.randbits(64))  # new event ids every run
    run = run_clients(ingest_client, args.clients, arguments, args.warmup, args.duration, server_pid)
    samples = [sample for _, client_samples, *_ in run.results for sample in client_samples]
    timed = [s for s in samples if run.start <= s.finished < run.end]
    fresh = [s for s in timed if not s.replay]
    replays = [s for s in timed if s.replay]
    errors = [s for s in samples if s.status != 200 or s.rejected]
    accepted = sum(s.accepted for s in timed)
    handled = sum(s.accepted + s.duplicates + s.rejected for s in timed)
    connects = sum(c[3] for c in run.results)
    label = f"with a replay every {replay_every} batches" if replay_every else "new events only"
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
    if any(c[4] for c in run.results):
        print(f"  NOTE: a client ran out of its {per_client} prepared batches: the figures are a lower bound")
    if errors:
        print(f"  ERRORS: {len(errors)} batches answered non-200 or with rejected events, e.g. {errors[0]}")
    return sum(s.accepted for s in samples), run.results[0][2]


def admission(args, server_pid: int, port: int, token: str, raw_keys: list[str], log) -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
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
    redis.Redis.from_url(REDIS_URL).flushdb()


def post_once(port: int, token: str, path: str, body: bytes) -> tuple[int, dict]:
    status, content = Client(port, {"Authorization": f"Bearer {token}"}).post(path, body)
    return status, orjson.loads(content)


def sanity(port: int, token: str, accepted: int, body: bytes) -> bool:
    """Not timings: every accepted event is stored once, in the rollups too, and a replay changes nothing."""
    from django.db.models import Sum

    from usage.models import UsageEvent, UsageRollup

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
    redis_version = redis.Redis.from_url(REDIS_URL).info("server")["redis_version"]
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
    print(f"settings:   DEBUG=0, CONN_MAX_AGE=600, DATABASE_URL={DATABASE_URL}, REDIS_URL={REDIS_URL}")


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
    parser.add_argument("--keep", action="store_true", help=f"leave the {DB_NAME} database behind")
    args = parser.parse_args()

    # A SIGTERM (or a closed terminal) unwinds through the finally clauses: gunicorn stopped, database dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))
    environment = server_environment()
    psql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    psql(f"CREATE DATABASE {DB_NAME}")
    server = None
    # Appending (O_APPEND), so that gunicorn's writes never depend on where this process reads.
    log = tempfile.NamedTemporaryFile("a", prefix="fleet-bench-gunicorn-", suffix=".log")  # noqa: SIM115
    try:
        setup_django(environment)
        from django.core.management import call_command
        from django.db import connections

        call_command("migrate", verbosity=0)
        started = time.perf_counter()
        key_ids, raw_keys, token = seed()
        elapsed = time.perf_counter() - started
        print(f"seeded:     {PROJECTS} Tier 3 projects with one key each, a fleet token, in {elapsed:.1f} s")
        port = free_port()
        command = gunicorn_command(args, port)
        print_versions(command, args)
        connections.close_all()  # no idle connection of ours while the server works

        server = start_gunicorn(command, port, environment, log)
        accepted, body = ingestion(args, server.pid, port, token, key_ids, replay_every=0)
        if args.replay_every:
            more, _ = ingestion(args, server.pid, port, token, key_ids, replay_every=args.replay_every)
            accepted += more
        ok = sanity(port, token, accepted, body)
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
            psql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


if __name__ == "__main__":
    sys.exit(main())
