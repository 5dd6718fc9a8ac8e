"""The admission limiter: exact counts, windows (DST included), all-or-nothing checks, concurrency, Redis outages.

Tests marked by the `subject` fixture run on both implementations. The in-process one runs on a frozen clock
(time-machine); Redis keeps its own clock, so its runs start at a moment chosen so that the next few hundred
milliseconds stay within one second and one minute, which makes reset_seconds exact there too. Window rollover is
driven by the clock in-process, and checked on Redis by seeding the counters of earlier windows.
"""

import contextlib
import math
import multiprocessing
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import time_machine

from usage.limiter import (
    KEY_TTL_MARGIN,
    MINUTE,
    PACIFIC_DAY,
    ROLLING_10M,
    DayWindow,
    Decision,
    InProcessLimiter,
    Limit,
    Limiter,
    LimitState,
    RedisLimiter,
    get_limiter,
    pacific_day_windows,
)

# 29.75 s before a minute ends: reset_seconds of a minute window is 30 there.
FROZEN = datetime(2026, 1, 15, 12, 0, 30, 250_000, tzinfo=UTC)
# Generous for tests that are about counting: a slow CI must not turn them into tests of the fallback.
PATIENT = 1.0


@pytest.fixture
def scope() -> str:
    return f"test-{secrets.token_hex(6)}:gemini-2.5-flash"


@pytest.fixture
def redis_client(redis_url: str, scope: str) -> Iterator[redis.Redis]:
    """A plain client on the configured Redis; the test's own keys (and only those) are deleted afterwards."""
    client = redis.Redis.from_url(redis_url)
    yield client
    keys = list(client.scan_iter(match=f"rl:{{{scope}}}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@dataclass
class Subject:
    limiter: Limiter
    now: int  # whole seconds on the limiter's clock; stays true for a few hundred milliseconds

    @property
    def to_next_minute(self) -> int:
        return 60 - self.now % 60


def settle(client: redis.Redis) -> int:
    """Wait (under ~2.5 s) until Redis's clock is early in a second and not in a minute's last 2 s; return it."""
    while True:
        seconds, micros = client.time()
        if seconds % 60 >= 58:
            time.sleep(60 - seconds % 60 - micros / 1e6 + 0.02)
        elif not 10_000 <= micros < 500_000:
            time.sleep((1_000_000 - micros) / 1e6 + 0.02 if micros >= 500_000 else 0.02)
        else:
            return seconds


def away_from_pacific_midnight(margin: float = 5.0) -> None:
    """Sleep past a Pacific midnight that is less than `margin` seconds away (for tests that count all day)."""
    now = time.time()
    end = pacific_day_windows(now)[1].end
    if end - now < margin:
        time.sleep(end - now + 0.1)


@pytest.fixture(params=["in_process", "redis"])
def subject(request, scope: str) -> Iterator[Subject]:
    if request.param == "in_process":
        with time_machine.travel(FROZEN, tick=False):
            yield Subject(InProcessLimiter(), int(FROZEN.timestamp()))
        return
    client = request.getfixturevalue("redis_client")
    limiter = RedisLimiter(request.getfixturevalue("redis_url"), timeout=PATIENT)
    yield Subject(limiter, settle(client))
    assert limiter.fallbacks == 0


def test_rpm_allows_exactly_the_limit_then_denies(subject: Subject, scope: str):
    rpm = Limit("GenerateRequestsPerMinutePerProjectPerModel-Tier1", MINUTE, 3, 1)
    reset = subject.to_next_minute
    for remaining in (2, 1, 0):
        state = LimitState(rpm.quota_id, 3, remaining, reset)
        assert subject.limiter.check(scope, [rpm]) == Decision(True, [state], None)
    denied = LimitState(rpm.quota_id, 3, 0, reset)
    assert subject.limiter.check(scope, [rpm]) == Decision(False, [denied], denied)
    assert subject.limiter.check(scope, [rpm]) == Decision(False, [denied], denied)


def test_a_denied_check_counts_nothing(subject: Subject, scope: str):
    reset = subject.to_next_minute

    def check(tokens: int) -> Decision:
        return subject.limiter.check(scope, [Limit("RPM", MINUTE, 5, 1), Limit("TPM", MINUTE, 1000, tokens)])

    assert check(600) == Decision(True, [LimitState("RPM", 5, 4, reset), LimitState("TPM", 1000, 400, reset)], None)
    # Too big for TPM: refused, and the request of the minute it would have used is not taken either.
    tpm = LimitState("TPM", 1000, 400, reset)
    assert check(500) == Decision(False, [LimitState("RPM", 5, 4, reset), tpm], tpm)
    assert subject.limiter.peek(scope, [Limit("RPM", MINUTE, 5, 1), Limit("TPM", MINUTE, 1000, 500)]) == [
        LimitState("RPM", 5, 4, reset),
        LimitState("TPM", 1000, 400, reset),
    ]
    assert check(400) == Decision(True, [LimitState("RPM", 5, 3, reset), LimitState("TPM", 1000, 0, reset)], None)
    assert check(1).exceeded == LimitState("TPM", 1000, 0, reset)
    assert check(0) == Decision(True, [LimitState("RPM", 5, 2, reset), LimitState("TPM", 1000, 0, reset)], None)


def test_exceeded_is_the_first_limit_in_order(subject: Subject, scope: str):
    tpm, rpm = Limit("TPM", MINUTE, 100, 60), Limit("RPM", MINUTE, 1, 1)
    assert subject.limiter.check(scope, [tpm, rpm]).allowed
    # Both would be exceeded now: the answer names whichever comes first.
    assert subject.limiter.check(scope, [tpm, rpm]).exceeded == LimitState("TPM", 100, 40, subject.to_next_minute)
    assert subject.limiter.check(scope, [rpm, tpm]).exceeded == LimitState("RPM", 1, 0, subject.to_next_minute)


def test_peek_counts_nothing_and_scopes_are_separate(subject: Subject, scope: str):
    rpm = Limit("RPM", MINUTE, 2, 1)
    for _ in range(3):
        assert subject.limiter.peek(scope, [rpm]) == [LimitState("RPM", 2, 2, subject.to_next_minute)]
    assert subject.limiter.check(scope, [rpm]).allowed
    assert subject.limiter.peek(scope, [rpm]) == [LimitState("RPM", 2, 1, subject.to_next_minute)]
    assert subject.limiter.peek(f"{scope}-other", [rpm]) == [LimitState("RPM", 2, 2, subject.to_next_minute)]
    assert subject.limiter.check(scope, []) == Decision(True, [], None)


def test_limits_are_validated():
    with pytest.raises(ValueError, match="unknown window"):
        Limit("RPH", "hour", 10, 1)
    with pytest.raises(ValueError, match="negative"):
        Limit("RPM", MINUTE, 10, -1)
    with pytest.raises(ValueError, match="own"):
        InProcessLimiter().check("p1:m", [Limit("RPM", MINUTE, 10, 1), Limit("RPM", MINUTE, 20, 1)])


def test_minute_window_rolls_over_in_process(scope: str):
    rpm = Limit("RPM", MINUTE, 2, 1)
    limiter = InProcessLimiter()
    with time_machine.travel(datetime(2026, 1, 15, 12, 0, 59, 500_000, tzinfo=UTC), tick=False) as clock:
        assert [limiter.check(scope, [rpm]).allowed for _ in range(3)] == [True, True, False]
        assert limiter.check(scope, [rpm]).exceeded == LimitState("RPM", 2, 0, 1)
        clock.move_to(datetime(2026, 1, 15, 12, 0, 59, 999_999, tzinfo=UTC))
        assert not limiter.check(scope, [rpm]).allowed
        clock.move_to(datetime(2026, 1, 15, 12, 1, 0, tzinfo=UTC))
        assert limiter.check(scope, [rpm]) == Decision(True, [LimitState("RPM", 2, 1, 60)], None)
        clock.move_to(datetime(2026, 1, 15, 12, 3, 0, 100_000, tzinfo=UTC))
        assert limiter.peek(scope, [rpm]) == [LimitState("RPM", 2, 2, 60)]


def test_redis_counts_each_minute_in_its_own_key(redis_url: str, redis_client: redis.Redis, scope: str):
    now = settle(redis_client)
    minute = now // 60
    redis_client.set(f"rl:{{{scope}}}:RPM:minute:{minute - 1}", 3)  # the previous minute, full
    limiter = RedisLimiter(redis_url, timeout=PATIENT)
    assert limiter.check(scope, [Limit("RPM", MINUTE, 3, 1)]) == Decision(
        True, [LimitState("RPM", 3, 2, 60 - now % 60)], None
    )
    key = f"rl:{{{scope}}}:RPM:minute:{minute}"
    assert redis_client.get(key) == b"1"
    assert redis_client.expiretime(key) == (minute + 1) * 60 + KEY_TTL_MARGIN


def test_pacific_day_windows_across_dst():
    # 2026-03-08 springs forward (23 hours), 2026-11-01 falls back (25 hours); midnights as UTC epoch seconds.
    mar7, mar8, mar9, mar10 = 1772870400, 1772956800, 1773039600, 1773126000
    assert mar9 - mar8 == 23 * 3600
    for now in (mar8, mar8 + 12 * 3600, mar9 - 1, mar9 - 0.001):
        assert pacific_day_windows(now) == (
            DayWindow(mar7, mar8, 20260307),
            DayWindow(mar8, mar9, 20260308),
            DayWindow(mar9, mar10, 20260309),
        )
    oct31, nov1, nov2, nov3 = 1793430000, 1793516400, 1793606400, 1793692800
    assert nov2 - nov1 == 25 * 3600
    for now in (nov1, nov1 + 24 * 3600, nov2 - 1):
        assert pacific_day_windows(now) == (
            DayWindow(oct31, nov1, 20261031),
            DayWindow(nov1, nov2, 20261101),
            DayWindow(nov2, nov3, 20261102),
        )
    assert pacific_day_windows(nov2)[1] == DayWindow(nov2, nov3, 20261102)
    assert pacific_day_windows(nov1 - 0.5)[1] == DayWindow(oct31, nov1, 20261031)


@pytest.mark.parametrize(
    ("start", "end"),
    [(1772956800, 1773039600), (1793516400, 1793606400)],
    ids=["spring-forward-23h", "fall-back-25h"],
)
def test_requests_per_day_roll_at_pacific_midnight(scope: str, start: int, end: int):
    rpd = Limit("GenerateRequestsPerDayPerProjectPerModel-Tier1", PACIFIC_DAY, 2, 1)
    limiter = InProcessLimiter()

    def state(remaining: int, reset: int) -> LimitState:
        return LimitState(rpd.quota_id, 2, remaining, reset)

    with time_machine.travel(start - 0.5, tick=False) as clock:
        assert limiter.check(scope, [rpd]) == Decision(True, [state(1, 1)], None)  # the day before, last second
        clock.move_to(start)
        assert limiter.check(scope, [rpd]) == Decision(True, [state(1, end - start)], None)
        clock.move_to(start + 3600)
        assert limiter.check(scope, [rpd]) == Decision(True, [state(0, end - start - 3600)], None)
        clock.move_to(end - 3600)  # 23:00 local
        assert limiter.check(scope, [rpd]) == Decision(False, [state(0, 3600)], state(0, 3600))
        clock.move_to(end - 0.25)
        assert limiter.check(scope, [rpd]) == Decision(False, [state(0, 1)], state(0, 1))
        clock.move_to(end)
        assert limiter.check(scope, [rpd]) == Decision(True, [state(1, 86400)], None)


def test_redis_picks_the_pacific_day_that_holds_its_own_clock(redis_url: str, redis_client: redis.Redis, scope: str):
    """This process's clock a day off either way: the script still counts into Redis's current Pacific day."""
    away_from_pacific_midnight()
    today = pacific_day_windows(time.time())[1]
    rpd = Limit("RPD", PACIFIC_DAY, 5, 1)
    limiter = RedisLimiter(redis_url, timeout=PATIENT)
    for offset, remaining in ((-86400, 4), (86400, 3), (0, 2)):
        before = time.time()
        with time_machine.travel(before + offset):
            decision = limiter.check(scope, [rpd])
        after = time.time()
        assert decision.allowed
        assert decision.states[0].remaining == remaining
        assert math.ceil(today.end - after) <= decision.states[0].reset_seconds <= math.ceil(today.end - before)
    key = f"rl:{{{scope}}}:RPD:pacific_day:{today.day_id}"
    assert redis_client.get(key) == b"3"
    assert redis_client.expiretime(key) == today.end + KEY_TTL_MARGIN
    assert limiter.fallbacks == 0


def test_spend_over_a_rolling_ten_minutes_in_process(scope: str):
    base = int(datetime(2026, 1, 15, 12, 0, tzinfo=UTC).timestamp())
    limiter = InProcessLimiter()

    def spend(cost: int) -> Limit:
        return Limit("SpendPer10Minutes", ROLLING_10M, 1000, cost)

    with time_machine.travel(base + 0.5, tick=False) as clock:
        assert limiter.check(scope, [spend(300)]).states == [LimitState("SpendPer10Minutes", 1000, 700, 600)]
        clock.move_to(base + 180.5)
        # The oldest bucket, minute 0, leaves the window at base + 600.
        assert limiter.check(scope, [spend(500)]).states == [LimitState("SpendPer10Minutes", 1000, 200, 420)]
        clock.move_to(base + 540.5)
        denied = LimitState("SpendPer10Minutes", 1000, 200, 60)
        assert limiter.check(scope, [spend(300)]) == Decision(False, [denied], denied)
        clock.move_to(base + 599.9)
        assert limiter.peek(scope, [spend(300)]) == [LimitState("SpendPer10Minutes", 1000, 200, 1)]
        clock.move_to(base + 600)  # minute 0's 300 leave; minute 3's 500 stay until base + 780
        assert limiter.peek(scope, [spend(300)]) == [LimitState("SpendPer10Minutes", 1000, 500, 180)]
        assert limiter.check(scope, [spend(300)]).states == [LimitState("SpendPer10Minutes", 1000, 200, 180)]
        clock.move_to(base + 780)
        assert limiter.peek(scope, [spend(0)]) == [LimitState("SpendPer10Minutes", 1000, 700, 420)]
        clock.move_to(base + 1380)
        assert limiter.peek(scope, [spend(0)]) == [LimitState("SpendPer10Minutes", 1000, 1000, 600)]


def test_spend_over_a_rolling_ten_minutes_in_redis(redis_url: str, redis_client: redis.Redis, scope: str):
    now = settle(redis_client)
    minute = now // 60
    key = f"rl:{{{scope}}}:SpendPer10Minutes:rolling_10m"
    # 10 minutes ago: out of the window; 9 and 3 minutes ago: in it.
    redis_client.hset(key, mapping={minute - 10: 999, minute - 9: 100, minute - 3: 200})
    limiter = RedisLimiter(redis_url, timeout=PATIENT)

    def spend(cost: int) -> list[Limit]:
        return [Limit("SpendPer10Minutes", ROLLING_10M, 1000, cost)]

    to_next_minute = 60 - now % 60  # when the bucket of 9 minutes ago leaves
    denied = LimitState("SpendPer10Minutes", 1000, 700, to_next_minute)
    assert limiter.check(scope, spend(701)) == Decision(False, [denied], denied)
    assert redis_client.hlen(key) == 3  # a denied check writes nothing, not even the clean-up
    assert limiter.check(scope, spend(50)) == Decision(
        True, [LimitState("SpendPer10Minutes", 1000, 650, to_next_minute)], None
    )
    assert redis_client.hgetall(key) == {
        str(minute - 9).encode(): b"100",
        str(minute - 3).encode(): b"200",
        str(minute).encode(): b"50",
    }
    assert redis_client.expiretime(key) == (minute + 10) * 60 + KEY_TTL_MARGIN


def _hammer(url: str, scope: str, attempts: int, start, results) -> None:
    limiter = RedisLimiter(url, timeout=PATIENT)
    limits = [Limit("RPD", PACIFIC_DAY, 500, 1)]
    limiter.peek(scope, limits)  # connected, script loaded: the processes then start together
    start.wait(timeout=20)
    allowed = sum(limiter.check(scope, limits).allowed for _ in range(attempts))
    results.put((allowed, limiter.fallbacks))


def test_processes_sharing_redis_never_overshoot(redis_url: str, redis_client: redis.Redis, scope: str):
    """Four processes, 1,200 attempts on a limit of 500: exactly 500 allowed (a day window, so no minute to cross)."""
    away_from_pacific_midnight()
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(5), context.Queue()
    workers = [context.Process(target=_hammer, args=(redis_url, scope, 300, start, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    start.wait(timeout=20)
    outcomes = [results.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)
    assert [fallbacks for _, fallbacks in outcomes] == [0, 0, 0, 0]
    assert sum(allowed for allowed, _ in outcomes) == 500
    assert RedisLimiter(redis_url).peek(scope, [Limit("RPD", PACIFIC_DAY, 500, 1)])[0].remaining == 0


def test_threads_sharing_the_in_process_limiter_never_overshoot(scope: str):
    limiter, limits, allowed = InProcessLimiter(), [Limit("RPD", PACIFIC_DAY, 500, 1)], []

    def hammer() -> None:
        allowed.append(sum(limiter.check(scope, limits).allowed for _ in range(300)))

    away_from_pacific_midnight()
    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(allowed) == 500


def test_unreachable_redis_falls_back_to_this_process(caplog, scope: str):
    limiter = RedisLimiter("redis://127.0.0.1:1/0")  # nothing listens on port 1
    rpd = Limit("RPD", PACIFIC_DAY, 2, 1)
    started = time.perf_counter()
    decisions = [limiter.check(scope, [rpd]) for _ in range(3)]
    assert time.perf_counter() - started < 0.5
    assert [(decision.allowed, decision.states[0].remaining) for decision in decisions] == [
        (True, 1),
        (True, 0),
        (False, 0),
    ]
    assert decisions[2].exceeded is not None and decisions[2].exceeded.quota_id == "RPD"
    assert limiter.peek(scope, [rpd])[0].remaining == 0
    assert limiter.fallbacks == 4
    warnings = [record for record in caplog.records if record.name == "usage.limiter"]
    assert len(warnings) == 1  # at most one per 10 s
    assert warnings[0].levelname == "WARNING"


def test_silent_redis_times_out_quickly(scope: str):
    """A server that accepts connections but never answers: each check waits REDIS_TIMEOUT, then falls back."""
    with socket.create_server(("127.0.0.1", 0), backlog=8) as silent:
        limiter = RedisLimiter(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        started = time.perf_counter()
        assert [limiter.check(scope, [Limit("RPM", MINUTE, 1, 1)]).allowed for _ in range(2)] == [True, False]
        assert time.perf_counter() - started < 0.5
    assert limiter.fallbacks == 2


class RedisPlug:
    """A TCP proxy in front of Redis that a test can pull out and put back, to play an outage."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.plugged = True
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.plugged:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def pull(self) -> None:
        self.plugged = False
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.sockets.clear()

    def push(self) -> None:
        self.plugged = True

    def close(self) -> None:
        self.pull()
        self.server.close()


def test_back_to_redis_on_the_next_call_after_an_outage(redis_url: str, redis_client: redis.Redis, scope: str):
    away_from_pacific_midnight()
    target = urlsplit(redis_url)
    plug = RedisPlug(target.hostname or "127.0.0.1", target.port or 6379)
    credentials = target.netloc.rpartition("@")[0]
    via_plug = urlunsplit(target._replace(netloc=f"{credentials}@127.0.0.1:{plug.port}".lstrip("@")))
    try:
        limiter = RedisLimiter(via_plug, timeout=PATIENT)
        rpd = [Limit("RPD", PACIFIC_DAY, 10, 1)]
        assert limiter.check(scope, rpd).states[0].remaining == 9  # Redis
        plug.pull()
        assert limiter.check(scope, rpd).states[0].remaining == 9  # this process: its own count starts at 0
        assert limiter.fallbacks == 1
        plug.push()
        assert limiter.check(scope, rpd).states[0].remaining == 8  # Redis again, where the first check counted
        assert limiter.fallbacks == 1
    finally:
        plug.close()


def test_get_limiter_is_one_per_process_and_follows_redis_url(settings):
    settings.REDIS_URL = ""
    assert isinstance(get_limiter(), InProcessLimiter)
    assert get_limiter() is get_limiter()
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    assert isinstance(get_limiter(), RedisLimiter)
    assert get_limiter() is get_limiter()
