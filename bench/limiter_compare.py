"""Benchmark: the quota check of this working tree's usage/limiter.py against the one of an earlier commit.

Both versions are loaded into one process (the earlier one from `git show <baseline>:usage/limiter.py`) and timed in
turn, round after round (the order of the versions rotating every round), so that the machine's changing load
falls on both alike. For each version:

- admitted: `RedisLimiter.check` and `InProcessLimiter.check` with the four limits admission builds (RPM, TPM, RPD,
  spend; the TPM and spend estimates reserved), high enough never to deny;
- refused: the same four limits with an RPM of 0, so every check is refused (since issue 11 a refusal is also
  recorded: one more hash field increment in the same script call).

With --control, a second copy of the working tree's limiter is timed as a third version: what it differs from "after"
is the noise floor of the comparison (on a shared 2-CPU VM, several microseconds). With --cap, the working tree's
limiter is also timed with a fifth limit, a project's monthly spend cap (window pacific_month, seeded once), as the
version "after, capped": what it differs from "before" is what a capped project's check costs more.

Prints, per round and contender, p50 / p99 / mean wall-clock microseconds per check, this process's CPU microseconds
per check, and Redis's own time per script call from INFO commandstats (cmdstat_evalsha: the whole server's, so the
calls column says whether anyone else ran scripts meanwhile; it should equal the checks timed). Then the medians over
the rounds. Prints figures; it never asserts anything.

    .venv/bin/python bench/limiter_compare.py --baseline 7681b04 [--checks 5000] [--warmup 200] [--rounds 5]
        [--control] [--cap] [--redis-url redis://127.0.0.1:6379/0]

Needs Redis. The script deletes its own keys ("rl:", "rsv:" and "dn:" under its bench scope) afterwards.
"""

import argparse
import importlib.util
import os
import platform
import secrets
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup_django(redis_url: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
    os.environ["REDIS_URL"] = redis_url
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def load_module(path: Path, name: str):
    """The Python file at `path`, imported as a module of its own called `name`."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_baseline(revision: str):
    """usage/limiter.py as of `revision`, imported as a module of its own."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{revision}:usage/limiter.py"], check=True, capture_output=True
    ).stdout
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "limiter_baseline.py"
        path.write_bytes(source)
        return load_module(path, "limiter_baseline")


def admission_limits(module, *, rpm: int) -> list:
    """The four limits admission checks (usage.admission.limits_for), built from `module`'s Limit."""
    limit = module.Limit
    return [
        limit("GenerateRequestsPerMinutePerProjectPerModel-Bench", module.MINUTE, rpm, 1, counter="rpm:m"),
        limit("GenerateContentInputTokensPerModelPerMinute-Bench", module.MINUTE, 10**12, 1200, counter="tpm:m",
              settles="input_tokens"),
        limit("GenerateRequestsPerDayPerProjectPerModel-Bench", module.PACIFIC_DAY, 10**9, 1, counter="rpd:m"),
        limit("GenerateSpendPer10MinutesPerProject-Bench", module.ROLLING_10M, 10**15, 360, settles="micro_usd"),
    ]  # fmt: skip


def evalsha_stats(server) -> tuple[int, int]:
    """(calls, microseconds) of EVALSHA since the server started."""
    stats = server.info("commandstats").get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    return stats["calls"], stats["usec"]


def timed(call: Callable[[], object], checks: int, warmup: int, server) -> dict[str, float]:
    for _ in range(warmup):
        call()
    clock = time.perf_counter_ns
    samples = []
    calls_before, usec_before = evalsha_stats(server)
    cpu_before = time.process_time_ns()
    for _ in range(checks):
        started = clock()
        call()
        samples.append((clock() - started) / 1000)
    cpu = (time.process_time_ns() - cpu_before) / 1000 / checks
    calls_after, usec_after = evalsha_stats(server)
    calls = calls_after - calls_before
    percentiles = statistics.quantiles(samples, n=100, method="inclusive")
    return {
        "p50": percentiles[49],
        "p99": percentiles[98],
        "mean": statistics.fmean(samples),
        "cpu": cpu,
        "calls": calls,
        "script": (usec_after - usec_before) / calls if calls else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="the commit to compare with, e.g. 7681b04")
    parser.add_argument("--checks", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--control", action="store_true", help="also time a second copy of the working tree's limiter (noise floor)"
    )
    parser.add_argument("--cap", action="store_true", help="also time the working tree's check with a spend cap")
    args = parser.parse_args()
    setup_django(args.redis_url)

    import redis

    from usage import limiter as current

    baseline = load_baseline(args.baseline)
    server = redis.Redis.from_url(args.redis_url)
    print(f"command:    {shlex.join(sys.orig_argv)}")
    print(
        f"python:     {platform.python_version()}   redis server: {server.info('server')['redis_version']}   "
        f"redis-py: {version('redis')}   django: {version('django')}"
    )
    print(f"machine:    {platform.machine()}, {os.cpu_count()} CPUs; Redis at {args.redis_url}")
    print(f"comparing:  usage/limiter.py at {args.baseline} (before) and in the working tree (after)")

    versions = [("before", baseline), ("after", current)]
    if args.control:
        versions.append(("after, copy", load_module(ROOT / "usage" / "limiter.py", "limiter_copy")))
    if args.cap:
        versions.append(("after, capped", current))
    scope = f"bench-{secrets.token_hex(4)}"
    kinds = ["Redis, admitted", "Redis, refused", "in-process, admitted", "in-process, refused"]
    contenders: dict[str, Callable[[], object]] = {}
    for label, module in versions:
        admitted, refused = admission_limits(module, rpm=10**9), admission_limits(module, rpm=0)
        if label == "after, capped":
            cap = module.Limit(
                "ProjectMonthlySpendCap",
                module.PACIFIC_MONTH,
                10**15,
                360,
                counter="ProjectMonthlySpendCap:0",
                settles="month_micro_usd",
                seed=lambda month: 0,
            )
            admitted, refused = [*admitted, cap], [*refused, cap]
        through_redis, in_process = module.RedisLimiter(args.redis_url), module.InProcessLimiter()
        # The baseline's check takes no model; the current one records a refusal under it.
        extra = {} if module is baseline else {"model": "gemini-2.5-flash"}

        def bind(limiter, limits, extra=extra):
            return lambda: limiter.check(scope, limits, **extra)

        contenders[f"Redis, admitted, {label}"] = bind(through_redis, admitted)
        contenders[f"Redis, refused, {label}"] = bind(through_redis, refused)
        contenders[f"in-process, admitted, {label}"] = bind(in_process, admitted)
        contenders[f"in-process, refused, {label}"] = bind(in_process, refused)
    labels = [label for label, _ in versions]

    results: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
    print(f"\n{args.checks} timed checks per contender and round after {args.warmup} warm-up; microseconds per check:")
    header = f"{'round':<6}{'contender':<34}{'p50':>8}{'p99':>8}{'mean':>8}{'CPU':>8}{'script':>8}{'calls':>8}"
    print(header)
    try:
        for round_number in range(1, args.rounds + 1):
            # Each kind in turn, its versions in an order that rotates every round: what runs first is not always
            # the same version.
            shift = (round_number - 1) % len(labels)
            rotated = labels[shift:] + labels[:shift]
            for name in [f"{kind}, {label}" for kind in kinds for label in rotated]:
                figures = timed(contenders[name], args.checks, args.warmup, server)
                results[name].append(figures)
                print(
                    f"{round_number:<6}{name:<34}{figures['p50']:>8.1f}{figures['p99']:>8.1f}{figures['mean']:>8.1f}"
                    f"{figures['cpu']:>8.1f}{figures['script']:>8.1f}{figures['calls']:>8}"
                )
    finally:
        for pattern in (f"rl:{{{scope}}}:*", f"rsv:{{{scope}}}:*", f"dn:{{{scope}}}*"):
            keys = list(server.scan_iter(match=pattern, count=10_000))
            for start in range(0, len(keys), 10_000):
                server.delete(*keys[start : start + 10_000])
    order = [f"{kind}, {label}" for kind in kinds for label in labels]

    print(f"\nmedians over {args.rounds} rounds (microseconds per check):")
    print(f"{'contender':<34}{'p50':>8}{'p99':>8}{'mean':>8}{'CPU':>8}{'script':>8}")
    for name in order:
        median = {key: statistics.median(r[key] for r in results[name]) for key in ("p50", "p99", "mean", "cpu")}
        script = statistics.median(r["script"] for r in results[name])
        print(
            f"{name:<34}{median['p50']:>8.1f}{median['p99']:>8.1f}{median['mean']:>8.1f}{median['cpu']:>8.1f}"
            f"{script:>8.1f}"
        )


if __name__ == "__main__":
    main()
