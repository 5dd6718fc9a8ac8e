"""Benchmark: settling a batch of reported events in the limiter, usage/limiter.py now against an earlier commit's.

Both versions are loaded into one process (the earlier one from `git show <baseline>:usage/limiter.py`, as
bench/limiter_compare.py does) and run in turn, round after round, the order rotating every round. Per version and
round:

1. admit: `RedisLimiter.check` --events times (default 1,000) with the four limits admission builds (RPM, TPM, RPD,
   spend; the TPM and spend estimates reserved), spread over --projects scopes (default 20), as one usage:report batch
   of a busy fleet would have been admitted;
2. settle: one `RedisLimiter.settle_many` with those events' usages, each with its reservation id and actual figures
   (input tokens and micro-USD around the estimates), as usage.settlement passes a batch;
3. the same two steps through `InProcessLimiter`, for reference.

It prints, per round and version: the admission's Redis time per check (INFO commandstats, cmdstat_evalsha: the whole
server's, so its `calls` column says whether someone else ran scripts meanwhile), then for the settlement of the batch
its wall and CPU milliseconds in this process, Redis's milliseconds in the settle script(s), the round trips and the
bytes this process sent to Redis (counted at the connection), and the reservation keys the batch left in Redis with
their memory (MEMORY USAGE of one, times their number); then the in-process settlement's CPU milliseconds. It also
prints the share of the machine's CPUs that other processes used while measuring (from /proc): above 10 % the figures
are noisy. Then the medians over the rounds. Prints figures; it never asserts anything.

    .venv/bin/python bench/settlement_compare.py --baseline b6e6782 [--events 1000] [--projects 20] [--rounds 7]
        [--redis-url redis://127.0.0.1:6379/0]

Needs Redis and Linux (/proc). The script deletes its own keys ("rl:", "rsv:", "dn:" under its bench scopes) afterwards.
"""

import argparse
import os
import platform
import random
import secrets
import shlex
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.limiter_compare import admission_limits, evalsha_stats, load_baseline, setup_django  # noqa: E402


def evalsha_since(server, before: tuple[int, int]) -> tuple[int, int]:
    """(calls, microseconds) of EVALSHA since `before` (an earlier evalsha_stats)."""
    calls, usec = evalsha_stats(server)
    return calls - before[0], usec - before[1]


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot (/proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def redis_server_jiffies(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


class Wire:
    """What this process sends to Redis: round trips (one per packed send: a pipeline is one) and bytes."""

    def __init__(self) -> None:
        self.sends = 0
        self.bytes = 0

    def connection_class(self, base):
        wire = self

        class Counting(base):
            def send_packed_command(self, command, check_health=True):
                wire.sends += 1
                wire.bytes += len(command) if isinstance(command, bytes | str) else sum(len(part) for part in command)
                return super().send_packed_command(command, check_health)

        return Counting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="the commit to compare with, e.g. b6e6782")
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--projects", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    setup_django(args.redis_url)

    import redis

    from usage import limiter as current

    baseline = load_baseline(args.baseline)
    server = redis.Redis.from_url(args.redis_url)
    server_pid = int(server.info("server")["process_id"])
    print(f"command:    {shlex.join(sys.orig_argv)}")
    print(
        f"python:     {platform.python_version()}   redis server: {server.info('server')['redis_version']}   "
        f"redis-py: {version('redis')}   django: {version('django')}"
    )
    print(f"machine:    {platform.machine()}, {os.cpu_count()} CPUs; Redis at {args.redis_url}")
    print(f"comparing:  usage/limiter.py at {args.baseline} (before) and in the working tree (after)")

    prefix = f"bench-{secrets.token_hex(4)}"
    rng = random.Random(7)
    versions = {"before": baseline, "after": current}
    wires = {label: Wire() for label in versions}
    limiters = {}
    for label, module in versions.items():
        through_redis = module.RedisLimiter(args.redis_url, timeout=1.0)
        pool = through_redis._redis.connection_pool
        pool.connection_class = wires[label].connection_class(pool.connection_class)
        limiters[label] = (through_redis, module.InProcessLimiter())

    def batch(label: str, module, limiter, round_number: int) -> tuple[dict[str, list], list[str]]:
        """Admit --events checks over --projects scopes; the usages of a report of them, by scope."""
        limits = admission_limits(module, rpm=10**9)
        counters = {"input_tokens": module.Counter("tpm:m", module.MINUTE)}
        counters["micro_usd"] = module.Counter(limits[3].quota_id, module.ROLLING_10M)
        scopes = [f"{prefix}-{label}-{round_number}-{p}" for p in range(args.projects)]
        usages: dict[str, list] = {scope: [] for scope in scopes}
        for index in range(args.events):
            scope = scopes[index % len(scopes)]
            decision = limiter.check(scope, limits, model="gemini-2.5-flash")
            tokens, micro_usd = rng.randint(600, 1800), rng.randint(150, 450)
            amounts = {"input_tokens": tokens, "micro_usd": micro_usd}
            usages[scope].append(module.Usage(decision.reservation_id, amounts, counters))
        return usages, scopes

    def measure(label: str, round_number: int) -> dict[str, float]:
        module = versions[label]
        through_redis, in_process = limiters[label]
        wire = wires[label]
        busy_before, total_before = machine_busy()
        own_before, server_before = time.process_time(), redis_server_jiffies(server_pid)

        before = evalsha_stats(server)
        usages, scopes = batch(label, module, through_redis, round_number)
        check_calls, check_usec = evalsha_since(server, before)
        rsv = [key for scope in scopes for key in server.scan_iter(match=f"rsv:{{{scope}}}:*", count=1000)]
        memory = (server.memory_usage(rsv[0]) or 0) * len(rsv) if rsv else 0

        sends, sent = wire.sends, wire.bytes
        before = evalsha_stats(server)
        cpu, started = time.process_time(), time.perf_counter()
        through_redis.settle_many(usages)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        settle_calls, settle_usec = evalsha_since(server, before)
        left = sum(1 for scope in scopes for _ in server.scan_iter(match=f"rsv:{{{scope}}}:*", count=1000))

        local_usages, _ = batch(label, module, in_process, round_number)
        local_cpu = time.process_time()
        in_process.settle_many(local_usages)
        local_cpu = time.process_time() - local_cpu

        busy_after, total_after = machine_busy()
        own = time.process_time() - own_before
        server_cpu = (redis_server_jiffies(server_pid) - server_before) / os.sysconf("SC_CLK_TCK")
        jiffy = 1 / os.sysconf("SC_CLK_TCK")
        other = (busy_after - busy_before) * jiffy - own - server_cpu
        share = max(other, 0) / ((total_after - total_before) * jiffy) if total_after > total_before else 0.0
        return {
            "check script us": check_usec / check_calls if check_calls else 0.0,
            "check calls": check_calls,
            "settle wall ms": wall * 1000,
            "settle CPU ms": cpu * 1000,
            "settle Redis ms": settle_usec / 1000,
            "settle calls": settle_calls,
            "round trips": wire.sends - sends,
            "bytes sent": wire.bytes - sent,
            "rsv keys": len(rsv),
            "rsv left": left,
            "rsv memory KB": memory / 1024,
            "in-process CPU ms": local_cpu * 1000,
            "other CPU %": share * 100,
        }

    columns = [
        ("check script us", "{:>8.1f}", "chk µs"),
        ("check calls", "{:>7.0f}", "calls"),
        ("settle wall ms", "{:>8.2f}", "wall ms"),
        ("settle CPU ms", "{:>8.2f}", "CPU ms"),
        ("settle Redis ms", "{:>9.2f}", "Redis ms"),
        ("settle calls", "{:>7.0f}", "calls"),
        ("round trips", "{:>6.0f}", "RTs"),
        ("bytes sent", "{:>9.0f}", "bytes"),
        ("rsv keys", "{:>6.0f}", "keys"),
        ("rsv left", "{:>6.0f}", "left"),
        ("rsv memory KB", "{:>8.1f}", "mem KB"),
        ("in-process CPU ms", "{:>8.2f}", "local"),
        ("other CPU %", "{:>7.1f}", "other%"),
    ]
    header = f"{'round':<6}{'version':<8}" + "".join(f"{title:>{len(fmt.format(0))}}" for _, fmt, title in columns)

    def row(prefix_text: str, figures: dict[str, float]) -> str:
        return prefix_text + "".join(fmt.format(figures[key]) for key, fmt, _ in columns)

    print(
        f"\n{args.events} events over {args.projects} projects per batch; chk µs: Redis's time per admission check; "
        "the settlement of the batch: wall and CPU ms in this process, Redis ms in its script calls, round trips and "
        "bytes sent; reservation keys written by the checks, left after settling, and their memory; the in-process "
        "limiter's settlement CPU ms; other processes' share of the CPUs."
    )
    print(header)
    labels = list(versions)
    results: dict[str, list[dict[str, float]]] = {label: [] for label in labels}
    try:
        for label in labels:  # warm-up: connections, script loads
            measure(label, 0)
        for round_number in range(1, args.rounds + 1):
            shift = (round_number - 1) % len(labels)
            for label in labels[shift:] + labels[:shift]:
                figures = measure(label, round_number)
                results[label].append(figures)
                print(row(f"{round_number:<6}{label:<8}", figures))
    finally:
        keys = [key for pattern in ("rl:", "rsv:", "dn:") for key in server.scan_iter(match=f"{pattern}{{{prefix}-*")]
        for start in range(0, len(keys), 10_000):
            server.delete(*keys[start : start + 10_000])

    print(f"\nmedians over {args.rounds} rounds:")
    print(header)
    for label in labels:
        print(
            row(f"{'':<6}{label:<8}", {key: statistics.median(r[key] for r in results[label]) for key, _, _ in columns})
        )


if __name__ == "__main__":
    main()
