import random
from datetime import timedelta
from decimal import Decimal as D

import pytest
from django.db.models import Sum
from django.utils import timezone

from studio.models import User
from tests.concurrency import at_once
from usage.ingest import ingest
from usage.models import CatalogModel, Price, UsageEvent, UsageRollup


def totals():
    rollups = UsageRollup.objects.values("granularity").annotate(
        requests=Sum("requests"),
        errors=Sum("errors"),
        inp=Sum("input_tokens"),
        out=Sum("output_tokens"),
        cost=Sum("cost"),
    )
    return {
        r["granularity"]: (r["requests"], r["errors"], r["inp"], r["out"], D(r["cost"]).quantize(D("1e-9")))
        for r in rollups
    }


def test_valid_events_are_rated_stored_and_rolled_up(paid_key, event):
    key, _ = paid_key

    report = ingest([event(key), event(key, input_tokens=2000, output_tokens=0)])

    assert (report.accepted, report.duplicates, report.rejected) == (2, 0, [])
    costs = sorted(UsageEvent.objects.values_list("cost", flat=True))
    assert costs == [D("0.000600000"), D("0.001110000")]
    assert totals() == {g: (2, 0, 3200, 300, D("0.001710000")) for g in ("minute", "hour", "day")}


def test_replays_change_nothing(paid_key, event):
    key, _ = paid_key
    batch = [event(key) for _ in range(5)]
    ingest(batch)
    before = totals()

    report = ingest(batch)

    assert (report.accepted, report.duplicates) == (0, 5)
    assert totals() == before
    assert UsageEvent.objects.count() == 5


def test_duplicates_within_one_batch_count_once(paid_key, event):
    key, _ = paid_key
    one = event(key)

    report = ingest([one, one, one])

    assert (report.accepted, report.duplicates) == (1, 2)


def test_valid_events_are_kept_when_others_are_rejected(paid_key, event):
    key, _ = paid_key

    report = ingest([event(key, event_id="good"), event(key, event_id="bad", input_tokens=-1)])

    assert report.accepted == 1
    assert [r["event_id"] for r in report.rejected] == ["bad"]
    assert list(UsageEvent.objects.values_list("event_id", flat=True)) == ["good"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"input_tokens": -1}, "input_tokens"),
        ({"input_tokens": 1.5}, "input_tokens"),
        ({"input_tokens": "1200"}, "input_tokens"),
        ({"output_tokens": 10_000_001}, "output_tokens"),
        ({"status_code": 99}, "status_code"),
        ({"kind": "embed"}, "kind"),
        ({"source": "cli"}, "source"),
        ({"model": "gpt-5"}, "model"),
        ({"key_id": "999999"}, "key_id"),
        ({"key_id": "abc"}, "key_id"),
        ({"event_id": "two words"}, "event_id"),
        ({"occurred_at": "2026-11-28T05:00:00"}, "occurred_at"),  # no time zone
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"cache_token_hours": "-1"}, "cache_token_hours"),
        ({"cached_tokens": 1300}, "cached_tokens"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
def test_every_rejection_rule_writes_nothing(paid_key, event, overrides, field):
    key, _ = paid_key

    report = ingest([event(key, **{"event_id": "only", **overrides})])

    assert report.accepted == 0
    expected_id = overrides.get("event_id", "only")
    assert [(r["index"], r["event_id"], list(r["errors"])) for r in report.rejected] == [(0, expected_id, [field])]
    assert not UsageEvent.objects.exists()
    assert not UsageRollup.objects.exists()


def test_missing_fields_are_named(paid_key):
    report = ingest([{"event_id": "x"}])

    assert sorted(report.rejected[0]["errors"]) == [
        "input_tokens",
        "key_id",
        "kind",
        "model",
        "occurred_at",
        "status_code",
    ]


def test_non_object_events_are_rejected(paid_key):
    report = ingest(["not an event", 42])

    assert [r["index"] for r in report.rejected] == [0, 1]


@pytest.mark.parametrize(
    ("delta", "ok"),
    [
        (timedelta(days=-7, seconds=1), True),
        (timedelta(days=-7, seconds=-1), False),
        (timedelta(minutes=4, seconds=59), True),
        (timedelta(minutes=5, seconds=1), False),
    ],
)
def test_occurred_at_window(paid_key, event, delta, ok):
    key, _ = paid_key
    now = timezone.now()

    report = ingest([event(key, occurred_at=(now + delta).isoformat())], now=now)

    assert report.accepted == (1 if ok else 0)


def test_model_without_caching_refuses_cached_tokens(paid_key, event):
    key, _ = paid_key

    report = ingest([event(key, model="gemini-2.0-flash-lite", cached_tokens=10)])

    assert report.rejected[0]["errors"] == {"cached_tokens": ["This model has no context caching."]}


def test_key_revoked_before_the_event_is_rejected_after_is_kept(paid_key, event):
    key, _ = paid_key
    key.revoke(by=None)
    before = (key.revoked_at - timedelta(seconds=30)).isoformat()
    after = (key.revoked_at + timedelta(seconds=1)).isoformat()

    report = ingest(
        [event(key, event_id="before", occurred_at=before), event(key, event_id="after", occurred_at=after)]
    )

    assert report.accepted == 1
    assert [r["event_id"] for r in report.rejected] == ["after"]


def test_count_tokens_is_kept_but_not_rolled_up_and_failures_count_as_errors(paid_key, event):
    key, _ = paid_key

    ingest([event(key, kind="count_tokens"), event(key, status_code=500), event(key, status_code=429)])

    assert UsageEvent.objects.count() == 3
    assert totals()["day"] == (2, 2, 2400, 600, D("0E-9"))


def test_free_tier_usage_is_recorded_at_no_cost(free_key, event):
    key, _ = free_key

    ingest([event(key)])

    assert UsageEvent.objects.get().cost == 0
    assert UsageEvent.objects.get().billable is False


def test_studio_usage_is_billed_only_through_a_linked_key(paid_key, event):
    key, _ = paid_key
    ingest([event(key, event_id="unlinked", source="studio")])
    User.objects.filter(email="fleet-user@example.com").update(studio_api_key=key)

    ingest([event(key, event_id="linked", source="studio")])

    assert dict(UsageEvent.objects.values_list("event_id", "cost")) == {"unlinked": 0, "linked": D("0.001110000")}


def test_a_price_change_never_rerates_the_past(paid_key, event):
    key, _ = paid_key
    flash = CatalogModel.objects.get(pk="gemini-2.5-flash")
    old = Price.objects.get(model=flash)
    now = timezone.now()
    new = Price.objects.create(
        model=flash,
        effective_from=now - timedelta(hours=1),
        input=D("0.60"),
        output=D("5.00"),
        cached_input=D("0.06"),
        cache_storage=D("1"),
    )

    ingest(
        [
            event(key, event_id="old", occurred_at=(now - timedelta(hours=2)).isoformat()),
            event(key, event_id="new", occurred_at=(now - timedelta(minutes=5)).isoformat()),
        ],
        now=now,
    )

    rows = {e.event_id: (e.price_id, e.cost) for e in UsageEvent.objects.all()}
    assert rows == {"old": (old.pk, D("0.001110000")), "new": (new.pk, D("0.002220000"))}


def test_rollup_buckets_are_utc_minutes_hours_and_days(paid_key, event):
    key, _ = paid_key
    moment = timezone.now().replace(second=30, microsecond=0) - timedelta(hours=2)

    ingest([event(key, occurred_at=moment.isoformat())])

    starts = dict(UsageRollup.objects.values_list("granularity", "bucket_start"))
    assert starts["minute"] == moment.replace(second=0)
    assert starts["hour"] == moment.replace(minute=0, second=0)
    assert starts["day"] == moment.replace(hour=0, minute=0, second=0)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_ten_thousand_events_replayed_three_times_one_concurrent_and_shuffled_equal_one_pass(event):
    from studio.models import Tier
    from tests.factories import make_key, make_project, make_user

    user = make_user("replay@example.com")
    keys = [make_key(make_project(user, tier=Tier.TIER_1))[0] for _ in range(3)]
    now = timezone.now()
    rng = random.Random(7)
    events = [
        event(
            rng.choice(keys),
            model=rng.choice(["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash"]),
            status_code=rng.choice([200, 200, 200, 429, 500]),
            input_tokens=rng.randint(0, 300_000),
            output_tokens=rng.randint(0, 5_000),
            occurred_at=(now - timedelta(seconds=rng.randint(0, 6 * 3600))).isoformat(),
        )
        for _ in range(10_000)
    ]
    batches = [events[i : i + 1000] for i in range(0, len(events), 1000)]
    for batch in batches:
        ingest(batch, now=now)
    one_pass = totals()
    assert one_pass["day"][0] == 10_000

    for batch in batches:  # a plain replay
        assert ingest(batch, now=now).accepted == 0
    shuffled = events[:]
    rng.shuffle(shuffled)
    reshuffled = [shuffled[i : i + 1000] for i in range(0, len(shuffled), 1000)]

    def replay(i):
        for batch in reshuffled[i::4]:
            ingest(batch, now=now)

    _, errors = at_once(replay, 4)

    assert errors == []
    assert totals() == one_pass
    assert UsageEvent.objects.count() == 10_000


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_first_pass_split_over_concurrent_writers_equals_a_single_writer(event):
    from studio.models import Tier
    from tests.factories import make_key, make_project, make_user

    key = make_key(make_project(make_user("split@example.com"), tier=Tier.TIER_1))[0]
    now = timezone.now()
    events = [event(key, occurred_at=(now - timedelta(seconds=i % 600)).isoformat()) for i in range(4000)]
    doubled = events + events  # every event sent twice, by different writers at once

    _, errors = at_once(lambda i: ingest(doubled[i::8], now=now), 8)

    assert errors == []
    assert UsageEvent.objects.count() == 4000
    assert totals()["day"][0] == 4000
    assert totals()["minute"][0] == 4000
