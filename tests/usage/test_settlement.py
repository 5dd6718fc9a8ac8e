"""Admission learns what was used (SPEC §9): reported usage replaces the estimates reserved at admission.

Limiter tests run on both implementations (`subject`, as in test_limiter.py): in-process on a frozen clock
(time-machine), Redis on its own clock from a moment early in a second and a minute, so that a test's few hundred
milliseconds stay in one minute; earlier minutes are reached in-process by moving the clock, in Redis by seeding
counters of earlier minutes and signing reservation ids dated then (a reservation id is the reservation: nothing of it
is stored). API tests admit through quota:check and report through usage:report, on
both implementations too (`backend`), and read the counters as the next check would (`remaining`).
"""

import contextlib
import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import redis
import time_machine
from django.db import transaction
from django.utils import timezone

from studio.models import Project
from tests.conftest import skip_or_fail
from tests.factories import make_billed_project, make_key, make_user
from tests.usage.redis_clock import quiet_moment
from usage import limiter as limiter_registry
from usage.admission import limits_for, project_scope
from usage.ingest import RESERVATION_ID_PATTERN, ingest
from usage.limiter import (
    KEY_TTL_MARGIN,
    MINUTE,
    ROLLING_10M,
    Counter,
    InProcessLimiter,
    Limit,
    Limiter,
    RedisLimiter,
    ReservationSigner,
    Usage,
    get_limiter,
)
from usage.models import FleetToken, UsageEvent

# 29.75 s before a minute ends.
FROZEN = datetime(2026, 1, 15, 12, 0, 30, 250_000, tzinfo=UTC)
PATIENT = 1.0  # Redis timeout for tests about counting, not about the fallback
TPM, SPEND = "TPM:gemini-2.5-flash", "Spend"
COUNTERS = {"input_tokens": Counter(TPM, MINUTE), "micro_usd": Counter(SPEND, ROLLING_10M)}
# "r1", the check's second, the TPM and (if the tier has a spend limit) spend estimates, a 64-bit MAC; all in hex.
RESERVATION_ID = re.compile(r"^r1_[0-9a-f]{8}(_[0-9a-f]+){1,2}_[0-9a-f]{16}$")


def limits(tokens: int = 100_000, micro_usd: int = 300_000) -> list[Limit]:
    """RPM (exact), TPM and spend (estimates, settled by the reported input tokens and micro-USD)."""
    return [
        Limit("RPM", MINUTE, 10, 1, counter="RPM:gemini-2.5-flash"),
        Limit("TPM", MINUTE, 250_000, tokens, counter=TPM, settles="input_tokens"),
        Limit("Spend", ROLLING_10M, 10_000_000, micro_usd, settles="micro_usd"),
    ]


def used(tokens: int, micro_usd: int, reservation_id: str | None = None, *, recent: bool = True) -> Usage:
    return Usage(reservation_id, {"input_tokens": tokens, "micro_usd": micro_usd}, COUNTERS, recent)


# --- the limiter -------------------------------------------------------------------------------------------------


@pytest.fixture
def scope() -> str:
    return f"test-{secrets.token_hex(6)}"


@pytest.fixture
def redis_client(redis_url: str, scope: str) -> Iterator[redis.Redis]:
    """A plain client on the configured Redis; the test's own keys (and only those) are deleted afterwards."""
    client = redis.Redis.from_url(redis_url)
    yield client
    keys = list(client.scan_iter(match=f"*{{{scope}}}*"))
    if keys:
        client.delete(*keys)
    client.close()


@dataclass
class Subject:
    limiter: Limiter
    pass_seconds: object  # pass_seconds(n): n seconds go by on the limiter's clock

    def remaining(self, scope: str) -> list[int]:
        """What is left of RPM, TPM and spend, as the next check would read it."""
        return [state.remaining for state in self.limiter.peek(scope, limits(0, 0))]


@pytest.fixture(params=["in_process", "redis"])
def subject(request, scope: str) -> Iterator[Subject]:
    if request.param == "in_process":
        with time_machine.travel(FROZEN, tick=False) as clock:
            yield Subject(InProcessLimiter(), clock.shift)
        return
    client = request.getfixturevalue("redis_client")
    limiter = RedisLimiter(request.getfixturevalue("redis_url"), timeout=PATIENT)
    quiet_moment(client)
    yield Subject(limiter, time.sleep)
    assert (limiter.fallbacks, limiter.settle_failures) == (0, 0)


def test_settling_replaces_the_estimate_with_the_actual_usage(subject: Subject, scope: str):
    decision = subject.limiter.check(scope, limits(tokens=100_000, micro_usd=300_000))
    assert [state.remaining for state in decision.states] == [9, 150_000, 9_700_000]
    assert RESERVATION_ID.match(decision.reservation_id)

    subject.limiter.settle(scope, [used(10, 3, decision.reservation_id)])

    assert subject.remaining(scope) == [9, 249_990, 9_999_997]


def test_a_reservation_id_holds_the_second_and_the_estimates(scope: str):
    with time_machine.travel(FROZEN, tick=False):
        first, second = (InProcessLimiter().check(scope, limits(100_000, 300_000)).reservation_id for _ in range(2))

    # Its measures in order of their names: input_tokens (0x186a0), micro_usd (0x493e0).
    assert first[:-16] == f"r1_{int(FROZEN.timestamp()):x}_186a0_493e0_"
    assert (len(first), RESERVATION_ID.match(first) is not None) == (40, True)
    assert first != second  # each limiter signs with a key of its own


def test_the_redis_check_dates_its_reservation_by_redis(redis_url: str, redis_client: redis.Redis, scope: str):
    limiter = RedisLimiter(redis_url, timeout=PATIENT)
    now = quiet_moment(redis_client)

    reservation_id = limiter.check(scope, limits(100_000, 300_000)).reservation_id

    assert reservation_id[:-16] in (f"r1_{now:x}_186a0_493e0_", f"r1_{now + 1:x}_186a0_493e0_")
    # Nothing is stored for it: the scope's keys are its counters.
    minute = int(reservation_id.split("_")[1], 16) // 60
    assert sorted(redis_client.scan_iter(match=f"*{{{scope}}}*")) == [
        f"rl:{{{scope}}}:RPM:gemini-2.5-flash:minute:{minute}".encode(),
        f"rl:{{{scope}}}:Spend:rolling_10m".encode(),
        f"rl:{{{scope}}}:TPM:gemini-2.5-flash:minute:{minute}".encode(),
    ]


def test_each_usage_that_carries_an_id_settles_it(subject: Subject, scope: str):
    """An id is a claim, not a ticket: what keeps a reservation from settling twice is that only a newly stored event
    settles (usage.settlement). Sent twice, its estimate is subtracted twice, down to the bucket's count at most."""
    reservation_id = subject.limiter.check(scope, limits(tokens=100_000, micro_usd=300_000)).reservation_id
    subject.limiter.check(scope, limits(tokens=100_000, micro_usd=300_000))

    subject.limiter.settle(scope, [used(10, 3, reservation_id), used(10, 3, reservation_id)])
    assert subject.remaining(scope) == [8, 249_980, 9_999_994]

    subject.limiter.settle(scope, [used(10, 3, reservation_id)])
    assert subject.remaining(scope) == [8, 250_000, 10_000_000]  # never below zero


def test_equal_checks_in_one_second_get_equal_ids_and_each_usage_settles_its_own(scope: str):
    limiter = InProcessLimiter()
    with time_machine.travel(FROZEN, tick=False):
        first = limiter.check(scope, limits(tokens=100_000, micro_usd=300_000)).reservation_id
        second = limiter.check(scope, limits(tokens=100_000, micro_usd=300_000)).reservation_id
        assert first == second

        limiter.settle(scope, [used(10, 3, first), used(20, 4, second)])

        assert [state.remaining for state in limiter.peek(scope, limits(0, 0))] == [8, 249_970, 9_999_993]


def _tampered(reservation_id: str, scope: str, subject: Subject) -> dict[str, str]:
    """Ids that must not be taken for `reservation_id`'s reservation in `scope`."""
    version, second, tokens, micro_usd, mac = reservation_id.split("_")
    flipped = ("a" if mac[0] != "a" else "b") + mac[1:]
    other_scope = subject.limiter.check(f"{scope}-other", limits(100_000, 300_000)).reservation_id
    return {
        "estimates raised": f"{version}_{second}_{int(tokens, 16) * 10:x}_{micro_usd}_{mac}",
        "dated later": f"{version}_{int(second, 16) + 60:x}_{tokens}_{micro_usd}_{mac}",
        "MAC changed": f"{version}_{second}_{tokens}_{micro_usd}_{flipped}",
        "MAC cut short": reservation_id[:-1],
        "another version": "r2" + reservation_id[2:],
        "not ASCII": reservation_id[:-1] + "é",
        "the old format": "mJ8f3kQ2bX-4tV7yZ1pA_w",
        "empty fields": "r1____" + mac,
        "another scope's": other_scope,
        "another limiter's": InProcessLimiter().check(scope, limits(100_000, 300_000)).reservation_id,
    }


def test_a_forged_or_garbled_id_counts_the_usage_in_full(subject: Subject, scope: str):
    reservation_id = subject.limiter.check(scope, limits(tokens=100_000, micro_usd=300_000)).reservation_id
    tampered = _tampered(reservation_id, scope, subject)

    for number, (name, forged) in enumerate(tampered.items(), 1):
        subject.limiter.settle(scope, [used(10, 3, forged)])
        assert subject.remaining(scope) == [9, 150_000 - 10 * number, 9_700_000 - 3 * number], name
    subject.limiter.settle(scope, [used(10, 3, reservation_id)])  # the real one still settles
    assert subject.remaining(scope) == [9, 250_000 - 10 * 11, 10_000_000 - 3 * 11]


def test_an_id_is_taken_only_for_the_counters_it_was_counted_in(subject: Subject, scope: str):
    """A project whose tier changed since its check, or usage reported for another model, names other counters: the
    estimate stays where it was counted and the usage counts in full where it is reported."""
    reservation_id = subject.limiter.check(scope, limits(tokens=100_000, micro_usd=300_000)).reservation_id
    other_model = {"input_tokens": Counter("TPM:gemini-2.0-flash", MINUTE), "micro_usd": Counter(SPEND, ROLLING_10M)}
    tpm_only = {"input_tokens": COUNTERS["input_tokens"]}
    amounts = {"input_tokens": 10, "micro_usd": 3}

    subject.limiter.settle(
        scope, [Usage(reservation_id, amounts, other_model), Usage(reservation_id, amounts, tpm_only)]
    )

    assert subject.remaining(scope) == [9, 150_000 - 10, 9_700_000 - 3]
    other_tpm = [Limit("TPM", MINUTE, 250_000, 0, counter="TPM:gemini-2.0-flash")]
    assert [state.remaining for state in subject.limiter.peek(scope, other_tpm)] == [250_000 - 10]


def test_usage_that_is_not_recent_counts_only_through_its_reservation(subject: Subject, scope: str):
    """Usage that occurred before every window adds nothing, unless its reservation is taken: then it replaces it."""
    reservation_id = subject.limiter.check(scope, limits(tokens=100_000, micro_usd=300_000)).reservation_id

    subject.limiter.settle(
        scope,
        [used(10, 3, reservation_id, recent=False), used(1_000, 40, recent=False), used(1_000, 40, "x", recent=False)],
    )

    assert subject.remaining(scope) == [9, 249_990, 9_999_997]


def test_only_an_admitted_check_with_estimates_reserves(subject: Subject, scope: str):
    rpm_only = [Limit("RPM", MINUTE, 1, 1)]
    assert subject.limiter.check(scope, rpm_only).reservation_id is None
    assert subject.limiter.check(scope, limits(tokens=250_001)).reservation_id is None  # denied: nothing counted
    assert subject.limiter.check(scope, limits()).reservation_id is not None
    assert subject.remaining(scope) == [9, 150_000, 9_700_000]


def test_usage_without_a_reservation_adds_its_actual_amount(subject: Subject, scope: str):
    subject.limiter.check(scope, limits(tokens=100_000, micro_usd=300_000))

    subject.limiter.settle(
        scope,
        [
            used(1_000, 40),
            used(2_000, 50),
            used(4_000, 60, reservation_id="never-issued"),
            Usage(None, {"input_tokens": 8_000, "micro_usd": 70}, {}),  # no counter named: counts nowhere
        ],
    )

    assert subject.remaining(scope) == [9, 150_000 - 7_000, 9_700_000 - 150]


def test_a_lapsed_reservation_leaves_the_estimate_and_adds_the_actual(subject: Subject, scope: str, settings):
    settings.RESERVATION_TTL_SECONDS = 1
    reservation_id = subject.limiter.check(scope, limits(tokens=100_000, micro_usd=300_000)).reservation_id

    subject.pass_seconds(1.1)  # still in the same minute (the subject starts at least 2 s before its end)
    subject.limiter.settle(scope, [used(10, 3, reservation_id), used(1_000, 40, reservation_id, recent=False)])

    # Lapsed, it is usage without a reservation: counted in full if recent, else nowhere.
    assert subject.remaining(scope) == [9, 150_000 - 10, 9_700_000 - 3]


def test_settle_many_settles_each_scope(subject: Subject, scope: str):
    other = f"{scope}-other"
    first = subject.limiter.check(scope, limits()).reservation_id
    second = subject.limiter.check(other, limits(tokens=200_000, micro_usd=500_000)).reservation_id

    subject.limiter.settle_many({scope: [used(10, 3, first)], other: [used(20, 4, second), used(30, 5)]})

    assert subject.remaining(scope) == [9, 249_990, 9_999_997]
    assert subject.remaining(other) == [9, 249_950, 9_999_991]
    # A reservation is found only in the scope that made it: elsewhere its usage adds in full.
    third = subject.limiter.check(scope, limits()).reservation_id
    subject.limiter.settle(other, [used(1, 1, third)])
    assert subject.remaining(other) == [9, 249_949, 9_999_990]
    assert subject.remaining(scope) == [8, 149_990, 9_699_997]


def test_a_reservation_of_an_earlier_minute_in_process(scope: str, settings):
    """The minute's estimate has left its window: more than estimated counts now, less is dropped. The spend bucket
    is still in its rolling window and is corrected in place, until it too has left."""
    settings.RESERVATION_TTL_SECONDS = 3600
    limiter = InProcessLimiter()
    base = datetime(2026, 1, 15, 12, 0, 5, tzinfo=UTC)
    with time_machine.travel(base, tick=False) as clock:
        more = limiter.check(scope, limits(tokens=100, micro_usd=300)).reservation_id
        less = limiter.check(scope, limits(tokens=100, micro_usd=300)).reservation_id
        clock.move_to(base + timedelta(minutes=1))
        late_more = limiter.check(scope, limits(tokens=100, micro_usd=300)).reservation_id
        late_less = limiter.check(scope, limits(tokens=100, micro_usd=300)).reservation_id
        remaining = lambda: [s.remaining for s in limiter.peek(scope, limits(0, 0))]  # noqa: E731
        assert remaining() == [8, 249_800, 9_998_800]

        limiter.settle(scope, [used(150, 500, more), used(40, 100, less)])

        # TPM: +50 from `more` into this minute, -60 from `less` dropped; spend: +200 and -200 in minute 0's bucket.
        assert remaining() == [8, 249_750, 9_998_800]
        clock.move_to(base + timedelta(minutes=11))  # minute 1's spend has left the window too
        limiter.settle(scope, [used(150, 1_000, late_more), used(40, 100, late_less)])
        assert remaining() == [10, 249_950, 9_999_300]


def test_a_reservation_of_an_earlier_minute_in_redis(redis_url: str, redis_client: redis.Redis, scope: str, settings):
    settings.RESERVATION_TTL_SECONDS = 3600
    minute = quiet_moment(redis_client) // 60
    tpm_key, spend_key = f"rl:{{{scope}}}:{TPM}:minute", f"rl:{{{scope}}}:{SPEND}:rolling_10m"
    redis_client.set(f"{tpm_key}:{minute - 1}", 200)
    redis_client.hset(spend_key, mapping={minute - 10: 600, minute - 1: 600})
    # As checks of those minutes would have answered them (100 tokens, 300 micro-USD each).
    signer = ReservationSigner.from_settings()
    earlier, oldest = (signer.issue(scope, limits(100, 300), bucket * 60 + 5) for bucket in (minute - 1, minute - 10))
    limiter = RedisLimiter(redis_url, timeout=PATIENT)

    limiter.settle(
        scope,
        [used(150, 500, earlier), used(40, 100, earlier), used(150, 1_000, oldest), used(40, 100, oldest)],
    )

    # TPM: only the positive deltas (+50, +50) count, in this minute; the earlier minute's key is left alone.
    assert redis_client.get(f"{tpm_key}:{minute}") == b"100"
    assert redis_client.expiretime(f"{tpm_key}:{minute}") == (minute + 1) * 60 + KEY_TTL_MARGIN
    assert redis_client.get(f"{tpm_key}:{minute - 1}") == b"200"
    # Spend: minute - 1 is in the window (+200 - 200); minute - 10 is not (+700 now, -200 dropped).
    assert redis_client.hgetall(spend_key) == {
        str(minute - 10).encode(): b"600",
        str(minute - 1).encode(): b"600",
        str(minute).encode(): b"700",
    }
    assert (limiter.fallbacks, limiter.settle_failures) == (0, 0)


def test_ids_signed_under_a_previous_secret_key_still_settle(redis_url: str, scope: str, settings):
    settings.SECRET_KEY = "the-key-before-the-rotation"
    reservation_id = RedisLimiter(redis_url, timeout=PATIENT).check(scope, limits(100_000, 300_000)).reservation_id
    settings.SECRET_KEY = "the-key-after-the-rotation"

    settings.SECRET_KEY_FALLBACKS = ["the-key-before-the-rotation"]
    rotated = RedisLimiter(redis_url, timeout=PATIENT)
    rotated.settle(scope, [used(10, 3, reservation_id)])
    assert [state.remaining for state in rotated.peek(scope, limits(0, 0))] == [9, 249_990, 9_999_997]

    settings.SECRET_KEY_FALLBACKS = []
    forgotten = RedisLimiter(redis_url, timeout=PATIENT)
    forgotten.settle(scope, [used(10, 3, reservation_id)])  # no longer taken: counts in full
    assert [state.remaining for state in forgotten.peek(scope, limits(0, 0))] == [9, 249_980, 9_999_994]


def test_a_reservation_id_fits_what_usage_report_takes(scope: str):
    largest = 2**64 - 1
    two = [
        Limit("TPM", MINUTE, largest, largest, counter=TPM, settles="input_tokens"),
        Limit("Spend", ROLLING_10M, largest, largest, settles="micro_usd"),
    ]
    three = [*two, Limit("Other", MINUTE, largest, largest, settles="other")]
    limiter = InProcessLimiter()

    with time_machine.travel(FROZEN, tick=False):
        reservation_id = limiter.check(scope, two).reservation_id
        assert (len(reservation_id), re.match(RESERVATION_ID_PATTERN, reservation_id) is not None) == (62, True)
        # Too long to be reported: admitted without a reservation, its usage will count in full.
        decision = limiter.check(f"{scope}-3", three)
        assert (decision.allowed, decision.reservation_id) == (True, None)


def test_a_lost_redis_counter_does_not_go_below_zero(redis_url: str, redis_client: redis.Redis, scope: str):
    limiter = RedisLimiter(redis_url, timeout=PATIENT)
    quiet_moment(redis_client)
    reservation_id = limiter.check(scope, limits(tokens=100_000, micro_usd=300_000)).reservation_id
    redis_client.delete(*redis_client.scan_iter(match=f"rl:{{{scope}}}:*"))  # e.g. writes lost in a failover

    limiter.settle(scope, [used(10, 3, reservation_id)])

    assert [state.remaining for state in limiter.peek(scope, limits(0, 0))] == [10, 250_000, 10_000_000]


def test_settling_while_redis_is_down_is_a_warning_not_an_error(caplog, scope: str):
    limiter = RedisLimiter("redis://127.0.0.1:1/0")  # nothing listens on port 1

    limiter.settle(scope, [used(10, 3, "some-reservation")])
    limiter.settle_many({scope: [used(10, 3)], f"{scope}-other": [used(1, 1)]})

    assert (limiter.settle_failures, limiter.fallbacks) == (3, 0)
    warnings = [record for record in caplog.records if record.name == "usage.limiter"]
    assert [record.levelname for record in warnings] == ["WARNING"]  # at most one per 10 s
    assert "settling reported usage" in warnings[0].getMessage()


def test_settling_limits_need_minute_buckets():
    with pytest.raises(ValueError, match="settle"):
        Limit("RPD", "pacific_day", 10, 1, settles="requests")


# --- quota:check and usage:report --------------------------------------------------------------------------------

TPM_FREE, TPM_TIER1 = (
    "GenerateContentInputTokensPerModelPerMinute-FreeTier",
    "GenerateContentInputTokensPerModelPerMinute-Tier1",
)
SPEND_TIER1 = "GenerateSpendPer10MinutesPerProject-Tier1"


@pytest.fixture
def fleet(db) -> str:
    _, raw = FleetToken.issue(name="fleet-settlement")
    return raw


@pytest.fixture(params=["in_process", "redis"])
def backend(request, settings) -> Iterator[str]:
    """The limiter get_limiter() gives, on a clock with at least 5 s left in the minute (TPM counts per minute)."""
    if request.param == "redis":
        if not settings.REDIS_URL:
            skip_or_fail("needs Redis: set REDIS_URL", required_by="REQUIRE_POSTGRES")
        # Patient, so that a slow machine does not turn these into tests of the fallback.
        limiter = limiter_registry._limiters[settings.REDIS_URL] = RedisLimiter(settings.REDIS_URL, timeout=PATIENT)
        left = 60 - time.time() % 60
        if left < 5:
            time.sleep(left + 0.05)
        yield request.param
        assert get_limiter() is limiter
        assert (limiter.fallbacks, limiter.settle_failures) == (0, 0)
        return
    settings.REDIS_URL = ""
    now = time.time()
    with time_machine.travel(now if 60 - now % 60 >= 5 else (now // 60 + 1) * 60 + 0.5, tick=False):
        yield request.param


@pytest.fixture
def report(client, fleet, django_capture_on_commit_callbacks):
    """report(*events): POST usage:report, running what waits for the commit as a real commit would; the answer."""

    def send(*events) -> dict:
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(
                "/api/v1/usage:report",
                json.dumps({"events": list(events)}),
                content_type="application/json",
                headers={"Authorization": f"Bearer {fleet}"},
            )
        assert response.status_code == 200
        return response.json()

    return send


@pytest.fixture
def check(client, fleet):
    """check(raw key, tokens, model=…, kind=…): POST quota:check; the decision."""

    def send(raw_key: str, tokens: int, model: str = "gemini-2.5-flash", kind: str = "generate") -> dict:
        body = {"api_key": raw_key, "model": model, "kind": kind, "estimated_input_tokens": tokens}
        response = client.post(
            "/api/v1/quota:check",
            json.dumps(body),
            content_type="application/json",
            headers={"Authorization": f"Bearer {fleet}"},
        )
        assert response.status_code == 200
        return response.json()

    return send


def remaining(key, model: str = "gemini-2.5-flash") -> dict[str, int]:
    """{quota id: remaining} of the key's project, as the next check would read them (without counting one)."""
    project = Project.objects.get(pk=key.project_id)
    limits = limits_for(project, model, estimated_input_tokens=0)
    return {state.quota_id: state.remaining for state in get_limiter().peek(project_scope(project.pk), limits)}


def test_reported_tokens_replace_the_tpm_estimate(backend, check, report, event, free_key):
    key, raw = free_key  # free tier gemini-2.5-flash: TPM 250,000, no spend limit
    admitted = check(raw, tokens=100_000)
    assert (admitted["allowed"], admitted["limits"][1]["quota_id"], admitted["limits"][1]["remaining"]) == (
        True,
        TPM_FREE,
        150_000,
    )
    assert RESERVATION_ID.match(admitted["reservation_id"])
    assert admitted["reservation_id"].split("_")[2:-1] == ["186a0"]  # 100,000 tokens; no spend limit, no spend

    answer = report(event(key, input_tokens=10, output_tokens=0, reservation_id=admitted["reservation_id"]))

    assert answer == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert remaining(key)[TPM_FREE] == 249_990


def test_only_admitted_counted_checks_answer_a_reservation_id(backend, check, free_key):
    _, raw = free_key

    decisions = [check(raw, tokens=100, kind="count_tokens"), check(raw, tokens=250_001), check(raw, tokens=100)]

    assert [(d["allowed"], d["reservation_id"] is not None) for d in decisions] == [
        (True, False),
        (False, False),
        (True, True),
    ]


def test_reported_cost_replaces_the_spend_estimate(backend, check, report, event, paid_key):
    key, raw = paid_key  # Tier 1: TPM 1,000,000 on gemini-2.5-flash, spend USD 10 per 10 minutes
    admitted = check(raw, tokens=100_000)  # USD 0.30 per 1M input tokens: 30,000 micro-USD
    assert [(q["quota_id"], q["remaining"]) for q in admitted["limits"]][1::2] == [
        (TPM_TIER1, 900_000),
        (SPEND_TIER1, 9_970_000),
    ]

    report(event(key, input_tokens=10, output_tokens=0, reservation_id=admitted["reservation_id"]))  # 3 micro-USD

    assert {quota: left for quota, left in remaining(key).items() if quota in (TPM_TIER1, SPEND_TIER1)} == {
        TPM_TIER1: 999_990,
        SPEND_TIER1: 9_999_997,
    }


def test_reported_tokens_over_the_tpm_limit_deny_the_next_check(backend, check, report, event, paid_key):
    key, raw = paid_key

    report(event(key, input_tokens=1_000_000, output_tokens=0))

    denied = check(raw, tokens=1)
    assert (denied["allowed"], denied["error"]["quota_id"], denied["error"]["limit"], denied["error"]["unit"]) == (
        False,
        TPM_TIER1,
        1_000_000,
        "tokens",
    )
    assert denied["reservation_id"] is None


def test_reported_spend_over_the_spend_limit_denies_the_next_check(backend, check, report, event, paid_key):
    key, raw = paid_key
    # Three requests of 300,000 output tokens of gemini-2.5-pro at USD 10 per 1M: USD 9 within the 10 minutes.
    report(*(event(key, model="gemini-2.5-pro", input_tokens=0, output_tokens=300_000) for _ in range(3)))
    assert remaining(key, "gemini-2.5-pro")[SPEND_TIER1] == 1_000_000

    # 400,001 prompt tokens are over the long-prompt threshold: USD 2.50 per 1M, 1,000,002.5 micro-USD.
    denied = check(raw, tokens=400_001, model="gemini-2.5-pro")
    assert (denied["allowed"], denied["error"]["quota_id"], denied["error"]["limit"], denied["error"]["unit"]) == (
        False,
        SPEND_TIER1,
        10_000_000,
        "micro_usd",
    )
    assert check(raw, tokens=400_000, model="gemini-2.5-pro")["limits"][-1]["remaining"] == 0  # exactly USD 1


def test_a_replayed_report_changes_no_counter(backend, check, report, event, free_key):
    key, raw = free_key
    admitted = check(raw, tokens=100_000)
    events = [
        event(key, input_tokens=10, output_tokens=0, reservation_id=admitted["reservation_id"]),
        event(key, input_tokens=1_000, output_tokens=0),
    ]
    assert report(*events)["accepted"] == 2
    assert remaining(key)[TPM_FREE] == 248_990

    assert report(*events) == {"accepted": 0, "duplicates": 2, "rejected": []}
    assert remaining(key)[TPM_FREE] == 248_990

    # Replayed events next to a new one: only the new one counts.
    assert report(*events, event(key, input_tokens=7, output_tokens=0))["accepted"] == 1
    assert remaining(key)[TPM_FREE] == 248_983


def test_an_event_without_a_reservation_adds_its_actual_usage(backend, check, report, event, free_key):
    key, raw = free_key
    check(raw, tokens=100_000)  # its reservation id is not passed back

    report(event(key, input_tokens=10, output_tokens=0))

    assert remaining(key)[TPM_FREE] == 149_990


def test_late_usage_without_a_reservation_adds_nothing_to_the_current_windows(backend, check, report, event, free_key):
    key, raw = free_key
    check(raw, tokens=100_000)

    report(
        event(key, input_tokens=10, output_tokens=0, occurred_at=(timezone.now() - timedelta(minutes=11)).isoformat())
    )

    assert remaining(key)[TPM_FREE] == 150_000  # only the estimate counts: the late usage is outside every window


def test_a_late_event_settles_its_reservation_but_adds_nothing_without_one(backend, check, report, event, free_key):
    """An event that occurred more than 10 minutes ago still replaces its estimate through a reservation id that is
    taken; without one taken (here a garbled id) it is outside every window and adds nothing."""
    key, raw = free_key
    late = (timezone.now() - timedelta(minutes=11)).isoformat()
    admitted = check(raw, tokens=100_000)

    report(event(key, input_tokens=10, output_tokens=0, occurred_at=late, reservation_id=admitted["reservation_id"]))
    assert remaining(key)[TPM_FREE] == 249_990

    garbled = check(raw, tokens=100_000)["reservation_id"][:-1] + "x"
    report(event(key, input_tokens=1_000, output_tokens=0, occurred_at=late, reservation_id=garbled))
    assert remaining(key)[TPM_FREE] == 149_990


def _with_estimates(reservation_id: str, *estimates: int) -> str:
    """`reservation_id` claiming other estimates, its MAC kept."""
    version, second, *_, mac = reservation_id.split("_")
    return "_".join((version, second, *(f"{estimate:x}" for estimate in estimates), mac))


def test_a_forged_reservation_id_counts_the_usage_in_full(backend, check, report, event, paid_key):
    key, raw = paid_key
    admitted = check(raw, tokens=100_000)  # 30,000 micro-USD
    forged = _with_estimates(admitted["reservation_id"], 1_000_000, 10_000_000)  # would empty both windows

    report(event(key, input_tokens=10, output_tokens=0, reservation_id=forged))

    assert (remaining(key)[TPM_TIER1], remaining(key)[SPEND_TIER1]) == (900_000 - 10, 9_970_000 - 3)


def test_an_id_settles_only_the_project_and_model_it_was_checked_for(backend, check, report, event, free_key, paid_key):
    free, free_raw = free_key
    paid, _ = paid_key
    admitted = check(free_raw, tokens=100_000)

    report(
        event(paid, input_tokens=10, output_tokens=0, reservation_id=admitted["reservation_id"]),
        event(
            free, model="gemini-2.0-flash", input_tokens=20, output_tokens=0, reservation_id=admitted["reservation_id"]
        ),
    )

    # Each counts in full where it was reported; the estimate stays where the check counted it.
    assert remaining(free)[TPM_FREE] == 150_000
    assert remaining(free, "gemini-2.0-flash")[TPM_FREE] == 1_000_000 - 20
    assert (remaining(paid)[TPM_TIER1], remaining(paid)[SPEND_TIER1]) == (1_000_000 - 10, 10_000_000 - 3)


def storage(event: dict) -> dict:
    """The event made a cache_storage event (token-hours, no tokens, no status)."""
    fields = {name: value for name, value in event.items() if name not in ("status_code", "input_tokens")}
    return {**fields, "kind": "cache_storage", "cache_token_hours": "1000", "output_tokens": 0}


def test_only_usage_that_counts_against_quota_settles_tokens(backend, check, report, event, paid_key):
    """A failed request counts its tokens but costs nothing; count_tokens counts nothing; cache storage is not a
    request (no tokens) but what it costs is spent (USD 1 per 1M token-hours: 1,000 micro-USD)."""
    key, raw = paid_key
    admitted = check(raw, tokens=100_000)

    report(
        event(key, status_code=500, input_tokens=10, output_tokens=0, reservation_id=admitted["reservation_id"]),
        event(key, kind="count_tokens", input_tokens=5_000, output_tokens=0),
        storage(event(key)),
    )

    assert remaining(key)[TPM_TIER1] == 999_990
    assert remaining(key)[SPEND_TIER1] == 9_999_000


def test_events_of_several_projects_settle_each_project(backend, check, report, event, free_key, paid_key):
    free, free_raw = free_key
    paid, paid_raw = paid_key
    free_admitted, paid_admitted = check(free_raw, tokens=100_000), check(paid_raw, tokens=100_000)

    report(
        event(free, input_tokens=10, output_tokens=0, reservation_id=free_admitted["reservation_id"]),
        event(paid, input_tokens=20, output_tokens=0, reservation_id=paid_admitted["reservation_id"]),
        event(paid, input_tokens=30, output_tokens=0),
    )

    assert remaining(free)[TPM_FREE] == 249_990
    assert (remaining(paid)[TPM_TIER1], remaining(paid)[SPEND_TIER1]) == (999_950, 9_999_985)


def test_a_report_whose_write_rolls_back_settles_nothing(
    backend, check, event, free_key, django_capture_on_commit_callbacks
):
    key, raw = free_key
    admitted = check(raw, tokens=100_000)

    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        contextlib.suppress(RuntimeError),
        transaction.atomic(),
    ):
        ingest([event(key, input_tokens=10, reservation_id=admitted["reservation_id"])])
        raise RuntimeError("the write fails after storing")

    assert (callbacks, UsageEvent.objects.count()) == ([], 0)
    assert remaining(key)[TPM_FREE] == 150_000


def test_redis_down_while_settling_still_stores_the_report(report, event, free_key, settings, caplog):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    key, _ = free_key

    answer = report(event(key, event_id="evt-kept", input_tokens=10, reservation_id="lost-reservation"))

    assert answer == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert list(UsageEvent.objects.values_list("event_id", flat=True)) == ["evt-kept"]
    assert [record.levelname for record in caplog.records if record.name == "usage.limiter"] == ["WARNING"]
    assert get_limiter().settle_failures == 1


def test_settling_a_batch_costs_one_query(
    event, free_key, django_capture_on_commit_callbacks, django_assert_num_queries
):
    free, _ = free_key
    paid = make_key(make_billed_project(make_user("second@example.com")))[0]
    with django_capture_on_commit_callbacks() as callbacks:
        ingest([event(free, reservation_id="r1"), event(free), event(paid), event(paid, reservation_id="r2")])
    with django_capture_on_commit_callbacks() as nothing_to_settle:
        ingest([event(free, kind="count_tokens", output_tokens=0)])

    with django_assert_num_queries(1):
        [settle] = callbacks
        settle()
    with django_assert_num_queries(0):
        [settle] = nothing_to_settle
        settle()


@pytest.mark.parametrize(
    ("overrides", "errors"),
    [
        (
            {"reservation_id": "not a reservation"},
            {"reservation_id": ["String should match pattern '^[A-Za-z0-9_-]{1,64}$'"]},
        ),
        ({"reservation_id": "x" * 65}, {"reservation_id": ["String should match pattern '^[A-Za-z0-9_-]{1,64}$'"]}),
        (
            {
                "kind": "cache_storage",
                "cache_token_hours": "5",
                "input_tokens": 0,
                "output_tokens": 0,
                "status_code": 200,
                "reservation_id": "abc",
            },
            {
                "status_code": ["A cache_storage event is not a request: it has no status_code."],
                "reservation_id": ["A cache_storage event is never admitted: it has no reservation_id."],
            },
        ),
    ],
)
def test_a_reservation_id_is_validated(event, free_key, overrides, errors):
    key, _ = free_key

    report = ingest([{**event(key, event_id="evt-bad"), **overrides}])

    assert (report.accepted, report.rejected) == (0, [{"index": 0, "event_id": "evt-bad", "errors": errors}])
