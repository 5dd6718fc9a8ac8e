"""Rolling usage up on PostgreSQL (usage.fold): ingestion appends what each batch adds to a minute (RollupDelta), and a
fold moves it into the minute, hour and day rollups and the hourly peaks, exactly once, one fold at a time, at most
every ROLLUP_FOLD_SECONDS per process; the charge job folds what is left after a burst."""

import logging
import math
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection, connections

import usage.fold
from tests.concurrency import Background, at_once
from tests.factories import make_key, make_project, make_user
from tests.usage.test_peaks import FLASH, NOW, at, request, stored_peaks
from usage.fold import LOCK, fold
from usage.ingest import ingest
from usage.models import RollupDelta, UsageRollup

pytestmark = pytest.mark.postgres


def rolled_up() -> list[tuple[str, str, int, int, int]]:
    return sorted(
        (granularity, f"{start:%m-%d %H:%M}", key_id, requests, tokens)
        for granularity, start, key_id, requests, tokens in UsageRollup.objects.values_list(
            "granularity", "bucket_start", "api_key_id", "requests", "input_tokens"
        )
    )


@pytest.fixture
def keys(db):
    project = make_project(make_user())
    return make_key(project)[0], make_key(project)[0]


@pytest.fixture
def every(settings):
    """ROLLUP_FOLD_SECONDS, and whether this process folded just now (else: never)."""

    def set_interval(seconds, *, just_folded=False):
        settings.ROLLUP_FOLD_SECONDS = seconds
        usage.fold._last_fold = time.monotonic() if just_folded else -math.inf

    yield set_interval
    usage.fold._last_fold = usage.fold._last_vacuum = -math.inf


def test_a_batch_is_appended_as_minute_sums_and_a_fold_rolls_them_up_once(keys, every):
    a, b = keys
    every(3600)
    ingest([request(a, "a1", at(10, 7)), request(a, "a2", at(10, 7, 30)), request(b, "b1", at(10, 8))], now=NOW)
    # This process had not folded yet: the batch was rolled up as it was stored.
    assert RollupDelta.objects.count() == 0
    ingest([request(a, "a3", at(10, 7, 40), tokens=500), request(b, "b2", at(11, 1))], now=NOW)

    # Folded a moment ago: this batch waits, as one sum per key and minute.
    assert sorted(RollupDelta.objects.values_list("api_key_id", "bucket_start", "requests", "input_tokens")) == [
        (a.pk, at(10, 7), 1, 500),
        (b.pk, at(11, 1), 1, 1000),
    ]
    assert ("minute", "11-03 10:07", a.pk, 2, 2000) in rolled_up()

    assert fold() == 2
    assert fold() == 0  # nothing twice

    assert RollupDelta.objects.count() == 0
    assert rolled_up() == [
        ("day", "11-03 00:00", a.pk, 3, 2500),
        ("day", "11-03 00:00", b.pk, 2, 2000),
        ("hour", "11-03 10:00", a.pk, 3, 2500),
        ("hour", "11-03 10:00", b.pk, 1, 1000),
        ("hour", "11-03 11:00", b.pk, 1, 1000),
        ("minute", "11-03 10:07", a.pk, 3, 2500),
        ("minute", "11-03 10:08", b.pk, 1, 1000),
        ("minute", "11-03 11:01", b.pk, 1, 1000),
    ]
    assert stored_peaks() == [(FLASH, "11-03 10:00", 3, 2500), (FLASH, "11-03 11:00", 1, 1000)]


def test_one_fold_of_many_batches_sums_each_minute_then_each_hour_and_day_from_them(keys, every):
    """A fold first sums the deltas of all its batches to one row per minute, then the hours and days from those
    minutes: every granularity must still add up to exactly what the events carried."""
    a, b = keys
    every(3600, just_folded=True)  # no batch folds: the fold below takes all three at once
    ingest([request(a, "a1", at(10, 7)), request(a, "a2", at(10, 59, 59)), request(b, "b1", at(10, 7))], now=NOW)
    ingest([request(a, "a3", at(10, 7, 30), tokens=500), request(a, "a4", at(23, 0, day=2))], now=NOW)
    ingest([request(a, "a5", at(10, 7, 59), tokens=250), request(b, "b2", at(11, 0), tokens=2000)], now=NOW)
    assert RollupDelta.objects.count() == 7  # one per batch × key × minute

    assert fold() == 7

    assert rolled_up() == [
        ("day", "11-02 00:00", a.pk, 1, 1000),
        ("day", "11-03 00:00", a.pk, 4, 2750),
        ("day", "11-03 00:00", b.pk, 2, 3000),
        ("hour", "11-02 23:00", a.pk, 1, 1000),
        ("hour", "11-03 10:00", a.pk, 4, 2750),
        ("hour", "11-03 10:00", b.pk, 1, 1000),
        ("hour", "11-03 11:00", b.pk, 1, 2000),
        ("minute", "11-02 23:00", a.pk, 1, 1000),
        ("minute", "11-03 10:07", a.pk, 3, 1750),
        ("minute", "11-03 10:07", b.pk, 1, 1000),
        ("minute", "11-03 10:59", a.pk, 1, 1000),
        ("minute", "11-03 11:00", b.pk, 1, 2000),
    ]


def test_a_replayed_batch_appends_nothing(keys, every):
    a, _ = keys
    every(3600)
    batch = [request(a, "a1", at(10, 7)), request(a, "a2", at(10, 9))]
    ingest(batch, now=NOW)

    report = ingest(batch, now=NOW)

    assert (report.accepted, report.duplicates) == (0, 2)
    assert RollupDelta.objects.count() == 0
    assert rolled_up() == [
        ("day", "11-03 00:00", a.pk, 2, 2000),
        ("hour", "11-03 10:00", a.pk, 2, 2000),
        ("minute", "11-03 10:07", a.pk, 1, 1000),
        ("minute", "11-03 10:09", a.pk, 1, 1000),
    ]


def test_the_charge_job_rolls_up_what_the_last_batches_left(keys, every):
    a, _ = keys
    every(3600)
    ingest([request(a, "a1", at(10, 7))], now=NOW)
    ingest([request(a, "a2", at(10, 7)), request(a, "a3", at(10, 7))], now=NOW)
    assert RollupDelta.objects.count() == 1

    out = StringIO()
    call_command("charge_usage", stdout=out)

    assert out.getvalue().splitlines()[0] == "Rolled up 1 row(s) of usage."
    assert RollupDelta.objects.count() == 0
    assert ("minute", "11-03 10:07", a.pk, 3, 3000) in rolled_up()
    assert stored_peaks() == [(FLASH, "11-03 10:00", 3, 3000)]


def test_a_fold_that_fails_leaves_the_batch_stored_and_its_rows_for_the_next(keys, every, caplog):
    a, _ = keys
    every(0)
    with connection.cursor() as cursor:  # a real fault: the rollups are gone (the test's transaction restores them)
        cursor.execute("DROP TABLE usage_usagerollup")

    with caplog.at_level(logging.WARNING, logger="usage.fold"):
        report = ingest([request(a, "a1", at(10, 7))], now=NOW)

    assert (report.accepted, report.rejected) == (1, [])
    assert list(RollupDelta.objects.values_list("api_key_id", "requests")) == [(a.pk, 1)]
    [warning] = [record for record in caplog.records if record.name == "usage.fold"]
    assert warning.getMessage().startswith('usage fold failed (relation "usage_usagerollup" does not exist')


@pytest.mark.django_db(transaction=True)
def test_a_fold_under_way_makes_another_skip_and_the_next_takes_what_it_could_not_see(every):
    """Batch A (key a, 3 requests at 10:07) is stored while another connection holds the fold's lock: A's own fold
    skips, leaving its sums. Batch B (key b, 2 requests at 10:07) is stored and folded after the lock is let go: that
    fold takes both, and the minute's peak is their total, 5, though neither batch alone had it."""
    project = make_project(make_user())
    a, b = make_key(project)[0], make_key(project)[0]
    every(0)
    holder = connections.create_connection("default")
    holder.set_autocommit(False)
    with holder.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [LOCK])

    ingest([request(a, f"a{n}", at(10, 7, n)) for n in range(3)], now=NOW)

    assert RollupDelta.objects.count() == 1
    assert UsageRollup.objects.count() == 0
    holder.rollback()
    holder.close()

    ingest([request(b, f"b{n}", at(10, 7, 30 + n), tokens=600) for n in range(2)], now=NOW)

    assert RollupDelta.objects.count() == 0
    assert ("minute", "11-03 10:07", a.pk, 3, 3000) in rolled_up()
    assert ("minute", "11-03 10:07", b.pk, 2, 1200) in rolled_up()
    assert stored_peaks() == [(FLASH, "11-03 10:00", 5, 4200)]


@pytest.mark.django_db(transaction=True)
def test_a_batch_not_yet_committed_is_folded_once_it_is(every):
    project = make_project(make_user())
    a, b = make_key(project)[0], make_key(project)[0]
    every(3600, just_folded=True)  # no fold on the way out: the test folds
    batch = Background(
        lambda: ingest([request(a, "a1", at(10, 7)), request(a, "a2", at(10, 7))], now=NOW), hold_open=True
    )
    ingest([request(b, "b1", at(10, 7))], now=NOW)

    assert fold() == 1  # b's only: a's is not committed
    batch.finish()
    assert fold() == 1

    assert batch.errors == []
    assert [row for row in rolled_up() if row[0] == "minute"] == [
        ("minute", "11-03 10:07", a.pk, 2, 2000),
        ("minute", "11-03 10:07", b.pk, 1, 1000),
    ]
    assert stored_peaks() == [(FLASH, "11-03 10:00", 3, 3000)]


def waiting_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] == 1


@pytest.mark.django_db(transaction=True)
def test_a_fold_waits_for_one_under_way_and_sees_its_minutes(every):
    """Fold 1 rolls up key a's 3 requests at 10:07 (the hour's peak: 3) and has not committed when key b's 2 requests
    at 10:07 are stored. Fold 2 waits for fold 1, then reads the minute's total with a's rows in it: the peak is 5.
    Were they to run side by side, fold 2 would read b's rows alone (2) and the peak would stay at 3. Two things make
    it wait, each enough: the fold lock, and fold 2's DELETE meeting the rows fold 1 deleted (it scans them all)."""
    project = make_project(make_user())
    a, b = make_key(project)[0], make_key(project)[0]
    every(3600, just_folded=True)  # no fold on the way out: the test folds
    ingest([request(a, f"a{n}", at(10, 7, n)) for n in range(3)], now=NOW)
    first = Background(fold, hold_open=True)
    ingest([request(b, f"b{n}", at(10, 7, 30 + n), tokens=600) for n in range(2)], now=NOW)
    second = Background(fold)
    for _ in range(1000):  # until fold 2 waits for fold 1
        if waiting_for_a_lock() or not second.is_alive():
            break
        time.sleep(0.01)
    waited = waiting_for_a_lock()
    first.finish()
    second.finish()

    assert first.errors + second.errors == []
    assert waited
    assert (first.result, second.result) == (1, 1)
    assert stored_peaks() == [(FLASH, "11-03 10:00", 5, 4200)]


@pytest.mark.django_db(transaction=True)
def test_concurrent_folds_roll_every_row_up_once(every):
    """Each delta once, whichever fold takes it (this holds by the rows' own locks; the fold lock is for the peaks,
    above)."""

    project = make_project(make_user())
    key = make_key(project)[0]
    every(3600, just_folded=True)
    for batch in range(8):
        ingest([request(key, f"e{batch}-{n}", at(10, n % 5)) for n in range(25)], now=NOW)

    results, errors = at_once(lambda index: fold(), 4)

    assert errors == []
    # One took the 40 rows (8 batches × 5 minutes); the others waited for it, then found none.
    assert sorted(results) == [0, 0, 0, 40]
    assert sum(UsageRollup.objects.filter(granularity="day").values_list("requests", flat=True)) == 200
    assert RollupDelta.objects.count() == 0


def vacuums() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'usage_rollupdelta'")
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_the_folding_process_vacuums_the_deltas_table_at_most_every_ten_seconds(every):
    key = make_key(make_project(make_user()))[0]
    every(0)
    usage.fold._last_vacuum = -math.inf
    before = vacuums()

    ingest([request(key, "a1", at(10, 7))], now=NOW)
    assert vacuums() == before + 1
    ingest([request(key, "a2", at(10, 8))], now=NOW)  # folded, not vacuumed again
    assert (vacuums(), RollupDelta.objects.count()) == (before + 1, 0)

    usage.fold._last_vacuum -= usage.fold.VACUUM_EVERY_SECONDS
    ingest([request(key, "a3", at(10, 9))], now=NOW)
    assert vacuums() == before + 2


def test_no_vacuum_inside_a_transaction(keys, every):
    a, _ = keys
    every(0)
    usage.fold._last_vacuum = -math.inf
    before = vacuums()

    ingest([request(a, "a1", at(10, 7))], now=NOW)  # the test's transaction is open: VACUUM cannot run in it

    assert vacuums() == before
    assert RollupDelta.objects.count() == 0
