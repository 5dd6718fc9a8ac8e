"""Denials on record (X6, R21): the limiter counts each refused check per model, quota id and minute in the same
call that decides it; usage.denials moves them to QuotaDenial exactly once; usage.queries reads them and builds the
Limits tab's rows (`limits_for_project`).

Limiter tests run on both implementations (`subject`): in-process on a frozen clock (time-machine), Redis on its own
clock from a moment early in a second and a minute (as in test_limiter.py). Admission tests run quota:check's own
function on the limiter get_limiter() gives (`backend`).
"""

import io
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import redis
import time_machine
from django.core.management import call_command
from django.db import IntegrityError
from redis.exceptions import RedisError

import usage.jobs
from studio.models import Tier
from tests.concurrency import at_once
from tests.factories import make_billed_project, make_key, make_project, make_user
from tests.studio.test_jobs import hold_lock_in_another_thread
from tests.usage.redis_clock import quiet_moment
from usage import admission, catalog
from usage import limiter as limiter_registry
from usage.denials import flush, record_past
from usage.ingest import ingest
from usage.limiter import (
    DENIAL_TTL_SECONDS,
    LOCAL_DENIALS_INTERVAL,
    MINUTE,
    PACIFIC_DAY,
    DenialClaim,
    Denials,
    InProcessLimiter,
    Limit,
    Limiter,
    RedisLimiter,
    get_limiter,
)
from usage.models import CatalogModel, QuotaDenial
from usage.models import DenialClaim as WrittenClaim
from usage.queries import ModelLimits, Window, denials_by_bucket, limits_for_project

# 29.75 s before a minute ends; Thursday 15 January 2026, 04:00:30 in Los Angeles.
FROZEN = datetime(2026, 1, 15, 12, 0, 30, 250_000, tzinfo=UTC)
PATIENT = 1.0  # Redis timeout for tests about counting, not about the fallback
LA, INDIA = ZoneInfo("America/Los_Angeles"), ZoneInfo("Asia/Kolkata")
FLASH, PRO, LITE = "gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite"
RPM_FREE = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
RPM_T1 = "GenerateRequestsPerMinutePerProjectPerModel-Tier1"
TPM_T1 = "GenerateContentInputTokensPerModelPerMinute-Tier1"
RPD_T1 = "GenerateRequestsPerDayPerProjectPerModel-Tier1"


@dataclass
class Subject:
    limiter: Limiter
    minute: int  # the limiter's clock minute (epoch seconds // 60) while the test runs

    def recorded(self) -> list[Denials]:
        """Every denial the limiter holds, taken out of it, sorted."""
        claims = self.limiter.claim_denials(secrets.token_hex(8))
        self.limiter.release_denials(claims)
        found = [denial for claim in claims for denial in claim.denials] + self.limiter.take_local_denials()
        return sorted(found)


@pytest.fixture(params=["in_process", "redis"])
def subject(request) -> Iterator[Subject]:
    if request.param == "in_process":
        with time_machine.travel(FROZEN, tick=False):
            yield Subject(InProcessLimiter(), int(FROZEN.timestamp()) // 60)
        return
    url = request.getfixturevalue("redis_url")
    limiter = RedisLimiter(url, timeout=PATIENT)
    yield Subject(limiter, quiet_moment(redis.Redis.from_url(url)) // 60)
    assert limiter.fallbacks == 0


def rpm(limit: int) -> Limit:
    return Limit("RPM", MINUTE, limit, 1, counter="RPM:m")


def tpm(limit: int, tokens: int) -> Limit:
    return Limit("TPM", MINUTE, limit, tokens, counter="TPM:m")


# --- the limiter -------------------------------------------------------------------------------------------------


def test_each_refused_check_is_counted_under_its_first_exceeded_limit(subject: Subject):
    limiter, scope = subject.limiter, f"test-{secrets.token_hex(4)}"
    assert [limiter.check(scope, [rpm(2), tpm(1000, 400)], model="m1").allowed for _ in range(3)] == [
        True,
        True,
        False,  # RPM
    ]
    assert not limiter.check(scope, [tpm(1000, 300), rpm(2)], model="m1").allowed  # both exceeded: TPM comes first
    assert not limiter.check(scope, [rpm(2), tpm(1000, 300)], model="m2").allowed  # RPM, recorded for m2
    assert not limiter.check(scope, [rpm(2)], model="m1").allowed
    other = Limit("Other", MINUTE, 5, 1, counter="Other:m")
    assert not limiter.check(scope, [rpm(100), other, tpm(1000, 900)], model="m2").allowed  # the last limit: TPM
    assert not limiter.check(scope, [rpm(100), tpm(1000, 900), other], model="").allowed  # no model named
    limiter.peek(scope, [rpm(2), tpm(1000, 5000)])  # would be refused: a peek records nothing
    assert limiter.check(f"{scope}-other", [rpm(2)], model="m1").allowed  # admitted: nothing recorded

    assert subject.recorded() == [
        Denials(scope, "", "TPM", subject.minute, 1),
        Denials(scope, "m1", "RPM", subject.minute, 2),
        Denials(scope, "m1", "TPM", subject.minute, 1),
        Denials(scope, "m2", "RPM", subject.minute, 1),
        Denials(scope, "m2", "TPM", subject.minute, 1),
    ]
    assert subject.recorded() == []  # taken: each denial once


def test_denials_are_counted_per_minute_in_process():
    limiter, scope = InProcessLimiter(), "p1"
    minute = int(FROZEN.timestamp()) // 60
    with time_machine.travel(FROZEN, tick=False) as clock:
        limiter.check(scope, [rpm(1)], model="m")
        limiter.check(scope, [rpm(1)], model="m")
        clock.shift(30)  # the next minute, 30 s after the first denial
        assert not limiter.local_denials_due()
        for _ in range(3):
            limiter.check(scope, [rpm(0)], model="m")
        clock.shift(LOCAL_DENIALS_INTERVAL - 30)
        assert limiter.local_denials_due()
        assert sorted(limiter.take_local_denials()) == [
            Denials(scope, "m", "RPM", minute, 1),
            Denials(scope, "m", "RPM", minute + 1, 3),
        ]
        assert not limiter.local_denials_due()
        limiter.restore_local_denials([Denials(scope, "m", "RPM", minute, 1)])
        limiter.check(scope, [rpm(0)], model="m")
        assert sorted(limiter.take_local_denials()) == [
            Denials(scope, "m", "RPM", minute, 1),
            Denials(scope, "m", "RPM", minute + 1, 1),
        ]


def test_redis_keeps_a_scopes_denials_in_one_hash_under_its_hash_tag(redis_url: str):
    client = redis.Redis.from_url(redis_url)
    limiter = RedisLimiter(redis_url, timeout=PATIENT)
    minute = quiet_moment(client) // 60
    day = Limit("RPD-X", PACIFIC_DAY, 0, 1, counter="RPD-X:gemini-2.5-flash")
    limiter.check("p42", [day], model="gemini-2.5-flash")
    limiter.check("p42", [day], model="gemini-2.5-flash")

    assert client.hgetall("dn:{p42}") == {f"{minute}|gemini-2.5-flash|RPD-X".encode(): b"2"}
    assert DENIAL_TTL_SECONDS - 5 <= client.ttl("dn:{p42}") <= DENIAL_TTL_SECONDS

    claims = limiter.claim_denials("c1")
    assert claims == [DenialClaim("p42", "c1", [Denials("p42", "gemini-2.5-flash", "RPD-X", minute, 2)])]
    assert client.exists("dn:{p42}") == 0
    assert client.hget("dn:{p42}:claim", "#claim") == b"c1"
    limiter.release_denials([DenialClaim("p42", "other", [])])  # not that claim: kept
    assert client.exists("dn:{p42}:claim") == 1
    limiter.release_denials(claims)
    assert client.exists("dn:{p42}:claim") == 0
    assert limiter.fallbacks == 0


def test_the_fallback_counts_denials_in_this_process(caplog):
    limiter = RedisLimiter("redis://127.0.0.1:1/0", timeout=0.05)  # nothing listens on port 1
    with time_machine.travel(FROZEN, tick=False):
        assert not limiter.check("p7", [rpm(0)], model="m").allowed
        assert limiter.fallbacks == 1
        with pytest.raises(RedisError):
            limiter.claim_denials("c1")
        assert limiter.take_local_denials() == [Denials("p7", "m", "RPM", int(FROZEN.timestamp()) // 60, 1)]


# --- admission and the flush job ---------------------------------------------------------------------------------


@pytest.fixture(params=["in_process", "redis"])
def backend(request, settings) -> Iterator[Limiter]:
    """The limiter get_limiter() gives: in-process on a clock frozen early in a minute, or Redis at a quiet moment."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        limiter = limiter_registry._limiters[url] = RedisLimiter(url, timeout=PATIENT)
        quiet_moment(redis.Redis.from_url(url))
        yield limiter
        assert get_limiter() is limiter
        assert limiter.fallbacks == 0
        return
    settings.REDIS_URL = ""
    with time_machine.travel(FROZEN, tick=False):
        yield get_limiter()


def check(raw_key: str, model: str = FLASH, kind: str = "generate", tokens: int = 500) -> dict:
    return admission.check(raw_key=raw_key, model_id=model, kind=kind, estimated_input_tokens=tokens)


def rows() -> list[tuple]:
    return sorted(
        QuotaDenial.objects.values_list("granularity", "bucket_start", "project_id", "model_id", "quota_id", "count")
    )


def test_quota_check_records_its_denials_and_flush_writes_them_once(backend: Limiter, free_key):
    key, raw = free_key  # free tier gemini-2.5-flash: 10 requests a minute
    assert [check(raw)["allowed"] for _ in range(12)] == [True] * 10 + [False] * 2
    assert check(raw, kind="count_tokens")["allowed"]  # never limited, never counted, never recorded
    minute = datetime.fromtimestamp(time.time() // 60 * 60, UTC)  # the check's minute (both clocks agree here)

    run = flush(backend)
    assert (run.requests, run.already_written, run.dropped) == (2, 0, 0)
    hour, day = minute.replace(minute=0), minute.replace(hour=0, minute=0)
    expected = sorted(
        (grain, start, key.project_id, FLASH, RPM_FREE, 2)
        for grain, start in (("minute", minute), ("hour", hour), ("day", day))
    )
    assert rows() == expected
    assert flush(backend).requests == 0  # nothing left: run twice, written once
    assert rows() == expected

    check(raw)  # one more in the same minute: added to the same rows
    assert flush(backend).requests == 1
    assert rows() == [(*row[:5], 3) for row in expected]


def test_a_claim_left_by_a_job_that_died_before_its_commit_is_written_by_the_next(redis_url, free_key):
    limiter = limiter_registry._limiters[redis_url] = RedisLimiter(redis_url, timeout=PATIENT)
    quiet_moment(redis.Redis.from_url(redis_url))
    _, raw = free_key
    for _ in range(13):
        check(raw)
    left = limiter.claim_denials("died-before-commit")  # a run that claimed, then died
    assert [claim.claim_id for claim in left] == ["died-before-commit"]
    check(raw)  # a denial after that claim: a new hash, for the run after

    first = flush(limiter)
    assert (first.claims, first.already_written, first.requests) == (1, 0, 3)
    assert sorted(WrittenClaim.objects.values_list("claim_id", flat=True)) == ["died-before-commit"]
    second = flush(limiter)
    assert (second.claims, second.already_written, second.requests) == (1, 0, 1)
    assert flush(limiter).requests == 0
    assert [row[5] for row in rows()] == [4, 4, 4]  # minute, hour, day: 3 + 1, each once


class DiesAfterCommit(RedisLimiter):
    """A job process that dies (here: Redis goes away) between its commit and deleting its claims from Redis."""

    def release_denials(self, claims: list[DenialClaim]) -> None:
        raise redis.ConnectionError("the job died before releasing its claims")


def test_a_claim_written_by_a_job_that_died_before_releasing_it_is_not_written_again(redis_url, free_key):
    limiter = limiter_registry._limiters[redis_url] = RedisLimiter(redis_url, timeout=PATIENT)
    quiet_moment(redis.Redis.from_url(redis_url))
    _, raw = free_key
    for _ in range(12):
        check(raw)
    with pytest.raises(redis.ConnectionError):
        flush(DiesAfterCommit(redis_url, timeout=PATIENT))
    assert [row[5] for row in rows()] == [2, 2, 2]  # committed

    run = flush(limiter)  # finds the claim again: already written, so only deleted
    assert (run.claims, run.already_written, run.requests) == (0, 1, 0)
    assert [row[5] for row in rows()] == [2, 2, 2]
    assert redis.Redis.from_url(redis_url).keys("dn:*") == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_runners_at_once_write_each_denial_once(redis_url):
    _, raw = make_key(make_project(make_user()))
    limiter_registry._limiters[redis_url] = RedisLimiter(redis_url, timeout=PATIENT)
    quiet_moment(redis.Redis.from_url(redis_url))
    for _ in range(15):
        check(raw)  # free tier: 10 admitted, 5 refused

    # Both claim: one renames the denials, the other finds that claim (or nothing, if already released). Whoever
    # writes second finds the claim written, or fails on its key and rolls back.
    results, errors = at_once(lambda _: flush(RedisLimiter(redis_url, timeout=PATIENT)), 2)
    assert len(results) + len(errors) == 2
    assert all(isinstance(error, IntegrityError) for error in errors)
    assert sum(run.requests for run in results) == 5
    assert flush(get_limiter()).requests == 0
    assert [row[5] for row in rows()] == [5, 5, 5]
    assert redis.Redis.from_url(redis_url).keys("dn:*") == []


def test_in_process_denials_are_written_by_the_checking_process_once_due(settings, free_key):
    settings.REDIS_URL = ""
    key, raw = free_key
    with time_machine.travel(FROZEN, tick=False) as clock:
        for _ in range(11):
            check(raw)
        assert rows() == []
        clock.shift(LOCAL_DENIALS_INTERVAL)
        assert check(raw)["allowed"]  # a new minute; the denial has waited long enough: written now
    minute = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    assert rows() == [
        ("day", datetime(2026, 1, 15, tzinfo=UTC), key.project_id, FLASH, RPM_FREE, 1),
        ("hour", datetime(2026, 1, 15, 12, tzinfo=UTC), key.project_id, FLASH, RPM_FREE, 1),
        ("minute", minute, key.project_id, FLASH, RPM_FREE, 1),
    ]
    assert get_limiter().take_local_denials() == []


def test_denials_of_scopes_that_are_not_projects_are_dropped(db):
    limiter = InProcessLimiter()
    limiter.check("someone-else", [rpm(0)], model="m")
    run = flush(limiter)
    assert (run.requests, run.dropped) == (0, 1)
    assert rows() == []


def test_the_job_runs_the_command_under_its_lock(settings, free_key):
    settings.REDIS_URL = ""
    _, raw = free_key
    with time_machine.travel(FROZEN, tick=False):
        for _ in range(12):
            check(raw)
        out = io.StringIO()
        release, thread = hold_lock_in_another_thread("flush_denials")
        try:
            call_command("flush_denials", stdout=out)
        finally:
            release.set()
            thread.join()
        assert out.getvalue() == "flush_denials is already running; nothing done.\n"
        call_command("flush_denials", stdout=out)
        assert out.getvalue().splitlines()[1] == (
            "Wrote 2 denied request(s) from 0 claim(s); 0 claim(s) written before; 0 dropped (not a project's)."
        )
        check(raw)
        usage.jobs.flush_denials.call_local()
    assert [row[5] for row in rows()] == [3, 3, 3]


# --- reading them ------------------------------------------------------------------------------------------------


def test_denials_by_bucket_sums_the_minutes_of_each_local_bucket(db):
    project = make_project(make_user())
    other = make_project(make_user())
    at = datetime(2026, 11, 5, 10, 29, tzinfo=UTC)  # 15:59 in India
    record_past(project, FLASH, RPM_T1, at, 4)
    record_past(project, FLASH, RPM_T1, at + timedelta(minutes=1), 1)  # 16:00 in India: the next hour
    record_past(project, FLASH, TPM_T1, at + timedelta(minutes=1), 2)
    record_past(project, FLASH, TPM_T1, at + timedelta(minutes=1, seconds=59), 3)  # the same minute
    record_past(project, PRO, RPD_T1, at + timedelta(minutes=61), 6)  # 17:00: outside the window
    record_past(other, FLASH, RPM_T1, at, 9)

    window = Window.hours(datetime(2026, 11, 5, 10, 40, tzinfo=UTC), 2, INDIA)  # 15:00 and 16:00 in India
    assert denials_by_bucket(project.pk, window) == {
        (0, FLASH, RPM_T1): 4,
        (1, FLASH, RPM_T1): 1,
        (1, FLASH, TPM_T1): 5,
    }
    assert denials_by_bucket(project.pk, window, models=[PRO]) == {}
    days = Window.days(date(2026, 11, 4), date(2026, 11, 6), INDIA)
    assert denials_by_bucket(project.pk, days) == {(1, FLASH, RPM_T1): 5, (1, FLASH, TPM_T1): 5, (1, PRO, RPD_T1): 6}
    assert QuotaDenial.objects.filter(granularity="minute", quota_id=TPM_T1).get().count == 5


def test_denials_by_bucket_takes_a_constant_number_of_statements(db, django_assert_num_queries):
    project = make_project(make_user())
    record_past(project, FLASH, RPM_T1, datetime(2026, 11, 5, 10, 29, tzinfo=UTC), 4)
    end = datetime(2026, 11, 5, 10, 40, tzinfo=UTC)
    for window in (
        Window.minutes(end, 60, LA),
        Window.hours(end, 24, INDIA),
        Window.days(date(2026, 8, 1), date(2026, 11, 5), LA),
    ):
        with django_assert_num_queries(1):
            assert sum(denials_by_bucket(project.pk, window).values()) == 4


def test_record_past_wants_a_moment_and_a_count(db):
    project = make_project(make_user())
    with pytest.raises(ValueError, match="aware"):
        record_past(project, FLASH, RPM_T1, datetime(2026, 11, 5, 10, 29), 1)  # naive: refused
    with pytest.raises(ValueError, match="at least 1"):
        record_past(project, FLASH, RPM_T1, datetime(2026, 11, 5, 10, 29, tzinfo=UTC), 0)


# --- the Limits tab -----------------------------------------------------------------------------------------------

# Wednesday 4 November 2026, 19:30:20 UTC = 11:30:20 in Los Angeles (PST since 1 November).
NOW = datetime(2026, 11, 4, 19, 30, 20, tzinfo=UTC)


def event(key, n: int, occurred_at: datetime, *, model: str = FLASH, tokens: int = 1000, **fields) -> dict:
    return {
        "event_id": f"lim-{key.pk}-{n}",
        "key_id": str(key.pk),
        "model": model,
        "kind": "generate",
        "status_code": 200,
        "input_tokens": tokens,
        "output_tokens": 10,
        "occurred_at": occurred_at.isoformat(),
        **fields,
    }


def usage_history(keys) -> None:
    """Reported usage of a project with two keys: Pacific days 2, 3 and 4 November, and 1 November before them."""
    a, b = keys
    nov3 = datetime(2026, 11, 3, 18, 0, tzinfo=UTC)  # 10:00 in Los Angeles
    events = [event(a, n, nov3 + timedelta(seconds=n)) for n in range(3)]  # one minute: 3 from key a ...
    events += [event(b, n, nov3 + timedelta(seconds=30 + n)) for n in range(2)]  # ... and 2 from key b: 5
    events += [event(a, 10 + n, nov3 + timedelta(minutes=7), tokens=3000) for n in range(4)]  # 12,000 tokens
    events += [event(a, 20, nov3 + timedelta(minutes=8), kind="count_tokens", tokens=99_000)]  # never counted
    events += [event(b, 30 + n, datetime(2026, 11, 2, 20, tzinfo=UTC), status_code=429) for n in range(2)]
    events += [event(a, 40, datetime(2026, 11, 4, 19, 0, tzinfo=UTC), model=PRO, tokens=500)]
    # 1 November in Los Angeles (still PDT): before the window, so neither peak counts it.
    events += [event(a, 50 + n, datetime(2026, 11, 1, 20, 0, tzinfo=UTC)) for n in range(20)]
    report = ingest(events, now=NOW)
    assert (report.accepted, report.rejected) == (len(events), [])


def quiet_row(model_id: str, name: str, limits, upper, live_rpd) -> ModelLimits:
    """A Tier 1 row of a model without usage, denials or checks."""
    return ModelLimits(
        model_id, name, Tier.TIER_1, *limits, Tier.TIER_2, *upper,
        {"rpm": RPM_T1, "tpm": TPM_T1, "rpd": RPD_T1},
        0, 0, 0, 0, 0, live_rpd, 40, 44_980, {},
    )  # fmt: skip


def test_limits_for_a_tier_1_project(db, settings, django_assert_num_queries):
    settings.REDIS_URL = ""
    project = make_billed_project(make_user(), since=datetime(2026, 10, 1, tzinfo=UTC))
    keys = [make_key(project)[0] for _ in range(2)]
    raw = make_key(project)[1]
    with time_machine.travel(NOW, tick=False):
        usage_history(keys)
        assert [check(raw, tokens=700)["allowed"] for _ in range(3)] == [True] * 3
        assert check(raw, model=PRO, tokens=100)["allowed"]
        assert check(raw, kind="count_tokens", tokens=50_000)["allowed"]
        record_past(project, FLASH, RPD_T1, datetime(2026, 11, 3, 23, 59, tzinfo=UTC), 7)
        record_past(project, FLASH, TPM_T1, datetime(2026, 11, 4, 19, 0, tzinfo=UTC), 2)
        record_past(project, FLASH, RPM_FREE, datetime(2026, 11, 2, 9, 0, tzinfo=UTC), 1)  # when it was free
        record_past(project, PRO, RPM_T1, datetime(2026, 11, 1, 12, 0, tzinfo=UTC), 5)  # 1 November: outside
        window = Window.days(date(2026, 11, 2), date(2026, 11, 4), LA)
        catalog.get_catalog()
        with django_assert_num_queries(4):
            found = limits_for_project(project, window, now=NOW)

    ids = {"rpm": RPM_T1, "tpm": TPM_T1, "rpd": RPD_T1}
    assert found == [
        quiet_row("gemini-2.0-flash", "Gemini 2.0 Flash", (2_000, 4_000_000, None), (10_000, 10_000_000, None), None),
        quiet_row(
            "gemini-2.0-flash-lite", "Gemini 2.0 Flash-Lite", (4_000, 4_000_000, None), (20_000, 10_000_000, None), None
        ),
        ModelLimits(
            FLASH, "Gemini 2.5 Flash", Tier.TIER_1, 1_000, 1_000_000, 10_000, Tier.TIER_2, 2_000, 3_000_000, 100_000,
            ids,
            peak_rpm=5, peak_tpm=12_000, peak_rpd=9,  # 3 November: 5 + 4 requests (count_tokens is not one)
            live_rpm=3, live_tpm=2_100, live_rpd=3, rpm_resets_in=40, rpd_resets_in=44_980,
            denials={RPD_T1: 7, TPM_T1: 2, RPM_FREE: 1},
        ),
        quiet_row(LITE, "Gemini 2.5 Flash-Lite", (4_000, 4_000_000, None), (10_000, 10_000_000, None), None),
        ModelLimits(
            PRO, "Gemini 2.5 Pro", Tier.TIER_1, 150, 2_000_000, 10_000, Tier.TIER_2, 1_000, 5_000_000, 50_000,
            ids,
            peak_rpm=1, peak_tpm=500, peak_rpd=1,
            live_rpm=1, live_tpm=100, live_rpd=1, rpm_resets_in=40, rpd_resets_in=44_980,
            denials={},
        ),
        quiet_row(
            "gemini-embedding-001", "Gemini Embedding", (3_000, 1_000_000, None), (5_000, 5_000_000, None), None
        ),
    ]  # fmt: skip

    # One minute (3 November, 10:07 in Los Angeles): its own minute peaks, but the Pacific day it is in counts whole,
    # as RPD counts it; the denials of that day fall outside the minute.
    minute = Window.minutes(datetime(2026, 11, 3, 18, 7, tzinfo=UTC), 1, ZoneInfo("UTC"))
    flash = next(row for row in limits_for_project(project, minute, now=NOW) if row.model_id == FLASH)
    assert (flash.peak_rpm, flash.peak_tpm, flash.peak_rpd, flash.denials) == (4, 12_000, 9, {})


def test_limits_for_a_free_project(db, settings, free_key):
    settings.REDIS_URL = ""
    CatalogModel.objects.filter(model_id=PRO).update(free_tier_available=False)
    catalog.forget()
    key, raw = free_key
    with time_machine.travel(NOW, tick=False):
        assert [check(raw, tokens=500)["allowed"] for _ in range(11)] == [True] * 10 + [False]
        assert check(raw, model=PRO)["error"]["reason"] == "MODEL_NOT_AVAILABLE_ON_TIER"  # no limit, no denial
        assert flush(get_limiter()).requests == 1
        found = limits_for_project(key.project, Window.hours(NOW, 24, LA), now=NOW)

    assert [row.model_id for row in found] == [
        "gemini-2.0-flash",
        "gemini-2.0-flash-lite",
        FLASH,
        LITE,
        "gemini-embedding-001",
    ]
    assert found[2] == ModelLimits(
        FLASH, "Gemini 2.5 Flash", Tier.FREE, 10, 250_000, 250, Tier.TIER_1, 1_000, 1_000_000, 10_000,
        {
            "rpm": RPM_FREE,
            "tpm": "GenerateContentInputTokensPerModelPerMinute-FreeTier",
            "rpd": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
        },
        peak_rpm=0, peak_tpm=0, peak_rpd=0,
        live_rpm=10, live_tpm=5_000, live_rpd=10, rpm_resets_in=40, rpd_resets_in=44_980,
        denials={RPM_FREE: 1},
    )  # fmt: skip
    assert [(row.rpm, row.tpm, row.rpd, row.live_rpm, row.live_rpd) for row in found[3:]] == [
        (15, 250_000, 1_000, 0, 0),
        (100, 30_000, 1_000, 0, 0),
    ]


def test_live_usage_through_redis(redis_url, paid_key):
    limiter_registry._limiters[redis_url] = RedisLimiter(redis_url, timeout=PATIENT)
    quiet_moment(redis.Redis.from_url(redis_url))
    key, raw = paid_key
    for tokens in (100, 200, 300):
        assert check(raw, tokens=tokens)["allowed"]
    now = datetime.now(UTC)
    found = limits_for_project(key.project, Window.hours(now, 1, LA), now=now)
    flash = next(row for row in found if row.model_id == FLASH)
    lite = next(row for row in found if row.model_id == LITE)
    assert (flash.live_rpm, flash.live_tpm, flash.live_rpd) == (3, 600, 3)
    assert (lite.live_rpm, lite.live_tpm, lite.live_rpd) == (0, 0, None)  # Tier 1 Flash-Lite: no RPD limit


def test_limits_take_a_constant_number_of_statements(db, settings, django_assert_num_queries):
    settings.REDIS_URL = ""
    project = make_billed_project(make_user(), since=datetime(2026, 10, 1, tzinfo=UTC))
    with time_machine.travel(NOW, tick=False):
        usage_history([make_key(project)[0], make_key(project)[0]])
        catalog.get_catalog()
        for window in (
            Window.minutes(NOW, 60, LA),
            Window.hours(NOW, 24, INDIA),
            Window.days(date(2026, 8, 7), date(2026, 11, 4), INDIA),  # 90 days
        ):
            with django_assert_num_queries(4):
                assert len(limits_for_project(project, window, now=NOW)) == 6
