import random
from datetime import timedelta
from decimal import Decimal as D
from hashlib import sha256

import pytest
from django.db.models import Sum
from django.utils import timezone

from billing.statements import month_of
from studio.models import User
from tests.concurrency import at_once
from usage.fold import fold
from usage.ingest import ROW, ingest, pending_lines
from usage.models import CatalogModel, Price, UsageEvent, UsageRollup, event_key


def totals():
    # A batch whose own fold found another under way (concurrent writers) waits for the next fold (usage.fold).
    fold()
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


def test_an_event_is_unique_by_the_key_of_its_id(paid_key, event):
    """event_key: a UUID in canonical form is its own 16 bytes; any other id (the same UUID in capitals or without
    hyphens among them: other ids) the first 16 bytes of its SHA-256. Each id is one event, its replay a duplicate."""
    key, _ = paid_key
    uuid = "0190a3b2-7c1d-7abc-8def-0123456789ab"
    ids = [uuid, uuid.upper(), uuid.replace("-", ""), "evt-1"]

    report = ingest([event(key, event_id=event_id) for event_id in ids])

    assert (report.accepted, report.duplicates) == (4, 0)
    stored = {event_id: bytes(key) for event_id, key in UsageEvent.objects.values_list("event_id", "event_key")}
    assert stored == {
        uuid: bytes.fromhex("0190a3b27c1d7abc8def0123456789ab"),
        uuid.upper(): sha256(uuid.upper().encode()).digest()[:16],
        uuid.replace("-", ""): sha256(uuid.replace("-", "").encode()).digest()[:16],
        "evt-1": bytes.fromhex("7b409f932d2c88e97f0c17676c8420d3"),
    }
    assert stored == {event_id: event_key(event_id) for event_id in ids}
    replay = ingest([event(key, event_id=event_id) for event_id in reversed(ids)])
    assert (replay.accepted, replay.duplicates) == (0, 4)


@pytest.mark.postgres
def test_the_key_of_an_id_is_the_same_in_sql(db):
    """EVENT_KEY_SQL (migrations, bulk loads) computes event_key() in PostgreSQL."""
    from django.db import connection

    from usage.models import EVENT_KEY_SQL

    uuid = "0190a3b2-7c1d-7abc-8def-0123456789ab"
    ids = [
        uuid,
        uuid.upper(),
        uuid.replace("-", ""),
        uuid[:-1] + "g",
        f"{uuid}x",
        "evt-1",
        "~!\"#$%&'()*+,-./",
        "x" * 100,
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {EVENT_KEY_SQL.format('i')} FROM unnest(%s::varchar[]) WITH ORDINALITY AS u(i, n) ORDER BY n",
            [ids],
        )
        assert [bytes(row[0]) for row in cursor.fetchall()] == [event_key(event_id) for event_id in ids]


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
    user = User.objects.get(email="fleet-user@example.com")
    ingest([event(key, event_id="unlinked", source="studio")])
    user.link_studio_key(key, by=user)

    ingest([event(key, event_id="linked", source="studio", occurred_at=timezone.now().isoformat())])

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


def storage(event, key, **overrides):
    """A cache_storage event: token-hours only, none of a request's fields."""
    request_fields = ("status_code", "input_tokens", "output_tokens", "cached_tokens", "cache_token_hours")
    base = {name: value for name, value in event(key).items() if name not in request_fields}
    return {**base, "kind": "cache_storage", "cache_token_hours": "2000000", **overrides}


def test_cache_storage_is_rated_and_rolled_up_as_storage_not_as_a_request(paid_key, event):
    key, _ = paid_key  # gemini-2.5-flash: storage USD 1.00 per 1M token-hours

    report = ingest([event(key, event_id="request"), storage(event, key, event_id="storage")])

    assert (report.accepted, report.rejected) == (2, [])
    stored = UsageEvent.objects.get(event_id="storage")
    assert (
        stored.kind,
        stored.status_code,
        stored.input_tokens,
        stored.output_tokens,
        stored.cached_tokens,
        stored.cache_token_hours,
        stored.billable,
        stored.counts_against_quota,
        stored.cost_storage,
        stored.cost,
    ) == ("cache_storage", 200, 0, 0, 0, D("2000000"), True, False, D("2"), D("2"))
    rollups = UsageRollup.objects.values_list("granularity", "requests", "errors", "input_tokens", "cache_token_hours")
    assert sorted(rollups) == [(g, 1, 0, 1200, D("2000000")) for g in ("day", "hour", "minute")]
    assert totals() == {g: (1, 0, 1200, 300, D("2.001110000")) for g in ("minute", "hour", "day")}


def test_cache_storage_alone_adds_no_request(free_key, event):
    key, _ = free_key

    ingest([storage(event, key, cache_token_hours="0.5", source="studio")])

    stored = UsageEvent.objects.get()
    assert (stored.billable, stored.counts_against_quota, stored.cost) == (False, False, 0)
    assert sorted(UsageRollup.objects.values_list("granularity", "requests", "cache_token_hours")) == [
        ("day", 0, D("0.5")),
        ("hour", 0, D("0.5")),
        ("minute", 0, D("0.5")),
    ]


def test_cache_storage_may_carry_zero_token_counts(paid_key, event):
    key, _ = paid_key

    report = ingest([storage(event, key, input_tokens=0, output_tokens=0, cached_tokens=0)])

    assert (report.accepted, report.rejected) == (1, [])


NO_TOKENS = "A cache_storage event has no tokens: leave this out or send 0."


@pytest.mark.parametrize(
    ("kind", "overrides", "errors"),
    [
        ("storage", {"input_tokens": 10}, {"input_tokens": [NO_TOKENS]}),
        (
            "storage",
            {"output_tokens": 1, "cached_tokens": 2},
            {"output_tokens": [NO_TOKENS], "cached_tokens": [NO_TOKENS]},
        ),
        (
            "storage",
            {"status_code": 200},
            {"status_code": ["A cache_storage event is not a request: it has no status_code."]},
        ),
        ("storage", {"cache_token_hours": "0"}, {"cache_token_hours": ["Input should be greater than 0"]}),
        (
            "storage",
            {"cache_token_hours": None},
            {"cache_token_hours": ["Decimal input should be an integer, float, string or Decimal object"]},
        ),
        ("storage", {"model": "gemini-2.0-flash-lite"}, {"cache_token_hours": ["This model has no context caching."]}),
        (
            "generate",
            {"cache_token_hours": "1.5"},
            {"cache_token_hours": ["Report cache storage as its own event of kind cache_storage."]},
        ),
        (
            "batch",
            {"kind": "batch", "cache_token_hours": 3},
            {"cache_token_hours": ["Report cache storage as its own event of kind cache_storage."]},
        ),
    ],
)
def test_wrong_combinations_of_kind_and_fields_are_named(paid_key, event, kind, overrides, errors):
    key, _ = paid_key
    raw = storage(event, key, **overrides) if kind == "storage" else event(key, **overrides)

    report = ingest([{**raw, "event_id": "wrong"}])

    assert report.rejected == [{"index": 0, "event_id": "wrong", "errors": errors}]
    assert not UsageEvent.objects.exists()


def test_an_unknown_kind_names_every_kind_and_every_other_bad_field(paid_key, event):
    key, _ = paid_key

    report = ingest([event(key, event_id="odd", kind="storage", input_tokens="12")])

    assert report.rejected == [
        {
            "index": 0,
            "event_id": "odd",
            "errors": {
                "kind": ["Input should be 'generate', 'count_tokens', 'batch' or 'cache_storage'"],
                "input_tokens": ["Input should be a valid integer"],
            },
        }
    ]


def test_audio_is_rated_stored_and_rolled_up_as_its_own_counts(paid_key, event):
    key, _ = paid_key  # gemini-2.5-flash: input 0.30, audio 1.00, cached 0.03, cached audio 0.10, output 2.50

    report = ingest(
        [
            event(key, event_id="text", input_tokens=1_000, output_tokens=0),
            event(
                key,
                event_id="audio",
                input_tokens=10_000,
                cached_tokens=4_000,
                audio_input_tokens=5_000,
                cached_audio_tokens=1_000,
                output_tokens=100,
            ),
        ]
    )

    assert (report.accepted, report.rejected) == (2, [])
    stored = UsageEvent.objects.values_list(
        "event_id",
        "input_tokens",
        "cached_tokens",
        "audio_input_tokens",
        "cached_audio_tokens",
        "cost_input",
        "cost_audio",
        "cost_cached",
        "cost_cached_audio",
        "cost_output",
        "cost",
    ).order_by("event_id")
    assert list(stored) == [
        (
            "audio",
            10_000,
            4_000,
            5_000,
            1_000,
            D("0.0006"),
            D("0.004"),
            D("0.00009"),
            D("0.0001"),
            D("0.00025"),
            D("0.00504"),
        ),
        ("text", 1_000, 0, 0, 0, D("0.0003"), 0, 0, 0, 0, D("0.0003")),
    ]
    rollups = UsageRollup.objects.values_list(
        "granularity", "requests", "input_tokens", "cached_tokens", "audio_input_tokens", "cached_audio_tokens", "cost"
    )
    assert sorted(rollups) == [(g, 2, 11_000, 4_000, 5_000, 1_000, D("0.00534")) for g in ("day", "hour", "minute")]


def test_audio_adds_to_existing_rollups(paid_key, event):
    key, _ = paid_key
    ingest([event(key, audio_input_tokens=1_000)])

    ingest([event(key, audio_input_tokens=200, cached_tokens=100, cached_audio_tokens=50)])

    assert sorted(UsageRollup.objects.values_list("granularity", "audio_input_tokens", "cached_audio_tokens")) == [
        (g, 1_200, 50) for g in ("day", "hour", "minute")
    ]


def test_the_catalog_has_the_audio_prices_of_facts_md(db):
    prices = Price.objects.values_list("model_id", "audio_input", "cached_audio_input").order_by("model_id")

    assert list(prices) == [
        ("gemini-2.0-flash", D("0.70"), D("0.175")),
        ("gemini-2.0-flash-lite", None, None),
        ("gemini-2.5-flash", D("1.00"), D("0.10")),
        ("gemini-2.5-flash-lite", D("0.30"), D("0.03")),
        ("gemini-2.5-pro", None, None),
        ("gemini-embedding-001", None, None),
    ]


AUDIO_OVER_INPUT = "Audio tokens are part of the input tokens: at most input_tokens."
AUDIO_OVER_UNCACHED = (
    "Audio tokens not read from a cache are part of the input tokens not read from a cache: "
    "audio_input_tokens − cached_audio_tokens is at most input_tokens − cached_tokens."
)
CACHED_AUDIO_OVER_AUDIO = "Cached audio tokens are part of the audio tokens: at most audio_input_tokens."
CACHED_AUDIO_OVER_CACHED = "Cached audio tokens are part of the cached tokens: at most cached_tokens."


@pytest.mark.parametrize(
    ("kind", "overrides", "errors"),
    [
        ("generate", {"audio_input_tokens": 1_201}, {"audio_input_tokens": [AUDIO_OVER_INPUT]}),
        (
            "generate",
            {"audio_input_tokens": -1},
            {"audio_input_tokens": ["Input should be greater than or equal to 0"]},
        ),
        ("generate", {"audio_input_tokens": "10"}, {"audio_input_tokens": ["Input should be a valid integer"]}),
        ("generate", {"audio_input_tokens": 1.0}, {"audio_input_tokens": ["Input should be a valid integer"]}),
        ("generate", {"cached_audio_tokens": None}, {"cached_audio_tokens": ["Input should be a valid integer"]}),
        (
            "generate",
            {"cached_tokens": 1_000, "audio_input_tokens": 500},
            {"audio_input_tokens": [AUDIO_OVER_UNCACHED]},
        ),
        (
            "generate",
            {"cached_tokens": 100, "audio_input_tokens": 10, "cached_audio_tokens": 11},
            {"cached_audio_tokens": [CACHED_AUDIO_OVER_AUDIO]},
        ),
        (
            "generate",
            {"cached_tokens": 10, "audio_input_tokens": 100, "cached_audio_tokens": 11},
            {"cached_audio_tokens": [CACHED_AUDIO_OVER_CACHED]},
        ),
        (
            "generate",
            {"cached_audio_tokens": 5},
            {"cached_audio_tokens": [CACHED_AUDIO_OVER_AUDIO, CACHED_AUDIO_OVER_CACHED]},
        ),
        (
            "batch",
            {"kind": "batch", "model": "gemini-2.5-pro", "audio_input_tokens": 100},
            {
                "audio_input_tokens": [
                    "gemini-2.5-pro has no audio input price: report its audio as input_tokens only, without "
                    "audio_input_tokens."
                ]
            },
        ),
        ("storage", {"audio_input_tokens": 5}, {"audio_input_tokens": [NO_TOKENS]}),
        ("storage", {"cached_audio_tokens": 5}, {"cached_audio_tokens": [NO_TOKENS]}),
    ],
)
def test_wrong_audio_counts_are_named_and_nothing_is_written(paid_key, event, kind, overrides, errors):
    key, _ = paid_key
    raw = storage(event, key, **overrides) if kind == "storage" else event(key, **overrides)

    report = ingest([{**raw, "event_id": "wrong"}])

    assert report.rejected == [{"index": 0, "event_id": "wrong", "errors": errors}]
    assert not UsageEvent.objects.exists()
    assert not UsageRollup.objects.exists()


def test_pending_lines_count_a_class_only_when_it_costs_something():
    """pending_lines, the Python twin of the batch statement's VALUES list (`s.amount > 0`): a class that costs
    nothing, or less (a negative price, which the catalog should never hold), adds no statement line."""
    moment = timezone.now()
    fields = dict.fromkeys(ROW, 0) | {
        "event_id": "e1",
        "project_id": 7,
        "api_key_id": 8,
        "model_id": "gemini-2.5-flash",
        "price_id": 9,
        "kind": "generate",
        "source": "api",
        "status_code": 200,
        "input_tokens": 1000,
        "output_tokens": 10,
        "occurred_at": moment,
        "billable": True,
        "counts_against_quota": True,
        "account_id": 5,
        "long_prompt": False,
        "month": month_of(moment),
        "boundary": None,
    }
    costs_nothing = fields | {"input_nanos": -300, "output_nanos": 0}
    costs = fields | {"event_id": "e2", "input_nanos": 300, "output_nanos": 25_000}

    assert pending_lines([tuple(costs_nothing[name] for name in ROW)]) == []
    lines = pending_lines([tuple(costs[name] for name in ROW)])
    assert [(line[5], line[8], line[9], line[10]) for line in lines] == [
        ("input", 1000, 300, 1),
        ("output", 10, 25_000, 1),
    ]


def _mix(event, key, prefix, minute):
    """Events of every kind of statement line: text, cached and audio input, output, batch, a long prompt, cache
    storage, a failed request and a studio request (both free), and count_tokens (free, not rolled up)."""
    at = [(minute - timedelta(seconds=50 * i)).isoformat() for i in range(4)]  # over three or four minutes
    return [
        event(key, event_id=f"{prefix}-text", input_tokens=1_000, output_tokens=20, occurred_at=at[0]),
        event(key, event_id=f"{prefix}-cached", input_tokens=9_000, cached_tokens=3_000, occurred_at=at[1]),
        event(
            key,
            event_id=f"{prefix}-audio",
            input_tokens=10_000,
            cached_tokens=4_000,
            audio_input_tokens=5_000,
            cached_audio_tokens=1_000,
            occurred_at=at[1],
        ),
        event(key, event_id=f"{prefix}-batch", kind="batch", input_tokens=7_000, occurred_at=at[2]),
        event(key, event_id=f"{prefix}-long", model="gemini-2.5-pro", input_tokens=250_000, occurred_at=at[2]),
        storage(event, key, event_id=f"{prefix}-storage", cache_token_hours="1500.25", occurred_at=at[3]),
        event(key, event_id=f"{prefix}-failed", status_code=500, occurred_at=at[3]),
        event(key, event_id=f"{prefix}-studio", source="studio", occurred_at=at[0]),
        event(key, event_id=f"{prefix}-count", kind="count_tokens", occurred_at=at[0]),
    ]


def _written(project_id):
    """What a project's events added: its statement lines and minute rollups, without the ids that differ."""
    from usage.models import PendingCharge

    lines = PendingCharge.objects.filter(project_id=project_id).values_list(
        "model_id", "month", "sku", "batch", "long_prompt", "quantity", "amount_nanos", "events",
        "first_occurred_at", "last_occurred_at",
    )  # fmt: skip
    minutes = UsageRollup.objects.filter(project_id=project_id, granularity="minute").values_list(
        "bucket_start", "model_id", "requests", "errors", "server_errors", "input_tokens", "output_tokens",
        "cached_tokens", "audio_input_tokens", "cached_audio_tokens", "cache_token_hours", "cost",
    )  # fmt: skip
    return sorted(lines), sorted(minutes)


@pytest.mark.postgres
def test_a_batch_with_a_replayed_id_is_written_again_and_adds_what_an_all_new_batch_adds(db, event, caplog):
    """PostgreSQL writes an all-new batch with plain inserts (INSERT_NEW: lines summed in Python, minutes from the
    staged rows). A batch holding a replayed id fails that with unique_violation and is written again by
    INSERT_AND_ROLL_UP (lines and minutes summed in SQL from the inserted events), quietly and not as a retry.
    Both add exactly the same statement lines and minute sums."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.factories import make_billed_project, make_key, make_user

    minute = timezone.now() - timedelta(minutes=3)
    fresh = make_key(make_billed_project(make_user("fresh@example.com")))[0]
    replayed = make_key(make_billed_project(make_user("replayed@example.com")))[0]
    sentinel = event(replayed, event_id="sentinel", kind="count_tokens")  # free, and rolled up nowhere
    assert ingest([sentinel]).accepted == 1
    fold()
    assert _written(replayed.project_id) == ([], [])

    def statements(batch):
        with CaptureQueriesContext(connection) as queries:
            report = ingest(batch)
        event_inserts = [q["sql"] for q in queries if "INSERT INTO usage_usageevent (" in q["sql"]]
        return report, ["replays" if "DO NOTHING" in sql else "all new" for sql in event_inserts]

    with caplog.at_level("DEBUG", logger="usage.ingest"):
        report, written = statements(_mix(event, fresh, "f", minute))
        assert (report.accepted, report.duplicates, report.rejected, written) == (9, 0, [], ["all new"])
        report, written = statements([sentinel, *_mix(event, replayed, "r", minute)])
        assert (report.accepted, report.duplicates, report.rejected, written) == (9, 1, [], ["all new", "replays"])
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "usage.ingest"] == [
        ("DEBUG", "usage ingestion: a batch of 10 events holds replayed ids")
    ]

    fold()
    lines, minutes = _written(fresh.project_id)
    assert _written(replayed.project_id) == (lines, minutes)
    # What every class added, by SKU: (quantity, nano-dollars, events), over its lines.
    by_sku = {}
    for _, _, sku, _, _, quantity, nanos, events, _, _ in lines:
        total = by_sku.setdefault(sku, [0, 0, 0])
        total[0], total[1], total[2] = total[0] + quantity, total[1] + nanos, total[2] + events
    assert by_sku == {
        # input not cached, not audio: text 1,000, cached 6,000, audio 2,000 (at 0.30/M); batch 7,000 (at half);
        # the long prompt 250,000 (gemini-2.5-pro above 200,000 tokens: 2.50/M)
        "input": [266_000, 300_000 + 1_800_000 + 600_000 + 1_050_000 + 625_000_000, 5],
        "cached_input": [6_000, 90_000 + 90_000, 2],  # 3,000 + 3,000 at 0.03/M
        "audio_input": [4_000, 4_000_000, 1],  # at 1.00/M
        "cached_audio_input": [1_000, 100_000, 1],  # at 0.10/M
        # 20 + 4 × 300 (2.50/M; the batch's at half, the long prompt's at 15.00/M); the failed and studio ones free
        "output": [1_220, 50_000 + 2 * 750_000 + 375_000 + 4_500_000, 5],
        "cache_storage": [D("1500.25"), 1_500_250, 1],  # gemini-2.5-flash: 1.00/M token-hours
    }
    assert sum(minute[2] for minute in minutes) == 7  # not storage, not count_tokens; the failed one counts


@pytest.mark.postgres
def test_the_all_new_statement_claims_every_id_before_it_inserts_an_event(db):
    """Lock order near a month start: both statements make the boundary claims before the first event goes in (a
    one-time filter on the events' insert reads the claims), so that a batch on either path meeting another on one
    id waits for it instead of holding the event while waiting for the claim (a deadlock)."""
    from django.db import connection

    from usage.ingest import INSERT_AND_ROLL_UP, INSERT_NEW, PREPARE_STAGING

    for statement in (INSERT_NEW, INSERT_AND_ROLL_UP):
        with connection.cursor() as cursor:
            cursor.execute(PREPARE_STAGING)
            cursor.execute("EXPLAIN (COSTS OFF) " + statement, {"received_at": timezone.now()})
            plan = "\n".join(row[0] for row in cursor.fetchall())
        events = plan[plan.index("Insert on usage_usageevent") : plan.index("CTE appended")]
        assert "One-Time Filter" in events and "CTE Scan on claimed" in events, plan


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_staging_tables_are_made_once_per_connection_and_found_empty(event, caplog):
    """A connection makes its staging tables in its first batch that commits; later batches outside a caller's
    transaction neither make nor empty them (they empty themselves at commit). A first batch that rolled back (here
    the all-new statement, failing on a replayed id) made nothing: the next attempt makes them again; so does a
    batch that finds them gone."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.factories import make_billed_project, make_key, make_user
    from usage.models import PendingCharge

    key = make_key(make_billed_project(make_user("staging@example.com")))[0]
    assert ingest([event(key, event_id="old")]).accepted == 1
    connection.close()  # the next batch opens a connection without staging tables

    def run(batch):
        with CaptureQueriesContext(connection) as queries:
            report = ingest(batch)
        made = sum("CREATE TEMPORARY TABLE IF NOT EXISTS usage_staging" in q["sql"] for q in queries)
        emptied = sum("DELETE FROM usage_staging" in q["sql"] for q in queries)
        return report.accepted, report.duplicates, made, emptied

    with caplog.at_level("DEBUG", logger="usage.ingest"):
        assert run([event(key, event_id="old"), event(key, event_id="a")]) == (1, 1, 2, 0)  # made, rolled back, made
        assert run([event(key, event_id="b"), event(key, event_id="c")]) == (2, 0, 0, 0)
        assert run([event(key, event_id="d")]) == (1, 0, 0, 0)
        with connection.cursor() as cursor:
            cursor.execute("DISCARD TEMP")  # as a pooler's reset would: the next batch finds no staging tables
        assert run([event(key, event_id="e")]) == (1, 0, 1, 0)
        assert run([event(key, event_id="f")]) == (1, 0, 0, 0)
    # Written again: the first batch (it held a replay) and the one that found the tables gone. Every other batch
    # found the staging tables empty.
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "usage.ingest"] == [
        ("DEBUG", "usage ingestion: a batch of 2 events holds replayed ids"),
        ("INFO", "usage ingestion: this connection's staging tables are gone; making them again"),
    ]
    assert sorted(UsageEvent.objects.values_list("event_id", flat=True)) == ["a", "b", "c", "d", "e", "f", "old"]
    assert sorted(PendingCharge.objects.values_list("sku", "quantity", "events")) == [
        ("input", 7 * 1200, 7),
        ("output", 7 * 300, 7),
    ]


def test_the_report_audit_row_is_written_with_the_events_or_neither(paid_key, event, monkeypatch):
    from studio.models import AuditEvent
    from usage.models import FleetToken

    key, _ = paid_key
    token, _ = FleetToken.issue(name="audited fleet")

    def refuse(**_):
        raise RuntimeError("the audit table refused the row")

    with monkeypatch.context() as patched:
        patched.setattr(AuditEvent, "record", refuse)
        with pytest.raises(RuntimeError, match="refused"):
            ingest([event(key, event_id="first")], reporter=token)
    assert not UsageEvent.objects.exists()

    report = ingest(
        [event(key, event_id="first"), event(key, event_id="first"), event(key, event_id="second")], reporter=token
    )

    assert (report.accepted, report.duplicates) == (2, 1)
    assert sorted(UsageEvent.objects.values_list("event_id", flat=True)) == ["first", "second"]
    assert list(AuditEvent.objects.filter(action="usage.report").values_list("after", flat=True)) == [
        {"accepted": 2, "duplicates": 1, "rejected": 0}
    ]


def test_valid_events_reads_a_wholly_valid_body_as_parsing_and_validating_it_would(event, paid_key):
    """usage:report's fast path (pydantic's JSON parser, one pass) gives the events of the parse-then-validate path,
    and gives up (None) on any body that path would refuse or reject an event of at validation (ingest's own checks
    come after either). A number of more than 15 significant digits (cache_token_hours) goes through a float on both
    paths and may differ in its last digit: the API documents strings for exact values."""
    import orjson

    from usage.ingest import EVENTS, valid_events

    key, _ = paid_key
    events = [
        event(key),
        event(key, kind="cache_storage", cache_token_hours=12.345, input_tokens=0, output_tokens=0, status_code=None),
        event(key, kind="batch", cached_tokens=200, audio_input_tokens=100, cached_audio_tokens=50),
        event(key, kind="count_tokens", output_tokens=0, source="studio", reservation_id="r1_abc"),
    ]
    del events[1]["status_code"]
    body = orjson.dumps({"events": events, "note": "other members are ignored"})

    assert valid_events(body) == EVENTS.validate_python(orjson.loads(body)["events"])
    assert valid_events(body)[1].cache_token_hours == D("12.345")
    for wrong in (
        b"not json",
        b"[]",
        b'{"events": {}}',
        b'{"no events": []}',
        orjson.dumps({"events": [event(key)] * 1001}),
        orjson.dumps({"events": [event(key), {**event(key), "input_tokens": -1}]}),
        orjson.dumps({"events": [{**event(key), "unknown": 1}]}),
        orjson.dumps({"events": [{**event(key), "input_tokens": 1.0}]}),
        orjson.dumps({"events": [event(key)]})[:-1] + b', "x": NaN}',  # not JSON, which pydantic's parser takes
        orjson.dumps({"events": [event(key)]})[:-1] + b', "x": -Infinity}',
    ):
        assert valid_events(wrong) is None, wrong


@pytest.mark.postgres
def test_a_replayed_batch_writes_its_audit_row_once_with_its_duplicates(paid_key, event):
    """The all-new statement fails on the replayed id and rolls back (its audit row with it); the batch written again
    records one row."""
    from studio.models import AuditEvent
    from usage.models import FleetToken

    key, _ = paid_key
    token, _ = FleetToken.issue(name="audited fleet")
    assert ingest([event(key, event_id="first")], reporter=token).accepted == 1

    report = ingest([event(key, event_id="first"), event(key, event_id="second")], reporter=token)

    assert (report.accepted, report.duplicates) == (1, 1)
    assert list(AuditEvent.objects.filter(action="usage.report").order_by("pk").values_list("after", flat=True)) == [
        {"accepted": 1, "duplicates": 0, "rejected": 0},
        {"accepted": 1, "duplicates": 1, "rejected": 0},
    ]


@pytest.mark.postgres
def test_the_replay_statement_locks_in_the_order_python_sorts(db):
    """INSERT_NEW locks in the order staged (Python's sort of the event keys and of the lines); INSERT_AND_ROLL_UP
    sorts by event_key (bytea: compared byte by byte, unsigned, as Python compares bytes) and the lines' text with
    COLLATE "C", which is Python's order whatever the database's collation, so the two never wait crosswise."""
    from django.db import connection

    from usage.ingest import INSERT_AND_ROLL_UP, PREPARE_STAGING

    keys = [event_key(f"evt-{n}") for n in range(50)] + [b"\x80" + bytes(15), b"\x7f" + bytes(15), bytes(16)]
    assert len({key[0] >= 0x80 for key in keys}) == 2  # high and low first bytes
    with connection.cursor() as cursor:
        cursor.execute("SELECT x FROM unnest(%s::bytea[]) AS x ORDER BY x", [keys])
        assert [bytes(row[0]) for row in cursor.fetchall()] == sorted(keys)
        cursor.execute(PREPARE_STAGING)
        cursor.execute("EXPLAIN (VERBOSE, COSTS OFF) " + INSERT_AND_ROLL_UP, {"received_at": timezone.now()})
        plan = "\n".join(row[0] for row in cursor.fetchall())
    sort_keys = [line.strip() for line in plan.splitlines() if "Sort Key:" in line]
    assert "Sort Key: usage_staging.boundary, usage_staging.event_key" in sort_keys  # the claims
    assert "Sort Key: usage_staging_1.event_key" in sort_keys  # the events
    lines = [key for key in sort_keys if "account_id" in key]  # the statement lines: model and SKU are text
    assert len(lines) == 1 and 'model_id COLLATE "C"' in lines[0] and 'column1 COLLATE "C"' in lines[0], sort_keys
