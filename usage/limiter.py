"""Admission limits for ``POST /api/v1/quota:check``: may this model request run now?

Per scope (admission uses the project, ``"p123"``, and names per-model counters ``"<quota_id>:<model>"``) a
check carries the tier's request limits (requests per minute, input tokens per minute, requests per Pacific day)
and, optionally, a spend limit over a rolling 10 minutes. They are checked and counted together, all or nothing:
if any one would be exceeded, nothing is counted, so a request refused for its tokens does not also use up a
request of the minute.

Windows:

- ``minute``: the clock minute (epoch seconds // 60); it resets at the next minute.
- ``pacific_day``: the calendar day in America/Los_Angeles, the day the quotas are sold by. Days of 23 and 25 hours
  (DST) are computed with zoneinfo, never as 86,400 seconds.
- ``rolling_10m``: the last 10 minutes as ten one-minute buckets; a bucket leaves the sum a whole minute at a time.

Two implementations share these semantics. ``RedisLimiter`` holds the counters for the whole fleet: one Lua script per
check reads and increments every counter atomically, with Redis's clock as the only clock, so workers whose clocks
disagree still count into the same windows. ``InProcessLimiter`` holds them in this process (development, tests, and
the fallback below); ``get_limiter()`` picks one from ``settings.REDIS_URL``.

Redis unreachable or slow: the limiter must not become the outage. A check that Redis does not answer within
``REDIS_TIMEOUT`` seconds (connect or reply), or answers with an error (any ``RedisError``, a failover's READONLY or
LOADING included), is answered by an in-process limiter instead. The limits then hold per process only: each worker
grants up to the full limit, a degraded mode that is by design more permissive than refusing all traffic. A warning is
logged at most once every ``FALLBACK_WARNING_INTERVAL`` seconds per limiter (one per process), with the number of
checks answered locally since the previous one. The next check tries Redis again; there is no circuit breaker, so
while Redis is down every check pays for one attempt: next to nothing when the connection is refused, up to
``REDIS_TIMEOUT`` (twice that for a new connection, connect then handshake) when the host does not answer. Counts made
in the process during an outage stay there and are not copied to Redis.

Reservations and settlement. Some costs are estimates (the prompt's tokens, its price): a limit marked ``settles``
names the measure of reported usage that replaces its cost later. A counted check with such limits records, in the
same atomic step, a reservation (``Decision.reservation_id``): for each of those limits the counter, the bucket it
counted in (the minute) and the amount. When the usage is reported, ``settle`` replaces each reserved amount by the
actual one: the difference goes into the bucket of the reservation while that bucket is still in its window (the same
clock minute for ``minute``, the last 10 minutes for ``rolling_10m``); once it has left the window, more than estimated
still counts, in the current bucket, and less is dropped. No counter goes below zero. A reservation is settled once
(it is deleted) and lapses after ``settings.RESERVATION_TTL_SECONDS``; usage without a reservation (none given,
unknown, lapsed) adds its whole amount to the current bucket of the counters the caller names. Settlement through Redis
is one script call per scope (several scopes: one pipeline); if Redis fails, it is skipped with a warning (at most one
per FALLBACK_WARNING_INTERVAL), never raised: the windows then keep the estimates.

Denials on record (X6). A counted check that is refused adds 1 to the denials of its scope, keyed by the model the
caller names (`check(..., model=...)`), the quota id of the first exceeded limit and the clock minute, in the same
atomic step (through Redis: in the same script call, no extra round trip). A peek records nothing, nor does an admitted
check. Through Redis they are one hash per scope, "dn:{<scope>}" (the scope's hash tag, so a Redis Cluster keeps them
on the scope's node), field "<minute>|<model>|<quota id>", which lives DENIAL_TTL_SECONDS after its newest field;
`claim_denials` takes them out atomically (renamed to a claim key of the scope, "dn:{<scope>}:claim", under a claim
id) and `release_denials` deletes the claims once their counts are written elsewhere (usage.denials, the
flush_denials job, which makes that exactly once). In-process denials (the InProcessLimiter, and the RedisLimiter's
fallback during an outage) live in this process's memory until `take_local_denials` takes them.
"""

import logging
import math
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import NamedTuple, Protocol
from zoneinfo import ZoneInfo

import orjson
import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError
from redis.retry import Retry

logger = logging.getLogger(__name__)

MINUTE = "minute"
PACIFIC_DAY = "pacific_day"
ROLLING_10M = "rolling_10m"
WINDOWS = frozenset({MINUTE, PACIFIC_DAY, ROLLING_10M})

PACIFIC = ZoneInfo("America/Los_Angeles")
ROLLING_BUCKETS = 10  # one-minute buckets in a rolling_10m window

# Socket connect and read timeout for Redis, in seconds. A check is on the path of every model request: past this,
# answering from the in-process limiter is better than waiting.
REDIS_TIMEOUT = 0.05
FALLBACK_WARNING_INTERVAL = 10.0
# Keys outlive their window by this many seconds, so that a clock a little behind still finds its counter.
KEY_TTL_MARGIN = 60
# InProcessLimiter drops ended windows at most this often (seconds of its clock).
SWEEP_INTERVAL = 60.0
# A scope's denials not claimed within this many seconds of its newest minute with a denial are dropped by Redis (the
# flush_denials job claims them every minute: this only bounds what a job stopped for days leaves behind). Claim keys
# live as long.
DENIAL_TTL_SECONDS = 7 * 86_400
# In-process denials are due to be written (`local_denials_due`) this long after the first one not yet taken.
LOCAL_DENIALS_INTERVAL = 60.0


@dataclass(frozen=True)
class Limit:
    """One limit to check: its counter is keyed by scope, counter (default: quota_id) and the window instance."""

    quota_id: str  # e.g. "GenerateRequestsPerMinutePerProjectPerModel-Tier1", carried through to the answer
    window: str  # MINUTE | PACIFIC_DAY | ROLLING_10M
    limit: int  # max units per window (for spend: micro-USD)
    cost: int  # units this request uses (1 request, N input tokens, estimated micro-USD)
    # What the counter is named by within the scope when not by the quota id alone: a per-model limit of a
    # project-wide scope passes "<quota_id>:<model>", so that all counters of one project share one hash tag.
    counter: str = ""
    # The measure of reported usage (e.g. "input_tokens") that replaces `cost` when the request's usage is reported:
    # the cost is then an estimate, reserved by the check and settled later. Empty: the cost is exact (1 request).
    settles: str = ""

    @property
    def counter_name(self) -> str:
        return self.counter or self.quota_id

    def __post_init__(self) -> None:
        # Checked here, once, rather than on every path that reads a Limit: the Lua script trusts these.
        if self.window not in WINDOWS:
            raise ValueError(f"unknown window {self.window!r} (one of {sorted(WINDOWS)})")
        if self.limit < 0 or self.cost < 0:
            raise ValueError(f"limit and cost must not be negative: {self!r}")
        if self.settles and self.window not in SETTLED_WINDOWS:
            raise ValueError(f"only {sorted(SETTLED_WINDOWS)} windows settle: {self!r}")


# Windows whose counts can be settled: their buckets are minutes.
SETTLED_WINDOWS = frozenset({MINUTE, ROLLING_10M})


class Counter(NamedTuple):
    """A counter of a scope, as a Limit names it (`counter_name`, `window`)."""

    name: str
    window: str


class Usage(NamedTuple):
    """What one admitted request actually used, for `Limiter.settle`."""

    reservation_id: str | None  # as the check answered it; None: no reservation to replace
    amounts: dict[str, int]  # measure -> actual amount, e.g. {"input_tokens": 10, "micro_usd": 3}
    # measure -> where the amount counts when no reservation is found (none given, unknown or lapsed); a measure
    # without a counter then counts nowhere.
    counters: dict[str, Counter]


@dataclass(frozen=True)
class LimitState:
    quota_id: str
    limit: int
    remaining: int  # after this request if allowed; current remaining if denied
    reset_seconds: int  # seconds until the window rolls (ceil, >= 1)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    states: list[LimitState]  # one per Limit, same order
    exceeded: LimitState | None  # the first limit that would be exceeded; its reset_seconds is the retry delay
    # Set when an admitted check reserved the estimates of its settling limits: pass it back with the usage.
    reservation_id: str | None = None


class Denials(NamedTuple):
    """`count` checks of `scope` for `model` refused in the clock minute `minute` (epoch seconds // 60), each because
    of `quota_id` (the first limit it exceeded, as the Decision named it)."""

    scope: str
    model: str
    quota_id: str
    minute: int
    count: int


@dataclass(frozen=True)
class DenialClaim:
    """A scope's denials taken out of Redis under `claim_id`; they stay in a claim key of their own until released."""

    scope: str
    claim_id: str
    denials: list[Denials]


class Limiter(Protocol):
    def check(self, scope: str, limits: list[Limit], *, model: str = "") -> Decision: ...

    def peek(self, scope: str, limits: list[Limit]) -> list[LimitState]: ...

    def settle(self, scope: str, usages: list[Usage]) -> None: ...

    def settle_many(self, usages_by_scope: dict[str, list[Usage]]) -> None: ...

    def claim_denials(self, claim_id: str) -> list[DenialClaim]: ...

    def release_denials(self, claims: list[DenialClaim]) -> None: ...

    def take_local_denials(self) -> list[Denials]: ...

    def restore_local_denials(self, denials: list[Denials]) -> None: ...

    def local_denials_due(self) -> bool: ...


def new_reservation_id() -> str:
    """An opaque, URL-safe id (22 characters of [A-Za-z0-9_-]) that nobody can guess for another's request."""
    return secrets.token_urlsafe(16)


def _in_window(window: str, bucket: int, minute: int) -> bool:
    """Whether a reservation's bucket still counts in its window at `minute` (then a settlement corrects it there)."""
    return bucket == minute if window == MINUTE else bucket > minute - ROLLING_BUCKETS


class DayWindow(NamedTuple):
    """One Pacific calendar day as [start, end) epoch seconds; day_id (YYYYMMDD) names its counters."""

    start: int
    end: int
    day_id: int


def _pacific_midnight(day: date) -> int:
    # Los Angeles changes its clocks at 02:00, so local midnight always exists and is never ambiguous.
    return int(datetime(day.year, day.month, day.day, tzinfo=PACIFIC).timestamp())


def pacific_day_windows(now: float) -> tuple[DayWindow, DayWindow, DayWindow]:
    """The previous, current and next Pacific day around the epoch time `now`.

    Three rather than one because the Redis script picks the day by Redis's clock, which may sit on the other side of
    a midnight from this process's clock.
    """
    today = datetime.fromtimestamp(now, PACIFIC).date()
    days = [today + timedelta(days=offset) for offset in (-1, 0, 1, 2)]
    bounds = [_pacific_midnight(day) for day in days]
    prev, current, following = (DayWindow(bounds[i], bounds[i + 1], int(days[i].strftime("%Y%m%d"))) for i in range(3))
    return prev, current, following


class _PacificDays:
    """pacific_day_windows(), recomputed only when the clock leaves the current day (zoneinfo costs microseconds)."""

    def __init__(self) -> None:
        self._windows = pacific_day_windows(time.time())

    def around(self, now: float) -> tuple[DayWindow, DayWindow, DayWindow]:
        windows = self._windows  # one read: another thread may replace it, never half of it
        if not windows[1].start <= now < windows[1].end:
            windows = self._windows = pacific_day_windows(now)
        return windows


def _ceil_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))


def _require_distinct(limits: list[Limit]) -> None:
    # Two limits on one counter would both be read before either is counted, letting the pair overshoot.
    if len({(limit.counter_name, limit.window) for limit in limits}) != len(limits):
        raise ValueError("each limit of a check needs its own (counter, window)")


def _decide(limits: list[Limit], used: list[int], resets: list[int], counting: bool) -> Decision:
    """The Decision for counters at `used`; shared so both implementations answer alike."""
    exceeded_at = next((i for i, limit in enumerate(limits) if used[i] + limit.cost > limit.limit), None)
    allowed = exceeded_at is None
    spend = counting and allowed
    states = [
        LimitState(limit.quota_id, limit.limit, max(0, limit.limit - used[i] - (limit.cost if spend else 0)), resets[i])
        for i, limit in enumerate(limits)
    ]
    return Decision(allowed, states, None if allowed else states[exceeded_at])


class InProcessLimiter:
    """Counters in this process's memory, under one lock; `time.time()` is the clock (so tests can move it).

    Fixed windows (minute, Pacific day) keep (window id, count, end) per counter and restart at zero when the window
    id changes; rolling windows keep {minute: count}. Ended windows are dropped lazily: old buckets when a counter is
    read, whole counters and lapsed reservations in a sweep at most once per SWEEP_INTERVAL. Denials are counted per
    (scope, model, quota id, minute) until `take_local_denials` takes them: only this process can write them elsewhere.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fixed: dict[tuple[str, str, str], tuple[int, int, float]] = {}
        self._rolling: dict[tuple[str, str], dict[int, int]] = {}
        # (scope, reservation id) -> (lapses at, ((measure, counter name, window, bucket, amount), ...))
        self._reservations: dict[tuple[str, str], tuple[float, tuple[tuple[str, str, str, int, int], ...]]] = {}
        # (scope, model, quota id, minute) -> checks refused; the time of the first one not yet taken (None: none)
        self._denials: dict[tuple[str, str, str, int], int] = {}
        self._denials_since: float | None = None
        self._days = _PacificDays()
        self._last_sweep = time.time()

    def check(self, scope: str, limits: list[Limit], *, model: str = "") -> Decision:
        return self._run(scope, limits, counting=True, model=model)

    def claim_denials(self, claim_id: str) -> list[DenialClaim]:
        """Nothing: in-process denials are this process's own (`take_local_denials`)."""
        return []

    def release_denials(self, claims: list[DenialClaim]) -> None:
        return None

    def take_local_denials(self) -> list[Denials]:
        """The denials counted so far, removed from this limiter (`restore_local_denials` puts them back)."""
        with self._lock:
            taken, self._denials, self._denials_since = self._denials, {}, None
        return [Denials(*key, count) for key, count in taken.items()]

    def restore_local_denials(self, denials: list[Denials]) -> None:
        """Add taken denials back (their write failed), to be taken again."""
        if not denials:
            return
        with self._lock:
            for scope, model, quota_id, minute, count in denials:
                key = (scope, model, quota_id, minute)
                self._denials[key] = self._denials.get(key, 0) + count
            if self._denials_since is None:
                self._denials_since = time.time()

    def local_denials_due(self) -> bool:
        """Whether denials have waited LOCAL_DENIALS_INTERVAL to be taken: cheap enough for every check (no lock: a
        stale answer only moves the write to the next check)."""
        since = self._denials_since
        return since is not None and abs(time.time() - since) >= LOCAL_DENIALS_INTERVAL

    def peek(self, scope: str, limits: list[Limit]) -> list[LimitState]:
        return self._run(scope, limits, counting=False).states

    def settle(self, scope: str, usages: list[Usage]) -> None:
        self.settle_many({scope: usages})

    def settle_many(self, usages_by_scope: dict[str, list[Usage]]) -> None:
        now = time.time()
        minute = int(now // 60)
        with self._lock:
            for scope, usages in usages_by_scope.items():
                # Summed per bucket first, so that "never below zero" applies to the net change, whatever the order.
                changes: dict[tuple[str, str, int], int] = {}
                for reservation_id, amounts, counters in usages:
                    reserved = self._reservations.pop((scope, reservation_id), None) if reservation_id else None
                    if reserved is not None and reserved[0] > now:
                        for measure, name, window, bucket, amount in reserved[1]:
                            delta = amounts.get(measure, 0) - amount
                            if not _in_window(window, bucket, minute):
                                if delta <= 0:
                                    continue  # less than estimated, in a bucket that no longer counts
                                bucket = minute
                            changes[(name, window, bucket)] = changes.get((name, window, bucket), 0) + delta
                        continue
                    for measure, amount in amounts.items():
                        counter = counters.get(measure)
                        if amount and counter is not None:
                            change = (counter.name, counter.window, minute)
                            changes[change] = changes.get(change, 0) + amount
                for (name, window, bucket), delta in changes.items():
                    if window == ROLLING_10M:
                        buckets = self._rolling.setdefault((scope, name), {})
                        buckets[bucket] = max(0, buckets.get(bucket, 0) + delta)
                    else:  # MINUTE, and only the current minute: an earlier one no longer counts
                        stored = self._fixed.get((scope, name, MINUTE))
                        count = stored[1] if stored and stored[0] == minute else 0
                        self._fixed[(scope, name, MINUTE)] = (minute, max(0, count + delta), (minute + 1) * 60)

    def _run(self, scope: str, limits: list[Limit], *, counting: bool, model: str = "") -> Decision:
        _require_distinct(limits)
        now = time.time()
        minute = int(now // 60)
        day = self._days.around(now)[1]
        used: list[int] = []
        resets: list[int] = []
        with self._lock:
            if abs(now - self._last_sweep) >= SWEEP_INTERVAL:
                self._sweep(now)
            for limit in limits:
                if limit.window == ROLLING_10M:
                    buckets = self._rolling.get((scope, limit.counter_name), {})
                    for stale in [bucket for bucket in buckets if bucket <= minute - ROLLING_BUCKETS]:
                        del buckets[stale]
                    oldest = min((bucket for bucket, count in buckets.items() if count), default=minute)
                    used.append(sum(buckets.values()))
                    resets.append(_ceil_seconds((oldest + ROLLING_BUCKETS) * 60 - now))
                else:
                    window_id, end = (minute, (minute + 1) * 60) if limit.window == MINUTE else (day.day_id, day.end)
                    stored = self._fixed.get((scope, limit.counter_name, limit.window))
                    used.append(stored[1] if stored and stored[0] == window_id else 0)
                    resets.append(_ceil_seconds(end - now))
            decision = _decide(limits, used, resets, counting)
            if counting and not decision.allowed:
                denied = (scope, model, decision.exceeded.quota_id, minute)
                self._denials[denied] = self._denials.get(denied, 0) + 1
                if self._denials_since is None:
                    self._denials_since = now
            elif counting:
                reserved = tuple(
                    (limit.settles, limit.counter_name, limit.window, minute, limit.cost)
                    for limit in limits
                    if limit.settles
                )
                if reserved:
                    reservation_id = new_reservation_id()
                    self._reservations[(scope, reservation_id)] = (now + settings.RESERVATION_TTL_SECONDS, reserved)
                    decision = Decision(True, decision.states, None, reservation_id)
                for limit, count in zip(limits, used, strict=True):
                    if limit.window == ROLLING_10M:
                        buckets = self._rolling.setdefault((scope, limit.counter_name), {})
                        buckets[minute] = buckets.get(minute, 0) + limit.cost
                    elif limit.window == MINUTE:
                        self._fixed[(scope, limit.counter_name, MINUTE)] = (
                            minute,
                            count + limit.cost,
                            (minute + 1) * 60,
                        )
                    else:
                        self._fixed[(scope, limit.counter_name, PACIFIC_DAY)] = (
                            day.day_id,
                            count + limit.cost,
                            day.end,
                        )
        return decision

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        for key in [key for key, (_, _, end) in self._fixed.items() if end <= now]:
            del self._fixed[key]
        oldest_kept = int(now // 60) - ROLLING_BUCKETS + 1
        for key in [key for key, buckets in self._rolling.items() if max(buckets, default=0) < oldest_kept]:
            del self._rolling[key]
        for key in [key for key, (lapses_at, _) in self._reservations.items() if lapses_at <= now]:
            del self._reservations[key]


# KEYS[i]: "rl:{<scope>}:<counter>:<window>", limit i's counter without its window instance.
# ARGV[1]: "check" or "peek"; ARGV[2..10]: start, end, day id of the previous, current and next Pacific day
# (zoneinfo's, from the caller's clock); then per limit i: ARGV[8+3i] window, ARGV[9+3i] limit, ARGV[10+3i] cost;
# then ARGV[11+3n] the keys' TTL margin, ARGV[12+3n] the reservation's key ('' for none), ARGV[13+3n] its TTL in
# seconds and ARGV[14+3n] its entries as JSON, [[measure, counter key, window, amount], ...] (built by the caller);
# then ARGV[15+3n] what a refusal is recorded under: the model, then the quota id of each limit, one per line ('' for a
# peek; one argument rather than n + 1, as every check sends it and few read it).
# Returns {allowed 0|1, index of the first exceeded limit or 0, then remaining and reset_seconds per limit}.
#
# The clock is Redis's own TIME, so every worker counts into the same windows whatever its own clock says. Minute and
# day counters are plain integers whose key name ends with the window instance (minute number, YYYYMMDD), so the
# script builds key names from the clock: Redis Cluster tolerates undeclared keys only in the slot of the declared
# ones, which the shared hash tag {<scope>} guarantees. A rolling counter is one hash of minute -> units.
# All reads come before any write, and nothing is written unless every limit has room: all or nothing. An admitted
# check writes its reservation too (same hash tag): JSON [bucket (the minute), entries]; a refused one adds 1 to
# field "<minute>|<model>|<quota id of the first exceeded limit>" of the denials hash "dn:{<scope>}" (same hash tag),
# which lives DENIAL_TTL_SECONDS from its newest field (the constant is written into the script below).
_CHECK_SCRIPT = """
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now_us = sec * 1000000 + tonumber(t[2])
local minute = math.floor(sec / 60)
local margin = tonumber(ARGV[11 + 3 * #KEYS])

local function reset_until(end_sec)
  local r = math.floor((end_sec * 1000000 - now_us + 999999) / 1000000)
  if r < 1 then r = 1 end
  return r
end

-- The Pacific day that holds Redis's clock; the middle (current) one if the caller's clock is off by days.
local day_id, day_end = ARGV[7], tonumber(ARGV[6])
for d = 0, 2 do
  local s, e = tonumber(ARGV[2 + 3 * d]), tonumber(ARGV[3 + 3 * d])
  if s <= sec and sec < e then
    day_id, day_end = ARGV[4 + 3 * d], e
    break
  end
end

local n = #KEYS
local keys, used, resets, expire_at, stale = {}, {}, {}, {}, {}
local exceeded = 0
for i = 1, n do
  local window, limit, cost = ARGV[8 + 3 * i], tonumber(ARGV[9 + 3 * i]), tonumber(ARGV[10 + 3 * i])
  if window == 'rolling_10m' then
    local fields = redis.call('HGETALL', KEYS[i])
    local u, oldest, old = 0, minute, {}
    for j = 1, #fields, 2 do
      local bucket, count = tonumber(fields[j]), tonumber(fields[j + 1])
      if bucket <= minute - 10 then
        old[#old + 1] = fields[j]
      else
        u = u + count
        if count > 0 and bucket < oldest then oldest = bucket end
      end
    end
    keys[i], used[i], stale[i] = KEYS[i], u, old
    resets[i] = reset_until((oldest + 10) * 60)
    expire_at[i] = (minute + 10) * 60 + margin
  else
    local window_end
    if window == 'minute' then
      keys[i], window_end = KEYS[i] .. ':' .. minute, (minute + 1) * 60
    else
      keys[i], window_end = KEYS[i] .. ':' .. day_id, day_end
    end
    used[i] = tonumber(redis.call('GET', keys[i]) or 0)
    resets[i] = reset_until(window_end)
    expire_at[i] = window_end + margin
  end
  if exceeded == 0 and used[i] + cost > limit then exceeded = i end
end

local counting = ARGV[1] == 'check' and exceeded == 0
local out = {exceeded == 0 and 1 or 0, exceeded}
for i = 1, n do
  local window, limit, cost = ARGV[8 + 3 * i], tonumber(ARGV[9 + 3 * i]), ARGV[10 + 3 * i]
  local remaining = limit - used[i]
  if counting then
    remaining = remaining - tonumber(cost)
    if window == 'rolling_10m' then
      redis.call('HINCRBY', keys[i], minute, cost)
      if #stale[i] > 0 then redis.call('HDEL', keys[i], unpack(stale[i])) end
      redis.call('EXPIREAT', keys[i], expire_at[i])
    elseif redis.call('INCRBY', keys[i], cost) == tonumber(cost) then
      redis.call('EXPIREAT', keys[i], expire_at[i])  -- a new counter (or one that held 0): give it its TTL
    end
  end
  if remaining < 0 then remaining = 0 end
  out[#out + 1] = remaining
  out[#out + 1] = resets[i]
end
local reservation_key = ARGV[12 + 3 * n]
if counting and reservation_key ~= '' then
  redis.call('SET', reservation_key, '[' .. minute .. ',' .. ARGV[14 + 3 * n] .. ']', 'EX', ARGV[13 + 3 * n])
end
local label = ARGV[15 + 3 * n]
if exceeded > 0 and ARGV[1] == 'check' and label ~= '' then
  local lines, from = {}, 1
  while #lines <= exceeded do
    local at = string.find(label, '\\n', from, true)
    lines[#lines + 1] = string.sub(label, from, (at or 0) - 1)
    if not at then break end
    from = at + 1
  end
  local denials = 'dn:' .. string.match(KEYS[1], '{[^}]*}')
  if redis.call('HINCRBY', denials, minute .. '|' .. lines[1] .. '|' .. lines[1 + exceeded], 1) == 1 then
    redis.call('EXPIRE', denials, DENIAL_TTL_SECONDS)  -- a new field (a new minute): the hash lives on from now
  end
end
return out
""".replace("DENIAL_TTL_SECONDS", str(DENIAL_TTL_SECONDS))

# KEYS[1]: "rsv:{<scope>}:" (reservation keys are this plus the id), KEYS[2]: "rl:{<scope>}:" (counter keys are this
# plus "<counter>:<window>"); neither is a key itself: they name the scope's slot, as in the check script.
# ARGV[1]: the keys' TTL margin; ARGV[2]: the usages as one JSON object (one argument: packing thousands of arguments
# cost the caller more than the script's work):
#   "counters": [[name, window], ...]: the counters usages name, numbered from 1 in this order;
#   "plain": [[counter number, amount], ...]: usage without a reservation id (summed per counter by the caller);
#   "reserved": [[reservation id, measure, actual amount, counter number or 0, measure, ...], ...]: the counter of a
#   measure is where its amount goes if the reservation is not found.
# Returns the number of counter buckets changed.
#
# Changes are summed per bucket before any is written, so that "never below zero" holds for the net change of a bucket
# whatever the order of the usages. Redis's TIME is the clock, as in the check that made the reservations.
_SETTLE_SCRIPT = """
local minute = math.floor(tonumber(redis.call('TIME')[1]) / 60)
local reservation_prefix, counter_prefix = KEYS[1], KEYS[2]
local margin = tonumber(ARGV[1])
local usages = cjson.decode(ARGV[2])

local keys, windows = {}, {}
for c, counter in ipairs(usages.counters) do
  keys[c], windows[c] = counter_prefix .. counter[1] .. ':' .. counter[2], counter[2]
end

local changes, order = {}, {}
local function change(key, window, bucket, delta)
  local id = key .. '#' .. bucket
  local entry = changes[id]
  if entry == nil then
    entry = {key, window, bucket, 0}
    changes[id], order[#order + 1] = entry, entry
  end
  entry[4] = entry[4] + delta
end

for _, plain in ipairs(usages.plain) do
  change(keys[plain[1]], windows[plain[1]], minute, plain[2])
end

for _, usage in ipairs(usages.reserved) do
  local actual, fallback = {}, {}
  for j = 2, #usage, 3 do
    actual[usage[j]], fallback[usage[j]] = usage[j + 1], usage[j + 2]
  end
  local stored = redis.call('GETDEL', reservation_prefix .. usage[1])
  if stored then
    local reservation = cjson.decode(stored)
    local bucket = reservation[1]
    for _, e in ipairs(reservation[2]) do
      local measure, key, window, amount = e[1], e[2], e[3], e[4]
      local delta = (actual[measure] or 0) - amount
      if (window == 'minute' and bucket == minute) or (window == 'rolling_10m' and bucket > minute - 10) then
        change(key, window, bucket, delta)
      elseif delta > 0 then
        change(key, window, minute, delta)  -- the reserved bucket left its window: what was used still counts
      end
    end
  else
    for measure, amount in pairs(actual) do
      local c = fallback[measure]
      if c > 0 and amount > 0 then change(keys[c], windows[c], minute, amount) end
    end
  end
end

for _, entry in ipairs(order) do
  local key, window, bucket, delta = entry[1], entry[2], entry[3], entry[4]
  if window == 'rolling_10m' then
    local held = tonumber(redis.call('HGET', key, bucket) or 0)
    if held + delta < 0 then delta = -held end
    if delta ~= 0 then
      redis.call('HINCRBY', key, bucket, delta)
      -- An earlier bucket's key already lives until that bucket leaves the window.
      if bucket == minute then redis.call('EXPIREAT', key, (minute + 10) * 60 + margin) end
    end
  else
    local counter = key .. ':' .. bucket
    local held = tonumber(redis.call('GET', counter) or 0)
    if held + delta < 0 then delta = -held end
    if delta ~= 0 then
      redis.call('INCRBY', counter, delta)
      if held == 0 then redis.call('EXPIREAT', counter, (bucket + 1) * 60 + margin) end
    end
  end
end
return #order
"""

# KEYS[1]: a scope's denials "dn:{<scope>}", KEYS[2]: its claim key "dn:{<scope>}:claim"; ARGV[1]: a new claim id,
# ARGV[2]: the claim key's TTL in seconds. Returns the claim as HGETALL does (the claim id in field "#claim"): one a
# previous run left (its writer died before releasing it) first, else the denials, renamed to the claim key, else
# nothing. Denials counted after the rename start a new hash, taken by the next claim.
_CLAIM_SCRIPT = """
local held = redis.call('HGETALL', KEYS[2])
if #held > 0 then return held end
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[2], '#claim', ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return redis.call('HGETALL', KEYS[2])
"""

# KEYS[1]: a claim key; ARGV[1]: the claim id. Deletes the claim if it is still that one; returns 1 if deleted.
_RELEASE_SCRIPT = """
if redis.call('HGET', KEYS[1], '#claim') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

CLAIM_FIELD = b"#claim"
# Scopes per pipeline when claiming or releasing denials.
DENIAL_PIPELINE = 500


class RedisLimiter:
    """Counters in Redis shared by the fleet; one script call per check. See the module docstring for outages."""

    def __init__(self, url: str, *, timeout: float = REDIS_TIMEOUT) -> None:
        # No retries: a failed call goes to the fallback at once instead of doubling the wait. (redis-py's defaults
        # for this have changed between versions, hence explicit.)
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )
        self._script = self._redis.register_script(_CHECK_SCRIPT)  # EVALSHA, EVAL (SCRIPT LOAD) on NOSCRIPT
        self._settle_script = self._redis.register_script(_SETTLE_SCRIPT)
        self._claim_script = self._redis.register_script(_CLAIM_SCRIPT)
        self._release_script = self._redis.register_script(_RELEASE_SCRIPT)
        self._days = _PacificDays()
        self._fallback = InProcessLimiter()
        self._fallback_warning = _RareWarning(
            "Redis unavailable for quota checks (%r): %d check(s) counted in this process only since the last "
            "warning; limits hold per process until Redis answers again"
        )
        self._settle_warning = _RareWarning(
            "Redis unavailable for settling reported usage (%r): %d settlement(s) skipped since the last warning; "
            "the TPM and spend windows keep the estimates reserved at admission"
        )
        self.fallbacks = 0  # checks answered by the in-process fallback since start, for tests and metrics
        self.settle_failures = 0  # settlement calls skipped because Redis failed, since start

    def check(self, scope: str, limits: list[Limit], *, model: str = "") -> Decision:
        return self._run(scope, limits, counting=True, model=model)

    def peek(self, scope: str, limits: list[Limit]) -> list[LimitState]:
        return self._run(scope, limits, counting=False).states

    def _run(self, scope: str, limits: list[Limit], *, counting: bool, model: str = "") -> Decision:
        if not limits:
            return Decision(True, [], None)
        _require_distinct(limits)
        keys = [f"rl:{{{scope}}}:{limit.counter_name}:{limit.window}" for limit in limits]
        args: list[str | int] = ["check" if counting else "peek"]
        for day in self._days.around(time.time()):
            args += day
        for limit in limits:
            args += (limit.window, limit.limit, limit.cost)
        args.append(KEY_TTL_MARGIN)
        # Built here rather than in the script: this is the hot path, and Redis's time is shared by the fleet.
        reserved = [
            [limit.settles, key, limit.window, limit.cost]
            for key, limit in zip(keys, limits, strict=True)
            if limit.settles
        ]
        reservation_id = new_reservation_id() if counting and reserved else None
        if reservation_id:
            ttl = settings.RESERVATION_TTL_SECONDS
            args += (_reservations_prefix(scope) + reservation_id, ttl, orjson.dumps(reserved))
        else:
            args += ("", 0, "")
        # What a refusal is recorded under: only read by the script when it refuses.
        args.append("\n".join((model, *(limit.quota_id for limit in limits))) if counting else "")
        try:
            reply = self._script(keys=keys, args=args)
        except RedisError as error:
            self.fallbacks += 1
            self._fallback_warning.note(error)
            return self._fallback._run(scope, limits, counting=counting, model=model)
        states = [
            LimitState(limit.quota_id, limit.limit, int(reply[2 + 2 * i]), int(reply[3 + 2 * i]))
            for i, limit in enumerate(limits)
        ]
        exceeded_at = int(reply[1])
        if exceeded_at:
            return Decision(False, states, states[exceeded_at - 1])
        return Decision(True, states, None, reservation_id)

    def settle(self, scope: str, usages: list[Usage]) -> None:
        self.settle_many({scope: usages})

    def settle_many(self, usages_by_scope: dict[str, list[Usage]]) -> None:
        """One settle script call per scope (a Redis Cluster runs each on its scope's node), all in one pipeline."""
        calls = [_settle_call(scope, usages) for scope, usages in usages_by_scope.items() if usages]
        if not calls:
            return
        try:
            self._evalsha_all(calls)
        except RedisError as error:
            self.settle_failures += len(calls)
            self._settle_warning.note(error, len(calls))

    def _evalsha_all(self, calls: list[tuple[list[str], list]], script=None) -> list:
        """Run `script` (default: the settle script) once per (keys, args) of `calls`, in one pipeline; the replies."""
        # A pipeline of EVALSHA rather than of the Script object, which would ask SCRIPT EXISTS on every execute:
        # the script is loaded only when Redis says it does not know it (a restart, SCRIPT FLUSH).
        script = script or self._settle_script
        for attempt in (1, 2):
            pipeline = self._redis.pipeline(transaction=False)
            for keys, args in calls:
                pipeline.evalsha(script.sha, len(keys), *keys, *args)
            try:
                return pipeline.execute()
            except NoScriptError:  # every call failed alike: none was run
                if attempt == 2:
                    raise
                self._redis.script_load(script.script)
        raise AssertionError("unreachable")

    def claim_denials(self, claim_id: str) -> list[DenialClaim]:
        """Take every scope's denials out of Redis under `claim_id` (claims left by an earlier run come back under
        their own id). Raises RedisError: nothing is lost, what was claimed stays claimed for the next run.

        Finds the scopes with SCAN ("dn:{*"), which walks the whole keyspace of this Redis in steps of 1,000 keys
        without blocking it: its cost grows with the keys (counters and reservations included), not with denials
        (bench/README.md). Then one script call per scope with denials, pipelined.
        """
        found = {key[len("dn:{") : key.rindex(b"}")] for key in self._redis.scan_iter(match="dn:{*", count=1000)}
        scopes = sorted(scope.decode() for scope in found)
        claims: list[DenialClaim] = []
        for start in range(0, len(scopes), DENIAL_PIPELINE):
            chunk = scopes[start : start + DENIAL_PIPELINE]
            calls = [([_denials_key(scope), _claim_key(scope)], [claim_id, DENIAL_TTL_SECONDS]) for scope in chunk]
            for scope, reply in zip(chunk, self._evalsha_all(calls, self._claim_script), strict=True):
                if reply:
                    claims.append(_claim(scope, reply))
        return claims

    def release_denials(self, claims: list[DenialClaim]) -> None:
        """Delete the claims (their counts are written): each only if its claim key still holds that claim."""
        for start in range(0, len(claims), DENIAL_PIPELINE):
            calls = [([_claim_key(c.scope)], [c.claim_id]) for c in claims[start : start + DENIAL_PIPELINE]]
            self._evalsha_all(calls, self._release_script)

    def take_local_denials(self) -> list[Denials]:
        """Denials counted in this process while Redis was unavailable (by the fallback)."""
        return self._fallback.take_local_denials()

    def restore_local_denials(self, denials: list[Denials]) -> None:
        self._fallback.restore_local_denials(denials)

    def local_denials_due(self) -> bool:
        return self._fallback.local_denials_due()


def _settle_call(scope: str, usages: list[Usage]) -> tuple[list[str], list[int | bytes]]:
    """(keys, args) of the settle script for the usages of one scope (the layout is described above the script)."""
    numbers: dict[Counter, int] = {}
    plain: dict[int, int] = {}
    reserved: list[list[str | int]] = []
    for reservation_id, amounts, counters in usages:
        if reservation_id is None:  # summed here: one change per counter, whatever the number of usages
            for measure, amount in amounts.items():
                counter = counters.get(measure)
                if amount and counter is not None:
                    number = numbers.setdefault(counter, len(numbers) + 1)
                    plain[number] = plain.get(number, 0) + amount
            continue
        usage: list[str | int] = [reservation_id]
        for measure, amount in amounts.items():
            counter = counters.get(measure)
            usage += (measure, amount, 0 if counter is None else numbers.setdefault(counter, len(numbers) + 1))
        reserved.append(usage)
    document = {"counters": [tuple(counter) for counter in numbers], "plain": list(plain.items()), "reserved": reserved}
    return [_reservations_prefix(scope), f"rl:{{{scope}}}:"], [KEY_TTL_MARGIN, orjson.dumps(document)]


def _denials_key(scope: str) -> str:
    """The hash of a scope's denials not yet claimed: under the scope's hash tag, like its counters."""
    return f"dn:{{{scope}}}"


def _claim_key(scope: str) -> str:
    return f"dn:{{{scope}}}:claim"


def _claim(scope: str, reply: list[bytes]) -> DenialClaim:
    """A DenialClaim from the claim script's reply: [field, value, ...], the claim id in field "#claim"."""
    claim_id, denials = "", []
    for field, value in zip(reply[::2], reply[1::2], strict=True):
        if field == CLAIM_FIELD:
            claim_id = value.decode()
            continue
        minute, rest = field.decode().split("|", 1)
        model, quota_id = rest.rsplit("|", 1)  # a quota id has no "|"; a model id is taken whole
        denials.append(Denials(scope, model, quota_id, int(minute), int(value)))
    return DenialClaim(scope, claim_id, denials)


def _reservations_prefix(scope: str) -> str:
    """The start of a scope's reservation keys: under the scope's hash tag, like its counters."""
    return f"rsv:{{{scope}}}:"


class _RareWarning:
    """A warning logged at most once per FALLBACK_WARNING_INTERVAL, with the number of occurrences since the last.

    Unlocked: two threads racing here can at worst miscount the occurrences reported in the next warning.
    """

    def __init__(self, message: str) -> None:
        self.message = message  # formatted with (error, occurrences)
        self._warned_at: float | None = None
        self._unwarned = 0

    def note(self, error: Exception, occurrences: int = 1) -> None:
        self._unwarned += occurrences
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at >= FALLBACK_WARNING_INTERVAL:
            self._warned_at = now
            count, self._unwarned = self._unwarned, 0
            logger.warning(self.message, error, count)


_limiters: dict[str, Limiter] = {}
_limiters_lock = threading.Lock()


def get_limiter() -> Limiter:
    """The process's limiter: RedisLimiter when settings.REDIS_URL is set, else InProcessLimiter.

    One per process (per URL, so a test overriding REDIS_URL gets a matching one) because the fallback counters,
    the connection pool and the loaded script's SHA must outlive a request.
    """
    url = settings.REDIS_URL
    limiter = _limiters.get(url)
    if limiter is None:
        with _limiters_lock:
            limiter = _limiters.get(url)
            if limiter is None:
                limiter = _limiters[url] = RedisLimiter(url) if url else InProcessLimiter()
    return limiter
