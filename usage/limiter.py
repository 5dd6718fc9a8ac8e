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

Reservations and settlement. Some costs are estimates (the prompt's tokens, its price): a limit marked ``settles`` names
the measure of reported usage that replaces its cost later. A counted check with such limits answers a reservation id
(``Decision.reservation_id``) that is the reservation itself, so that nothing is stored per reservation (a Redis key per
admitted request cost more Redis time to write and settle than the check: bench/README.md):
``r1_<second>_<amount>[_<amount>]_<mac>``, the epoch second of the check (Redis's clock or the in-process one), the
amount reserved per settling limit (in the order of their measures' names) and a 64-bit MAC (keyed BLAKE2b) over the
scope, each settling limit's measure, counter and window, and the rest of the id; all in lower-case hex: about 40
characters, at most 64. When the usage is reported, ``settle`` takes an id only if its MAC matches the scope and the
counters the usage names (``Usage.counters``, where the estimates were counted: a project whose tier changed since, or
usage of another model, names others) and it is younger than ``settings.RESERVATION_TTL_SECONDS`` (by this process's
clock); then each reserved amount is replaced by the actual one: the difference goes into the bucket (minute) of the
reservation while that bucket is still in its window (the same clock minute for ``minute``, the last 10 minutes for
``rolling_10m``); once it has left the window, more than estimated still counts, in the current bucket, and less is
dropped. No counter goes below zero. Usage without an id taken this way (none given, garbled, forged, another limiter's
or scope's, lapsed) counts as unreserved: its whole amount goes to the current bucket of the counters it names, unless
it is not ``recent`` (it occurred before every window: then nowhere).

Signed rather than made harmless: the amounts in an id say how much settlement subtracts, so an unsigned id could claim
any estimate and empty a project's windows (down to zero) with every report; bounding that without knowing the estimate
is not possible, and knowing it is the per-reservation state this design removes. The MAC costs about as much CPU as the
random id it replaces (a microsecond or less per check and per settled event), and no Redis. Its key is derived from
``settings.SECRET_KEY`` (ids made under one of ``SECRET_KEY_FALLBACKS`` are taken too, so a rotation loses no
reservation in flight); an ``InProcessLimiter`` signs with a random key of its own, so that its ids (a RedisLimiter's
fallback during an outage, or another process) settle nowhere else and count as unreserved, as a reservation kept in
another process's memory did. Being stateless, an id is a claim, not a ticket: two checks of one scope in the same
second with the same estimates get the same id (each of their usages settles its own), and nothing remembers that an id
was settled. Exactly once holds per usage event (only newly stored events settle, usage.settlement); a fleet that sent
one id with two events would have the estimate subtracted twice, bounded by that bucket's counts while it is in its
window. Settlement through Redis sums the differences per counter and bucket in this process and sends them in one
script call per scope (several scopes: one pipeline); if Redis fails, it is skipped with a warning (at most one per
FALLBACK_WARNING_INTERVAL), never raised: the windows then keep the estimates.

Monthly limits (``pacific_month``: the project's monthly spend cap, X4/X8). The counter of a Pacific calendar month
(the month of statements) counts what was reported as used in that month plus the estimates of admitted checks not
yet reported: used = seed + reported + reservations. The seed is what the books held before the counter existed: a
check that finds the month's counter without one (a new month, a new counter, Redis lost) reads it once through the
limit's ``seed`` (a database read, usage.spendcap) and sets it unless another process did first (through Redis:
HSETNX, then the check is run again: one more round trip and one query, once per counter and month). Settlement adds
the actual amount of every newly reported usage to the month it occurred in, reserved or not, recent or not (a late
report is spend of its month all the same), and takes the reservation's estimate off the reservations, which are kept
per minute like a rolling window and count for ``reservation_buckets()`` minutes (RESERVATION_TTL_SECONDS rounded up):
a reservation whose usage is never reported stops counting then. The seed is read after the counter's reported
amount, and the amount is subtracted from it, so that usage reported before the seeding is not counted twice; usage
whose report commits between the two reads is (more, never less).

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

import hashlib
import hmac
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import date, datetime, timedelta
from functools import lru_cache
from operator import attrgetter
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
PACIFIC_MONTH = "pacific_month"
WINDOWS = frozenset({MINUTE, PACIFIC_DAY, ROLLING_10M, PACIFIC_MONTH})

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
    window: str  # MINUTE | PACIFIC_DAY | ROLLING_10M | PACIFIC_MONTH
    limit: int  # max units per window (for spend: micro-USD)
    cost: int  # units this request uses (1 request, N input tokens, estimated micro-USD)
    # What the counter is named by within the scope when not by the quota id alone: a per-model limit of a
    # project-wide scope passes "<quota_id>:<model>", so that all counters of one project share one hash tag.
    counter: str = ""
    # The measure of reported usage (e.g. "input_tokens") that replaces `cost` when the request's usage is reported:
    # the cost is then an estimate, reserved by the check and settled later. Empty: the cost is exact (1 request).
    settles: str = ""
    # PACIFIC_MONTH only: what was used in a month before its counter existed (the month's first day -> units), read
    # from the books when the counter is missing (a new month, a new counter, Redis lost): see "Monthly limits".
    seed: Callable[[date], int] | None = dataclass_field(default=None, compare=False, repr=False)

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
        if self.window == PACIFIC_MONTH and (self.seed is None or not self.settles):
            raise ValueError(f"a {PACIFIC_MONTH} limit needs a seed and a measure that settles it: {self!r}")


# Windows whose counts can be settled: their buckets (of reservations, for PACIFIC_MONTH) are minutes.
SETTLED_WINDOWS = frozenset({MINUTE, ROLLING_10M, PACIFIC_MONTH})


class Counter(NamedTuple):
    """A counter of a scope, as a Limit names it (`counter_name`, `window`)."""

    name: str
    window: str


class Usage(NamedTuple):
    """What one admitted request actually used, for `Limiter.settle`."""

    reservation_id: str | None  # as the check answered it; None: no reservation to replace
    amounts: dict[str, int]  # measure -> actual amount, e.g. {"input_tokens": 10, "micro_usd": 3}
    # measure -> the counter of that measure: where the check counted the estimate (a reservation id is taken only if
    # it was signed for these), and where the amount counts when no reservation is taken (none given, unknown,
    # lapsed); a measure without a counter then counts nowhere.
    counters: dict[str, Counter]
    # False: the usage occurred before every window (more than ROLLING_BUCKETS minutes ago), so without a reservation
    # taken it counts nowhere: a late report must not fill the current windows. (Monthly counters take it anyway.)
    recent: bool = True
    # The Pacific month the usage occurred in, as YYYYMM (`month_id`): where a PACIFIC_MONTH counter adds it. 0: the
    # current month (by this process's clock).
    month: int = 0


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


RESERVATION_VERSION = "r1"
RESERVATION_PREFIX = RESERVATION_VERSION + "_"
MAC_BYTES = 8  # 64 bits: a forger has one try per reported event, and a failed try counts in full
RESERVATION_ID_MAX = 64  # the longest id usage:report takes (usage.ingest.RESERVATION_ID_PATTERN)


_measure = attrgetter("settles")


class Reservation(NamedTuple):
    """What a reservation id says, once its MAC is verified."""

    second: int  # epoch second of the check, on the clock of the limiter that made it
    amounts: tuple[int, ...]  # reserved per settling limit, in the order of their measures' names


class ReservationSigner:
    """Makes reservation ids (the format is in the module docstring) and readers of them. `keys[0]` signs; every key
    verifies."""

    def __init__(self, keys: list[bytes]) -> None:
        # Keyed BLAKE2b is a MAC by design (RFC 7693), at a third of HMAC-SHA256's cost for these short messages; a
        # copy of a state that has taken its key already saves hashing the key block per id.
        self._states = [hashlib.blake2b(key=key, digest_size=MAC_BYTES) for key in keys]

    @classmethod
    def from_settings(cls) -> "ReservationSigner":
        """Keys derived from SECRET_KEY and SECRET_KEY_FALLBACKS: every process of the fleet reads the others' ids."""
        return cls(
            [
                hashlib.sha256(b"usage.limiter.reservation\0" + secret.encode()).digest()
                for secret in (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS)
            ]
        )

    @classmethod
    def random(cls) -> "ReservationSigner":
        """A key nobody else has: ids only this signer takes back."""
        return cls([secrets.token_bytes(32)])

    def issue(self, scope: str, limits: list[Limit], second: int) -> str | None:
        """The id of a reservation of the costs of the settling `limits`, made at `second`; None if it would be longer
        than usage:report takes (only with more than two settling limits, and large costs)."""
        settling = [limit for limit in limits if limit.settles]
        if len(settling) > 1:
            settling.sort(key=_measure)
        counters = "\0".join([f"{limit.settles}\0{limit.counter_name}\0{limit.window}" for limit in settling])
        body = "_".join([RESERVATION_VERSION, f"{second:x}", *[f"{limit.cost:x}" for limit in settling]])
        mac = self._states[0].copy()
        mac.update(f"{scope}\n{counters}\n{body}".encode())
        reservation_id = f"{body}_{mac.hexdigest()}"
        return reservation_id if len(reservation_id) <= RESERVATION_ID_MAX else None

    def reader(self, scope: str, counters: dict[str, Counter]) -> "ReservationReader":
        """A reader of the ids of `scope` whose estimates were counted in `counters` (measure -> counter, as a Usage
        names them): made once for the many usages of a batch that name the same counters."""
        described = "\0".join(f"{measure}\0{name}\0{window}" for measure, (name, window) in sorted(counters.items()))
        prefix = f"{scope}\n{described}\n".encode()
        states = [state.copy() for state in self._states]
        for state in states:
            state.update(prefix)
        return ReservationReader(states)


class ReservationReader:
    """Reads the reservation ids of one scope and set of counters (`ReservationSigner.reader`)."""

    def __init__(self, states: list) -> None:
        self._states = states  # the signer's MAC states, the scope and counters taken already

    def read(self, reservation_id: str) -> Reservation | None:
        """The reservation `reservation_id` holds if its MAC matches; None for anything else (no exception: ids come
        from outside)."""
        body, _, mac = reservation_id.rpartition("_")
        if len(mac) != 2 * MAC_BYTES or not mac.isascii() or not body.startswith(RESERVATION_PREFIX):
            return None
        signed = body.encode()
        for state in self._states:
            expected = state.copy()
            expected.update(signed)
            if hmac.compare_digest(expected.hexdigest(), mac):
                # Signed, so as written by `issue`: hex numbers only.
                second, *amounts = [int(field, 16) for field in body.split("_")[1:]]
                return Reservation(second, tuple(amounts))
        return None


class Settlement(NamedTuple):
    """The usages of one scope reduced to counter changes; where a change goes depends on the clock that applies it."""

    plain: dict[Counter, int]  # unreserved usage: added to the current bucket
    # (counter, bucket of the reservations) -> [the net difference (actual - estimate), the sum of the positive ones]:
    # the net goes into the bucket while it is in its window; after that only the positive differences count, now.
    reserved: dict[tuple[Counter, int], list[int]]
    # PACIFIC_MONTH counters: (counter, month YYYYMM) -> what was used (reserved or not), added to that month;
    # (counter, bucket of the reservations) -> the estimates reserved there, taken off while the bucket still counts.
    spent: dict[tuple[Counter, int], int]
    released: dict[tuple[Counter, int], int]


def _settlement(signer: ReservationSigner, scope: str, usages: list[Usage], now: float) -> Settlement:
    """What `usages` change in `scope`'s counters, reservations read by `signer` and judged lapsed by `now` (epoch
    seconds; this process's clock, also for a RedisLimiter: a lapse is a coarse limit, the windows are not)."""
    ttl = settings.RESERVATION_TTL_SECONDS
    plain: dict[Counter, int] = {}
    spent: dict[tuple[Counter, int], int] = {}
    released: dict[tuple[Counter, int], int] = {}
    current_month = 0  # the month id of usages that name none (Usage.month 0), computed when first needed
    # id() of a usage's counters (a batch shares a few dicts, alive while this runs) -> its reader, its (measure,
    # counter) pairs in the order of the ids' amounts, and whether each pair's counter is monthly
    readers: dict[int, tuple[ReservationReader, list[tuple[str, Counter]], list[bool]]] = {}
    # (id() of the counters, bucket) -> the pairs, then per pair the net and the positive differences
    sums: dict[tuple[int, int], tuple[list[tuple[str, Counter]], list[int], list[int]]] = {}
    for reservation_id, amounts, counters, recent, month in usages:
        if not month:
            month = current_month = current_month or month_id(datetime.fromtimestamp(now, PACIFIC))
        reservation = None
        if reservation_id is not None:
            found = readers.get(id(counters))
            if found is None:
                pairs = sorted(counters.items())
                monthly = [counter.window == PACIFIC_MONTH for _, counter in pairs]
                found = readers[id(counters)] = (signer.reader(scope, counters), pairs, monthly)
            reservation = found[0].read(reservation_id)
            if reservation is not None and now - reservation.second >= ttl:
                reservation = None  # lapsed
        if reservation is not None:
            bucket = reservation.second // 60
            group = (id(counters), bucket)
            pairs, nets, positives = sums.get(group) or sums.setdefault(
                group, (found[1], [0] * len(found[1]), [0] * len(found[1]))
            )
            for index, estimate in enumerate(reservation.amounts):
                measure, counter = pairs[index]
                actual = amounts.get(measure, 0)
                if found[2][index]:
                    spent[(counter, month)] = spent.get((counter, month), 0) + actual
                    released[(counter, bucket)] = released.get((counter, bucket), 0) + estimate
                    continue
                delta = actual - estimate
                nets[index] += delta
                if delta > 0:
                    positives[index] += delta
        else:
            for measure, amount in amounts.items():
                counter = counters.get(measure)
                if not amount or counter is None:
                    continue
                if counter.window == PACIFIC_MONTH:  # a month's spend counts whenever it is reported
                    spent[(counter, month)] = spent.get((counter, month), 0) + amount
                elif recent:
                    plain[counter] = plain.get(counter, 0) + amount
    reserved: dict[tuple[Counter, int], list[int]] = {}
    for (_, bucket), (pairs, nets, positives) in sums.items():
        for (_, counter), net, more in zip(pairs, nets, positives, strict=True):
            if counter.window == PACIFIC_MONTH:
                continue  # in `spent` and `released`
            change = reserved.setdefault((counter, bucket), [0, 0])  # counters of several models share the spend one
            change[0] += net
            change[1] += more
    return Settlement(plain, reserved, spent, released)


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


def _month_start(year: int, month: int) -> date:
    return date(year + (month - 1) // 12, (month - 1) % 12 + 1, 1)


def pacific_month_windows(now: float) -> tuple[DayWindow, DayWindow, DayWindow]:
    """The previous, current and next Pacific calendar month around `now`, as DayWindows whose id is YYYYMM (the
    months of statements); three for the same reason as pacific_day_windows."""
    today = datetime.fromtimestamp(now, PACIFIC).date()
    firsts = [_month_start(today.year, today.month + offset) for offset in (-1, 0, 1, 2)]
    bounds = [_pacific_midnight(first) for first in firsts]
    prev, current, following = (
        DayWindow(bounds[i], bounds[i + 1], firsts[i].year * 100 + firsts[i].month) for i in range(3)
    )
    return prev, current, following


def month_id(moment: datetime) -> int:
    """The Pacific month of `moment` as YYYYMM, the id a PACIFIC_MONTH counter of that month is named by."""
    local = moment.astimezone(PACIFIC)
    return local.year * 100 + local.month


def month_first_day(month: int) -> date:
    """The first day of the month YYYYMM."""
    return date(month // 100, month % 100, 1)


@lru_cache(maxsize=64)
def month_end(month: int) -> int:
    """Epoch second at which the Pacific month YYYYMM ends."""
    first = month_first_day(month)
    return _pacific_midnight(_month_start(first.year, first.month + 1))


def reservation_buckets() -> int:
    """Minutes of reservations a PACIFIC_MONTH limit counts besides what was reported: RESERVATION_TTL_SECONDS rounded
    up to whole minutes, so that a reservation counts at least until its id lapses (and at most a minute longer)."""
    return max(1, math.ceil(settings.RESERVATION_TTL_SECONDS / 60))


class _PacificDays:
    """pacific_day_windows(), recomputed only when the clock leaves the current day (zoneinfo costs microseconds)."""

    _compute = staticmethod(pacific_day_windows)

    def __init__(self) -> None:
        self._windows = self._compute(time.time())

    def around(self, now: float) -> tuple[DayWindow, DayWindow, DayWindow]:
        windows = self._windows  # one read: another thread may replace it, never half of it
        if not windows[1].start <= now < windows[1].end:
            windows = self._windows = self._compute(now)
        return windows


class _PacificMonths(_PacificDays):
    """pacific_month_windows(), recomputed only when the clock leaves the current month."""

    _compute = staticmethod(pacific_month_windows)


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
    id changes; rolling windows keep {minute: count}. A monthly counter keeps [seed, reported] per month and its
    reservations as {minute: units}, like the Redis hashes. Ended windows are dropped lazily: old buckets when a
    counter is read, whole counters in a sweep at most once per SWEEP_INTERVAL. Reservation ids are signed with a random
    key of this limiter's own, so only it takes them back. Denials are counted per (scope, model, quota id, minute)
    until `take_local_denials` takes them: only this process can write them elsewhere.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fixed: dict[tuple[str, str, str], tuple[int, int, float]] = {}
        self._rolling: dict[tuple[str, str], dict[int, int]] = {}
        # PACIFIC_MONTH: (scope, counter, month YYYYMM) -> [seed (None: not yet read), reported]; (scope, counter) ->
        # {minute: units reserved}
        self._months: dict[tuple[str, str, int], list] = {}
        self._reserved: dict[tuple[str, str], dict[int, int]] = {}
        self._month_windows = _PacificMonths()
        self._signer = ReservationSigner.random()
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
        # Outside the lock: reading the ids (their MACs) is most of the work.
        settlements = {
            scope: _settlement(self._signer, scope, usages, now) for scope, usages in usages_by_scope.items()
        }
        buckets_counted = reservation_buckets()
        with self._lock:
            for scope, (plain, reserved, spent, released) in settlements.items():
                for ((name, _), month), amount in spent.items():
                    self._months.setdefault((scope, name, month), [None, 0])[1] += amount
                for ((name, _), bucket), amount in released.items():
                    held = self._reserved.get((scope, name))
                    if held and bucket in held and bucket > minute - buckets_counted:
                        held[bucket] = max(0, held[bucket] - amount)
                # Summed per bucket first, so that "never below zero" applies to the net change, whatever the order.
                changes: dict[tuple[str, str, int], int] = {}
                for (name, window), amount in plain.items():
                    changes[(name, window, minute)] = changes.get((name, window, minute), 0) + amount
                for ((name, window), bucket), (net, more) in reserved.items():
                    if not _in_window(window, bucket, minute):
                        if not more:
                            continue  # only less than estimated, in a bucket that no longer counts
                        bucket, net = minute, more
                    changes[(name, window, bucket)] = changes.get((name, window, bucket), 0) + net
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
        for _ in range(len(limits) + 1):
            outcome = self._run_once(scope, limits, counting=counting, model=model)
            if isinstance(outcome, Decision):
                return outcome
            # A monthly counter not seeded yet: read the books outside the lock, then seed it unless another thread
            # did (its reported usage `before` is in the books too, hence subtracted).
            limit, month, before = outcome
            seeded = limit.seed(month_first_day(month)) - before
            with self._lock:
                entry = self._months.setdefault((scope, limit.counter_name, month), [None, 0])
                if entry[0] is None:
                    entry[0] = seeded
        raise AssertionError("a monthly counter stayed unseeded")

    def _run_once(self, scope: str, limits: list[Limit], *, counting: bool, model: str) -> Decision | tuple:
        """The Decision, or (limit, month, reported) for a monthly limit whose month's counter needs its seed."""
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
                elif limit.window == PACIFIC_MONTH:
                    month = self._month_windows.around(now)[1]
                    entry = self._months.get((scope, limit.counter_name, month.day_id))
                    if entry is None or entry[0] is None:
                        return limit, month.day_id, entry[1] if entry else 0
                    buckets = self._reserved.get((scope, limit.counter_name), {})
                    for stale in [bucket for bucket in buckets if bucket <= minute - reservation_buckets()]:
                        del buckets[stale]
                    used.append(entry[0] + entry[1] + sum(buckets.values()))
                    resets.append(_ceil_seconds(month.end - now))
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
                for limit, count in zip(limits, used, strict=True):
                    if limit.window in (ROLLING_10M, PACIFIC_MONTH):
                        held = self._rolling if limit.window == ROLLING_10M else self._reserved
                        buckets = held.setdefault((scope, limit.counter_name), {})
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
        if counting and decision.allowed and any(limit.settles for limit in limits):
            return Decision(True, decision.states, None, self._signer.issue(scope, limits, int(now)))
        return decision

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        for key in [key for key, (_, _, end) in self._fixed.items() if end <= now]:
            del self._fixed[key]
        oldest_kept = int(now // 60) - ROLLING_BUCKETS + 1
        for key in [key for key, buckets in self._rolling.items() if max(buckets, default=0) < oldest_kept]:
            del self._rolling[key]
        oldest_reserved = int(now // 60) - reservation_buckets() + 1
        for key in [key for key, buckets in self._reserved.items() if max(buckets, default=0) < oldest_reserved]:
            del self._reserved[key]
        for key in [key for key in self._months if month_end(key[2]) <= now]:
            del self._months[key]


# KEYS[i]: "rl:{<scope>}:<counter>:<window>", limit i's counter without its window instance.
# ARGV[1]: "check" or "peek"; ARGV[2..10]: start, end, day id of the previous, current and next Pacific day
# (zoneinfo's, from the caller's clock); then per limit i: ARGV[8+3i] window, ARGV[9+3i] limit, ARGV[10+3i] cost;
# then ARGV[11+3n] the keys' TTL margin; then ARGV[12+3n] what a refusal is recorded under: the model, then the quota
# id of each limit, one per line ('' for a peek; one argument rather than n + 1, as every check sends it and few read
# it); then, only with a pacific_month limit, ARGV[13+3n..21+3n] start, end, month id (YYYYMM) of the previous,
# current and next Pacific month and ARGV[22+3n] the minutes of reservations a monthly limit counts.
# Returns {allowed 0|1, index of the first exceeded limit or 0, then remaining and reset_seconds per limit, then Redis's
# epoch second} (the second dates the reservation id the caller makes of an admitted check); or, when a monthly
# limit's counter for the month has no seed, {-1, its index, what was reported into it so far, the month id}, having
# written nothing.
#
# A monthly counter is two keys besides KEYS[i]: the hash KEYS[i]:<YYYYMM> of the month, fields "seed" (what the books
# held when it was made, less what was reported into it by then) and "spent" (reported since: the settle script), and
# the hash KEYS[i]:r of the reservations of admitted checks, minute -> units, which count while younger than the
# reservation minutes. Used = seed + spent + those reservations.
#
# The clock is Redis's own TIME, so every worker counts into the same windows whatever its own clock says. Minute and
# day counters are plain integers whose key name ends with the window instance (minute number, YYYYMMDD), so the
# script builds key names from the clock: Redis Cluster tolerates undeclared keys only in the slot of the declared
# ones, which the shared hash tag {<scope>} guarantees. A rolling counter is one hash of minute -> units.
# All reads come before any write, and nothing is written unless every limit has room: all or nothing. A refused
# check adds 1 to field "<minute>|<model>|<quota id of the first exceeded limit>" of the denials hash "dn:{<scope>}"
# (same hash tag), which lives DENIAL_TTL_SECONDS from its newest field (the constant is written into the script
# below).
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
-- Monthly limits only: the Pacific month that holds Redis's clock (as the day above) and the minutes of reservations
-- that count, read when the first such limit comes.
local month_id, month_end, rb
local function pick_month()
  local base = 13 + 3 * n
  month_id, month_end = ARGV[base + 5], tonumber(ARGV[base + 4])
  for d = 0, 2 do
    local s, e = tonumber(ARGV[base + 3 * d]), tonumber(ARGV[base + 1 + 3 * d])
    if s <= sec and sec < e then
      month_id, month_end = ARGV[base + 2 + 3 * d], e
      break
    end
  end
  rb = tonumber(ARGV[base + 9])
end
for i = 1, n do
  local window, limit, cost = ARGV[8 + 3 * i], tonumber(ARGV[9 + 3 * i]), tonumber(ARGV[10 + 3 * i])
  if window == 'pacific_month' then
    if month_id == nil then pick_month() end
    local held = redis.call('HMGET', KEYS[i] .. ':' .. month_id, 'seed', 'spent')
    local spent = tonumber(held[2] or 0)
    -- Not seeded: nothing was written yet; the caller seeds it from the books and checks again.
    if not held[1] then return {-1, i, spent, month_id} end
    local fields = redis.call('HGETALL', KEYS[i] .. ':r')
    local u, old = tonumber(held[1]) + spent, {}
    for j = 1, #fields, 2 do
      if tonumber(fields[j]) <= minute - rb then old[#old + 1] = fields[j] else u = u + tonumber(fields[j + 1]) end
    end
    keys[i], used[i], stale[i] = KEYS[i] .. ':r', u, old
    resets[i] = reset_until(month_end)
    expire_at[i] = (minute + rb) * 60 + margin
  elseif window == 'rolling_10m' then
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
    if window == 'rolling_10m' or window == 'pacific_month' then
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
local label = ARGV[12 + 3 * n]
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
out[#out + 1] = sec
return out
""".replace("DENIAL_TTL_SECONDS", str(DENIAL_TTL_SECONDS))

# KEYS[1]: "rl:{<scope>}:" (counter keys are this plus "<counter>:<window>"); not a key itself: it names the scope's
# slot, as in the check script. ARGV[1]: the keys' TTL margin; ARGV[2]: a Settlement of the scope as one JSON object:
#   "counters": [[name, window], ...]: the counters it changes, numbered from 1 in this order;
#   "plain": [[counter number, amount], ...]: unreserved usage, summed per counter: added to the current bucket;
#   "reserved": [[counter number, bucket, net difference, sum of the positive differences], ...]: the differences of
#   the reservations of one bucket, summed; the net goes into that bucket while it is in its window, after that the
#   positive sum into the current bucket;
#   "spent": [[counter number, month YYYYMM, the month hash's expiry, amount], ...]: usage of pacific_month counters,
#   added to field "spent" of the month's hash (made if missing: its seed comes later, less what it holds by then);
#   "released": [[counter number, bucket, amount], ...]: their reserved estimates, taken off the reservations hash
#   while the bucket still counts (newer than "rb" minutes), never below zero.
# Returns the number of counter buckets changed.
#
# Changes are summed per bucket before any is written, so that "never below zero" holds for the net change of a bucket
# whatever the order of the usages. Redis's TIME is the clock, as in the checks that dated the reservations.
_SETTLE_SCRIPT = """
local minute = math.floor(tonumber(redis.call('TIME')[1]) / 60)
local counter_prefix = KEYS[1]
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

for _, reserved in ipairs(usages.reserved) do
  local c, bucket, net, more = reserved[1], reserved[2], reserved[3], reserved[4]
  local window = windows[c]
  if (window == 'minute' and bucket == minute) or (window == 'rolling_10m' and bucket > minute - 10) then
    change(keys[c], window, bucket, net)
  elseif more > 0 then
    change(keys[c], window, minute, more)  -- the reserved bucket left its window: what was used above it still counts
  end
end

for _, spent in ipairs(usages.spent) do
  local key = keys[spent[1]] .. ':' .. spent[2]
  redis.call('HINCRBY', key, 'spent', spent[4])
  redis.call('EXPIREAT', key, spent[3])
end
for _, released in ipairs(usages.released) do
  local bucket = released[2]
  if bucket > minute - usages.rb then
    local key = keys[released[1]] .. ':r'
    local held = tonumber(redis.call('HGET', key, bucket) or 0)
    if held > 0 then redis.call('HINCRBY', key, bucket, -math.min(held, released[3])) end
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

# KEYS[1]: a monthly counter's hash of one month "rl:{<scope>}:<counter>:pacific_month:<YYYYMM>"; ARGV[1]: its seed,
# ARGV[2]: its expiry (epoch seconds). Sets the seed unless another caller did first. Returns 1 if this call set it.
_SEED_SCRIPT = """
local set = redis.call('HSETNX', KEYS[1], 'seed', ARGV[1])
redis.call('EXPIREAT', KEYS[1], ARGV[2])
return set
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
        self._seed_script = self._redis.register_script(_SEED_SCRIPT)
        self._months = _PacificMonths()
        self._signer = ReservationSigner.from_settings()
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
        now = time.time()
        args: list[str | int] = ["check" if counting else "peek"]
        for day in self._days.around(now):
            args += day
        monthly = False
        for limit in limits:
            args += (limit.window, limit.limit, limit.cost)
            monthly = monthly or limit.window == PACIFIC_MONTH
        args.append(KEY_TTL_MARGIN)
        # What a refusal is recorded under: only read by the script when it refuses.
        args.append("\n".join((model, *(limit.quota_id for limit in limits))) if counting else "")
        if monthly:
            for month in self._months.around(now):
                args += month
            args.append(reservation_buckets())
        try:
            reply = self._script(keys=keys, args=args)
            # A monthly counter without its seed (each at most once: a seed is never unset while its month lasts).
            for _ in range(len(limits)):
                if int(reply[0]) != -1:
                    break
                self._seed(keys, limits, reply)
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
        if counting and any(limit.settles for limit in limits):
            return Decision(True, states, None, self._signer.issue(scope, limits, int(reply[-1])))
        return Decision(True, states, None)

    def _seed(self, keys: list[str], limits: list[Limit], reply: list) -> None:
        """Seed the month's counter the check script found without one: what the books hold (the limit's `seed`, read
        after the script read what was reported into the counter) less what was reported into it by then, which the
        books already hold. Usage whose report committed between the two reads counts twice (more, never less), until
        the month ends."""
        index, reported, month = int(reply[1]) - 1, int(reply[2]), int(reply[3])
        seeded = limits[index].seed(month_first_day(month)) - reported
        self._seed_script(keys=[f"{keys[index]}:{month}"], args=[seeded, month_end(month) + KEY_TTL_MARGIN])

    def settle(self, scope: str, usages: list[Usage]) -> None:
        self.settle_many({scope: usages})

    def settle_many(self, usages_by_scope: dict[str, list[Usage]]) -> None:
        """One settle script call per scope that changes anything (a Redis Cluster runs each on its scope's node), all
        in one pipeline; no round trip when nothing changes."""
        now = time.time()
        calls = [
            call
            for scope, usages in usages_by_scope.items()
            if usages and (call := _settle_call(scope, _settlement(self._signer, scope, usages, now))) is not None
        ]
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


def _settle_call(scope: str, settled: Settlement) -> tuple[list[str], list[int | bytes]] | None:
    """(keys, args) of the settle script for one scope's Settlement (the layout is described above the script); None
    when it changes nothing."""
    numbers: dict[Counter, int] = {}
    plain = [[numbers.setdefault(counter, len(numbers) + 1), amount] for counter, amount in settled.plain.items()]
    reserved = [
        [numbers.setdefault(counter, len(numbers) + 1), bucket, net, more]
        for (counter, bucket), (net, more) in settled.reserved.items()
        if net or more
    ]
    spent = [
        [numbers.setdefault(counter, len(numbers) + 1), month, month_end(month) + KEY_TTL_MARGIN, amount]
        for (counter, month), amount in settled.spent.items()
        if amount
    ]
    released = [
        [numbers.setdefault(counter, len(numbers) + 1), bucket, amount]
        for (counter, bucket), amount in settled.released.items()
        if amount
    ]
    if not plain and not reserved and not spent and not released:
        return None
    document = {
        "counters": [tuple(counter) for counter in numbers],
        "plain": plain,
        "reserved": reserved,
        "spent": spent,
        "released": released,
        "rb": reservation_buckets(),
    }
    return [f"rl:{{{scope}}}:"], [KEY_TTL_MARGIN, orjson.dumps(document)]


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
