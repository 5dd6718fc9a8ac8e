"""The busiest minute of each hour (UsagePeak), kept as usage is rolled up (usage.peaks, usage.fold), and the Limits
tab's peak RPM and TPM read from it (usage.queries._minute_peaks): always the busiest UTC minute summed over keys, as
the raw events say, whatever the window's edges, late or replayed events, and concurrent batches."""

import importlib
import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.apps import apps
from django.db import connection

from tests.concurrency import at_once
from tests.factories import make_billed_project, make_key, make_project, make_user
from tests.usage.test_ingest import storage
from usage.fold import fold
from usage.ingest import ingest
from usage.models import UsageEvent, UsagePeak
from usage.queries import Window, limits_for_project

FLASH, PRO = "gemini-2.5-flash", "gemini-2.5-pro"
NOW = datetime(2026, 11, 4, 12, 0, 20, tzinfo=UTC)
LA, INDIA = ZoneInfo("America/Los_Angeles"), ZoneInfo("Asia/Kolkata")


def at(hour: int, minute: int, second: int = 0, day: int = 3) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, tzinfo=UTC)


def request(key, event_id: str, moment: datetime, *, model: str = FLASH, tokens: int = 1000, **fields) -> dict:
    return {
        "event_id": event_id,
        "key_id": str(key.pk),
        "model": model,
        "kind": "generate",
        "status_code": 200,
        "input_tokens": tokens,
        "output_tokens": 10,
        "occurred_at": moment.isoformat(),
        **fields,
    }


def stored_peaks() -> list[tuple[str, str, int, int]]:
    return sorted(
        (model_id, f"{hour:%m-%d %H:%M}", requests, tokens)
        for model_id, hour, requests, tokens in UsagePeak.objects.values_list(
            "model_id", "hour", "requests", "input_tokens"
        )
    )


def raw_peaks(project, start: datetime, end: datetime) -> dict[str, tuple[int, int]]:
    """{model: (most requests, most input tokens) in one UTC minute of [start, end)} from the raw events: the
    reference. Requests as the rollups count them: not count_tokens, not cache storage."""
    minutes = defaultdict(lambda: [0, 0])
    events = UsageEvent.objects.filter(project=project, occurred_at__gte=start, occurred_at__lt=end)
    for model_id, kind, moment, tokens in events.values_list("model_id", "kind", "occurred_at", "input_tokens"):
        if kind in ("count_tokens", "cache_storage"):
            continue
        total = minutes[(model_id, moment.replace(second=0, microsecond=0))]
        total[0] += 1
        total[1] += tokens
    out: dict[str, tuple[int, int]] = {}
    for (model_id, _), (requests, tokens) in minutes.items():
        most = out.get(model_id, (0, 0))
        out[model_id] = (max(most[0], requests), max(most[1], tokens))
    return out


def shown_peaks(project, window) -> dict[str, tuple[int, int]]:
    """{model: (peak RPM, peak TPM)} of the models with usage, as the Limits tab shows them."""
    rows = limits_for_project(project, window, now=NOW)
    return {row.model_id: (row.peak_rpm, row.peak_tpm) for row in rows if row.peak_rpm or row.peak_tpm}


def test_a_peak_is_the_busiest_minute_summed_over_keys(db, settings, event):
    settings.REDIS_URL = ""
    project = make_billed_project(make_user(), since=datetime(2026, 10, 1, tzinfo=UTC))
    a, b = (make_key(project)[0] for _ in range(2))
    first = [request(a, f"a{n}", at(10, 7, n)) for n in range(3)]  # 10:07: 3 requests from key a ...
    first += [request(a, f"a1{n}", at(10, 20), tokens=3000) for n in range(4)]  # 10:20: 4 requests, 12,000 tokens
    first += [request(a, "count", at(10, 30), kind="count_tokens", tokens=99_000)]  # not a request
    first += [request(a, "pro", at(11, 0), model=PRO, tokens=500)]
    second = [request(b, f"b{n}", at(10, 7, 30 + n), tokens=500) for n in range(2)]  # ... and 2 from key b
    second += [storage(event, b, event_id="storage", occurred_at=at(10, 7, 50).isoformat())]  # not a request

    assert ingest(first, now=NOW).accepted == 9
    assert stored_peaks() == [(FLASH, "11-03 10:00", 4, 12_000), (PRO, "11-03 11:00", 1, 500)]
    assert ingest(second, now=NOW).accepted == 3
    # 10:07 now has 5 requests and 4,000 tokens over both keys: the most requests, not the most tokens.
    assert stored_peaks() == [(FLASH, "11-03 10:00", 5, 12_000), (PRO, "11-03 11:00", 1, 500)]

    assert ingest(first, now=NOW).duplicates == 9  # a replay adds nothing, so raises nothing
    late = [request(b, f"late{n}", at(10, 20, 40), tokens=1000) for n in range(2)]  # 10:20: 6 requests, 14,000
    assert ingest(late, now=NOW + timedelta(days=5)).accepted == 2  # reported six days after they occurred

    assert stored_peaks() == [(FLASH, "11-03 10:00", 6, 14_000), (PRO, "11-03 11:00", 1, 500)]
    day = Window.days(date(2026, 11, 3), date(2026, 11, 3), ZoneInfo("UTC"))
    assert shown_peaks(project, day) == {FLASH: (6, 14_000), PRO: (1, 500)}
    # A window that ends inside the hour, before 10:20: its minutes are read, not the hour's peak.
    assert shown_peaks(project, Window.minutes(at(10, 19), 60, ZoneInfo("UTC"))) == {FLASH: (5, 4000)}


def test_the_peaks_shown_equal_the_raw_events_for_any_window(db, settings):
    """Random traffic of three keys on two models over three days, in batches, some of them late or replayed; windows
    of whole hours and of edges inside hours (half-hour zones, the last 60 minutes, single minutes)."""
    settings.REDIS_URL = ""
    project = make_billed_project(make_user(), since=datetime(2026, 10, 1, tzinfo=UTC))
    keys = [make_key(project)[0] for _ in range(3)]
    rng = random.Random(11)
    events = [
        request(
            rng.choice(keys),
            f"e{n}",
            NOW - timedelta(minutes=rng.randint(0, 3 * 24 * 60), seconds=rng.randint(0, 59)),
            model=rng.choice([FLASH, PRO]),
            kind=rng.choice(["generate", "generate", "batch", "count_tokens"]),
            tokens=rng.randint(0, 5000),
        )
        for n in range(1500)
    ]
    # Three days in batches of 250, minutes split between batches; then a replay.
    for first in range(0, len(events), 250):
        assert ingest(events[first : first + 250], now=NOW).accepted == 250
    assert ingest(events[:250], now=NOW).duplicates == 250

    windows = [Window.days(date(2026, 11, 1), date(2026, 11, 4), zone) for zone in (ZoneInfo("UTC"), LA, INDIA)] + [
        Window.days(date(2026, 11, 2), date(2026, 11, 2), INDIA),
        Window.hours(NOW, 24, INDIA),
        Window.hours(NOW - timedelta(hours=30), 5, LA),
        Window.minutes(NOW, 60, ZoneInfo("UTC")),
        Window.minutes(NOW - timedelta(hours=20, minutes=13), 60, ZoneInfo("UTC")),
        Window.minutes(NOW - timedelta(hours=40, minutes=1), 125, INDIA),
    ]
    windows += [Window.minutes(NOW - timedelta(minutes=rng.randint(0, 3 * 24 * 60)), 1, LA) for _ in range(10)]
    for window in windows:
        assert shown_peaks(project, window) == raw_peaks(project, window.start, window.end), window


def test_the_migration_computes_the_peaks_of_rollups_written_before_it(db):
    project = make_project(make_user())
    a, b = (make_key(project)[0] for _ in range(2))
    ingest(
        [request(a, f"a{n}", at(10, 7, n)) for n in range(3)]
        + [request(b, f"b{n}", at(10, 7, 30 + n), tokens=2500) for n in range(2)]
        + [request(b, "c", at(10, 59), tokens=9000), request(a, "d", at(23, 0), model=PRO, tokens=7)],
        now=NOW,
    )
    UsagePeak.objects.all().delete()  # as before the migration: rollups without peaks
    migration = importlib.import_module("usage.migrations.0008_usage_peaks")

    # Not entered: SQLite's schema editor refuses to open inside the test's transaction (the ORM path needs none).
    migration.backfill_peaks(apps, connection.schema_editor())

    assert stored_peaks() == [(FLASH, "11-03 10:00", 5, 9000), (PRO, "11-03 23:00", 1, 7)]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_of_many_keys_keep_every_peak():
    project = make_project(make_user())
    keys = [make_key(project)[0] for _ in range(6)]
    rng = random.Random(5)
    batches = [
        [
            request(key, f"{key.pk}-{n}", at(10, rng.randint(0, 4), rng.randint(0, 59)), tokens=rng.randint(1, 999))
            for n in range(40)
        ]
        for key in keys
    ]

    reports, errors = at_once(lambda index: ingest(batches[index], now=NOW), len(batches))
    fold()  # a batch whose own fold found another under way is rolled up by the next one (usage.fold)

    assert errors == []
    assert sum(report.accepted for report in reports) == 240
    peaks = raw_peaks(project, at(10, 0), at(11, 0))
    assert stored_peaks() == [(FLASH, "11-03 10:00", *peaks[FLASH])]
