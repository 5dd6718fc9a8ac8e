"""Ingestion retries what PostgreSQL says can succeed on a second try (by SQLSTATE), nothing else.

Real faults: a second connection holds the project's pending-charge rows (the rows a batch of a billed project
updates; its rollups it only appends, usage.fold) locked while a batch is written. With
`lock_timeout` the write fails with 55P03 (lock not available), which is retried; with
`statement_timeout` it fails with 57014 (query canceled), which is not. The retry warning itself
releases the lock, so the retry's outcome does not depend on timing. Attempts are counted by the
identity sequence of the events table: every attempt draws one id per event, even when rolled back.
"""

import logging
import re
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal as D

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from tests.factories import make_billed_project, make_key, make_user
from tests.usage.test_ingest import totals
from usage.ingest import STORE_ATTEMPTS, ingest
from usage.models import UsageEvent, UsageRollup

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


class Retries(logging.Handler):
    """Collects ingestion's warnings; the first one may end the other transaction (`on_first`)."""

    def __init__(self, on_first=None):
        super().__init__(logging.WARNING)
        self.records, self.on_first = [], on_first

    def emit(self, record):
        self.records.append(record)
        if len(self.records) == 1 and self.on_first:
            self.on_first()


@contextmanager
def watching(handler):
    logger = logging.getLogger("usage.ingest")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@contextmanager
def session(setting: str, value: str):
    with connection.cursor() as cursor:
        cursor.execute(f"SET {setting} = '{value}'")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"RESET {setting}")


@pytest.fixture
def setup(event):
    """(key, batch of 3 new events, the blocker): one event already stored and rolled up; the blocker is another
    connection that holds that project's pending-charge rows (its input and output lines) locked until released."""
    key = make_key(make_billed_project(make_user("retries@example.com")))[0]
    now = timezone.now()
    moment = (now - timedelta(minutes=1)).isoformat()
    assert ingest([event(key, event_id="first", occurred_at=moment)], now=now).accepted == 1
    batch = [event(key, event_id=f"next-{i}", occurred_at=moment) for i in range(3)]
    blocker = connection.copy()
    blocker.set_autocommit(False)
    with blocker.cursor() as cursor:
        cursor.execute("SELECT id FROM usage_pendingcharge WHERE project_id = %s FOR UPDATE", [key.project_id])
        assert len(cursor.fetchall()) == 2
    yield batch, blocker, now
    blocker.rollback()
    blocker.close()


def ids_drawn() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT last_value FROM pg_sequences WHERE sequencename = 'usage_usageevent_id_seq'")
        return cursor.fetchone()[0]


def test_a_lock_timeout_is_retried_and_the_batch_then_counts_exactly_once(setup):
    batch, blocker, now = setup
    before = ids_drawn()

    with session("lock_timeout", "100ms"), watching(Retries(on_first=blocker.commit)) as retries:
        report = ingest(batch, now=now)

    assert (report.accepted, report.duplicates, report.rejected) == (3, 0, [])
    assert ids_drawn() - before == 6  # two attempts of three events
    assert UsageEvent.objects.count() == 4
    assert totals() == {g: (4, 0, 4800, 1200, D("0.004440000")) for g in ("minute", "hour", "day")}
    [retry] = retries.records
    assert (retry.levelname, retry.sqlstate, retry.attempt) == ("WARNING", "55P03", 1)
    assert re.fullmatch(
        r"usage ingestion: a batch of 3 events failed with SQLSTATE 55P03 \(lock not available\): "
        r"canceling statement due to lock timeout "
        r'CONTEXT: while locking tuple \(\d+,\d+\) in relation "usage_pendingcharge"; '
        rf"attempt 1 of {STORE_ATTEMPTS}, retrying in \d+ ms",
        retry.getMessage(),
    )


def test_retries_are_bounded_and_the_last_error_is_raised(setup):
    batch, _, now = setup
    before = ids_drawn()
    rollups = sorted(UsageRollup.objects.values_list("granularity", "requests"))

    with session("lock_timeout", "50ms"), watching(Retries()) as retries, pytest.raises(OperationalError) as raised:
        ingest(batch, now=now)

    assert raised.value.__cause__.sqlstate == "55P03"
    assert ids_drawn() - before == 3 * STORE_ATTEMPTS
    assert [(r.sqlstate, r.attempt) for r in retries.records] == [("55P03", n) for n in range(1, STORE_ATTEMPTS)]
    assert UsageEvent.objects.count() == 1
    assert sorted(UsageRollup.objects.values_list("granularity", "requests")) == rollups


def test_an_error_that_is_not_worth_retrying_is_raised_after_one_attempt(setup):
    batch, _, now = setup
    before = ids_drawn()

    with (
        session("statement_timeout", "500ms"),
        watching(Retries()) as retries,
        pytest.raises(OperationalError) as raised,
    ):
        ingest(batch, now=now)

    assert (raised.value.__cause__.sqlstate, raised.value.__cause__.diag.message_primary) == (
        "57014",
        "canceling statement due to statement timeout",
    )
    assert ids_drawn() - before == 3  # one attempt
    assert retries.records == []
    assert UsageEvent.objects.count() == 1
