"""The dashboard's reads (usage.queries): buckets in the reader's zone are exact, whatever the
offset (half and quarter hours) and across DST changes, and equal sums over the raw events."""

import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pytest

from tests.factories import make_billed_project, make_key, make_user
from usage.ingest import ingest
from usage.models import UsageEvent
from usage.queries import Sums, Window, pieces, usage_by_bucket, usage_by_key

LA, INDIA, NEPAL = ZoneInfo("America/Los_Angeles"), ZoneInfo("Asia/Kolkata"), ZoneInfo("Asia/Kathmandu")


def summary(window):
    return [
        (p.granularity, p.start.strftime("%m-%d %H:%M"), p.end.strftime("%m-%d %H:%M"), p.index) for p in pieces(window)
    ]


def test_a_utc_day_is_one_day_rollup():
    assert summary(Window.days(date(2026, 11, 5), date(2026, 11, 6), ZoneInfo("UTC"))) == [
        ("day", "11-05 00:00", "11-06 00:00", 0),
        ("day", "11-06 00:00", "11-07 00:00", 1),
    ]


def test_a_los_angeles_day_is_24_hours_and_23_or_25_across_dst():
    assert summary(Window.days(date(2026, 11, 1), date(2026, 11, 2), LA)) == [
        ("hour", "11-01 07:00", "11-02 08:00", 0),  # 1 November 2026: clocks go back, 25 hours
        ("hour", "11-02 08:00", "11-03 08:00", 1),
    ]
    assert summary(Window.days(date(2026, 3, 8), date(2026, 3, 8), LA)) == [
        ("hour", "03-08 08:00", "03-09 07:00", 0),  # 8 March 2026: clocks go forward, 23 hours
    ]


def test_a_day_in_india_and_nepal_takes_minutes_at_its_edges():
    assert summary(Window.days(date(2026, 11, 5), date(2026, 11, 5), INDIA)) == [
        ("minute", "11-04 18:30", "11-04 19:00", 0),
        ("hour", "11-04 19:00", "11-05 18:00", 0),
        ("minute", "11-05 18:00", "11-05 18:30", 0),
    ]
    assert summary(Window.days(date(2026, 11, 5), date(2026, 11, 5), NEPAL))[0] == (
        "minute",
        "11-04 18:15",
        "11-04 19:00",
        0,
    )


def test_hours_in_india_start_at_half_past_utc():
    window = Window.hours(datetime(2026, 11, 5, 10, 40, tzinfo=UTC), 2, INDIA)  # 16:10 in India

    assert [start.strftime("%H:%M") for start in window.bucket_starts] == ["15:00", "16:00"]
    assert summary(window) == [("minute", "11-05 09:30", "11-05 10:30", 0), ("minute", "11-05 10:30", "11-05 11:30", 1)]


def raw_sums(events, tz, first, last, *, model=None, key=None):
    """{(local date, model): Sums} from the raw events: the reference the rollups must match."""
    out = defaultdict(Sums)
    for e in events:
        day = e.occurred_at.astimezone(tz).date()
        if e.kind == "count_tokens" or not first <= day <= last or model not in (None, e.model_id):
            continue
        if key not in (None, e.api_key_id):
            continue
        out[(day, e.model_id)].add(
            Sums(
                requests=int(e.kind != "cache_storage"),
                errors=int(e.status_code >= 400),
                server_errors=int(e.status_code >= 500),
                input_tokens=e.input_tokens,
                output_tokens=e.output_tokens,
                cached_tokens=e.cached_tokens,
                cost=e.cost,
            )
        )
    return dict(out)


@pytest.mark.parametrize("zone", ["UTC", "America/Los_Angeles", "Asia/Kolkata"])
def test_daily_sums_equal_the_raw_events_across_a_dst_change(db, zone):
    project = make_billed_project(make_user(), since=datetime(2026, 10, 1, tzinfo=UTC))
    keys = [make_key(project)[0] for _ in range(2)]
    rng = random.Random(7)
    now = datetime(2026, 11, 4, 12, tzinfo=UTC)
    ingest(
        [
            {
                "event_id": f"e{n}",
                "key_id": str(rng.choice(keys).pk),
                "model": rng.choice(["gemini-2.5-flash", "gemini-2.5-pro"]),
                "kind": rng.choice(["generate", "generate", "batch", "count_tokens"]),
                "status_code": rng.choice([200, 200, 200, 404, 429, 500, 503]),
                "input_tokens": rng.randint(0, 5000),
                "output_tokens": rng.randint(0, 800),
                "occurred_at": (now - timedelta(minutes=rng.randint(0, 6 * 24 * 60))).isoformat(),
            }
            for n in range(600)
        ],
        now=now,
    )
    tz = ZoneInfo(zone)
    window = Window.days(date(2026, 10, 30), date(2026, 11, 3), tz)  # LA's clocks went back on 1 November
    days = [start.date() for start in window.bucket_starts]
    events = list(UsageEvent.objects.all())

    found = {(days[index], model): sums for (index, model), sums in usage_by_bucket(project.pk, window).items()}
    flash = {(days[i], m): s for (i, m), s in usage_by_bucket(project.pk, window, models=["gemini-2.5-flash"]).items()}
    by_key = usage_by_key(project.pk, window, keys=[keys[0].pk])

    expected = raw_sums(events, tz, days[0], days[-1])
    assert found == expected
    assert flash == raw_sums(events, tz, days[0], days[-1], model="gemini-2.5-flash")
    total = Sums()
    for sums in raw_sums(events, tz, days[0], days[-1], key=keys[0].pk).values():
        total.add(sums)
    assert by_key == {keys[0].pk: total}
    assert sum((s.cost for s in found.values()), D(0)) > 0  # the range holds billed usage
