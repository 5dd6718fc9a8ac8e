import os
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from studio.models import Tier
from tests.conftest import skip_or_fail
from tests.factories import make_billed_project, make_key, make_project, make_user
from usage import catalog


@pytest.fixture(autouse=True)
def _fresh_catalog():
    catalog.forget()
    yield
    catalog.forget()


@pytest.fixture
def paid_key(db):
    """(key, raw secret) of a Tier 1 project, billed to a billing account since a day ago (its history)."""
    project = make_billed_project(make_user("fleet-user@example.com"), name="Paid")
    assert project.tier == Tier.TIER_1
    return make_key(project, name="Paid key")


@pytest.fixture
def free_key(db):
    user = make_user("free-user@example.com")
    return make_key(make_project(user, name="Free"), name="Free key")


@pytest.fixture
def event():
    """event(**overrides): a valid usage event for `key`."""
    counter = iter(range(1, 10**9))

    def build(key, **overrides):
        base = {
            "event_id": f"evt-{next(counter)}",
            "key_id": str(key.pk),
            "model": "gemini-2.5-flash",
            "kind": "generate",
            "source": "api",
            "status_code": 200,
            "input_tokens": 1200,
            "output_tokens": 300,
            "cached_tokens": 0,
            "cache_token_hours": "0",
            "occurred_at": (timezone.now() - timedelta(minutes=1)).isoformat(),
        }
        return {**base, **overrides}

    return build


@pytest.fixture(autouse=True)
def _fresh_limiter(settings):
    """Each test starts with empty counters: a fresh in-process limiter, or a flushed Redis test
    database (db TEST_REDIS_DB, default 15, never the one the URL names) when REDIS_URL is set."""
    import redis

    from usage import api, limiter

    limiter._limiters.clear()
    api._valid_tokens.clear()
    if settings.REDIS_URL:
        # TEST_REDIS_DB lets two test runs on one machine keep apart (default 15).
        settings.REDIS_URL = settings.REDIS_URL.rsplit("/", 1)[0] + "/" + os.environ.get("TEST_REDIS_DB", "15")
        redis.Redis.from_url(settings.REDIS_URL).flushdb()
    yield
    limiter._limiters.clear()


@pytest.fixture
def redis_url(settings) -> str:
    """The Redis of REDIS_URL (its test database); the test skips without one, or fails where CI requires it."""
    if not settings.REDIS_URL:
        skip_or_fail("needs Redis: set REDIS_URL", required_by="REQUIRE_POSTGRES")
    return settings.REDIS_URL


@pytest.fixture
def within_one_minute(redis_url) -> None:
    """Start the test at least 3 s before a minute ends on Redis's clock (Redis counts minute windows by its own
    TIME, which time-machine cannot stop), so that checks whose counts the test compares fall in the same minute."""
    import redis

    seconds, micros = redis.Redis.from_url(redis_url).time()
    if seconds % 60 >= 57:
        time.sleep(60 - seconds % 60 - micros / 1e6 + 0.02)
