"""Benchmark: one quota check through RedisLimiter against django-ratelimit's is_ratelimited, both on real Redis.

RedisLimiter checks three limits (RPM, TPM, RPD) of one scope per call, in one Lua script; django-ratelimit checks one
limit ("1000/m", fixed key and group, increment=True) through Django's Redis cache. The in-process limiter is timed
too, for reference. Both limiters are also timed with the four limits admission checks (RPM, TPM, RPD, spend), whose
TPM and spend estimates are reserved until the usage is reported: the check signs a reservation id. Limits of
the RedisLimiter are high enough never to deny; django-ratelimit's starts answering "limited" after 1,000 calls a
minute, which costs it the same work. Prints figures; it never asserts anything.

    .venv/bin/python bench/limiter.py [--checks 5000] [--warmup 200] [--rounds 3] [--redis-url redis://127.0.0.1:6379/0]

Needs Redis (django-ratelimit is a project dependency: it throttles sign-up and password-reset e-mails).
"""

import argparse
import os
import platform
import secrets
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup_django(redis_url: str) -> None:
    """Studio settings, with Django's default cache on Redis (what django-ratelimit counts in)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
    os.environ["REDIS_URL"] = redis_url
    sys.path.insert(0, str(ROOT))
    import django
    from django.conf import settings

    django.setup()
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_url}}


def timed(call: Callable[[], object], checks: int, warmup: int) -> list[float]:
    """Microseconds of each of `checks` calls, after `warmup` untimed ones (connections, script load)."""
    for _ in range(warmup):
        call()
    clock = time.perf_counter_ns
    samples = []
    for _ in range(checks):
        started = clock()
        call()
        samples.append((clock() - started) / 1000)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    percentiles = statistics.quantiles(samples, n=100, method="inclusive")
    mean = statistics.fmean(samples)
    return {"p50": percentiles[49], "p99": percentiles[98], "mean": mean, "per_s": 1e6 / mean}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="each round times every contender once, in turn")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    setup_django(args.redis_url)

    import redis
    from django.test import RequestFactory
    from django_ratelimit.core import is_ratelimited

    from usage.limiter import MINUTE, PACIFIC_DAY, ROLLING_10M, InProcessLimiter, Limit, RedisLimiter

    server = redis.Redis.from_url(args.redis_url)
    print(f"command:    {shlex.join(sys.orig_argv)}")
    print(
        f"python:     {platform.python_version()}   redis server: {server.info('server')['redis_version']}   "
        f"redis-py: {version('redis')}   django: {version('django')}   django-ratelimit: {version('django-ratelimit')}"
    )
    print(f"machine:    {platform.machine()}, {os.cpu_count()} CPUs; Redis at {args.redis_url}")

    scope = f"bench-{secrets.token_hex(4)}:gemini-2.5-flash"
    limits = [
        Limit("GenerateRequestsPerMinutePerProjectPerModel-Bench", MINUTE, 10**9, 1),
        Limit("GenerateInputTokensPerMinutePerProjectPerModel-Bench", MINUTE, 10**12, 1200),
        Limit("GenerateRequestsPerDayPerProjectPerModel-Bench", PACIFIC_DAY, 10**9, 1),
    ]
    # As admission builds them (usage.admission.limits_for): the TPM and spend costs are estimates, reserved.
    reserving = [
        *limits[:1],
        Limit("GenerateInputTokensPerMinutePerProjectPerModel-Bench", MINUTE, 10**12, 1200, settles="input_tokens"),
        *limits[2:],
        Limit("GenerateSpendPer10MinutesPerProject-Bench", ROLLING_10M, 10**15, 360, settles="micro_usd"),
    ]
    redis_limiter, in_process = RedisLimiter(args.redis_url), InProcessLimiter()
    request = RequestFactory().post("/api/v1/quota:check")

    def fixed_key(group: str, request: object) -> str:
        return "bench-project"

    contenders: dict[str, Callable[[], object]] = {
        "RedisLimiter.check, 3 limits": lambda: redis_limiter.check(scope, limits),
        "django-ratelimit, 1 limit": lambda: is_ratelimited(
            request, group="bench", key=fixed_key, rate="1000/m", increment=True
        ),
        "InProcessLimiter.check, 3 limits": lambda: in_process.check(scope, limits),
        "RedisLimiter.check, 4 limits, 2 reserved": lambda: redis_limiter.check(scope, reserving),
        "InProcessLimiter.check, 4, 2 reserved": lambda: in_process.check(scope, reserving),
    }
    results: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
    print(f"\n{args.checks} timed calls per contender and round after {args.warmup} warm-up; microseconds per call:")
    print(f"{'round':<6}{'contender':<42}{'p50':>9}{'p99':>9}{'mean':>9}{'calls/s':>10}")
    try:
        for round_number in range(1, args.rounds + 1):
            for name, call in contenders.items():
                figures = summary(timed(call, args.checks, args.warmup))
                results[name].append(figures)
                print(
                    f"{round_number:<6}{name:<42}{figures['p50']:>9.1f}{figures['p99']:>9.1f}"
                    f"{figures['mean']:>9.1f}{figures['per_s']:>10,.0f}"
                )
    finally:
        for pattern in (f"rl:{{{scope}}}:*", f"rsv:{{{scope}}}:*"):  # counters, and reservations never settled
            keys = list(server.scan_iter(match=pattern, count=10_000))
            for start in range(0, len(keys), 10_000):
                server.delete(*keys[start : start + 10_000])
    print(f"\nRedisLimiter fell back to the in-process limiter {redis_limiter.fallbacks} time(s)")

    redis_name, ratelimit_name = list(contenders)[:2]
    print("\ndjango-ratelimit ÷ RedisLimiter, per round (>1: RedisLimiter is faster):")
    for round_number, (ours, theirs) in enumerate(zip(results[redis_name], results[ratelimit_name], strict=True), 1):
        print(
            f"round {round_number}: p50 {theirs['p50'] / ours['p50']:.2f}×, p99 {theirs['p99'] / ours['p99']:.2f}×, "
            f"mean {theirs['mean'] / ours['mean']:.2f}×"
        )


if __name__ == "__main__":
    main()
