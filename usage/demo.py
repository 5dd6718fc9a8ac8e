"""Demo fleet data (the usage part of `manage.py seed_demo`): the fleet token, and 90 days of usage
on the demo projects so that the Usage & Limits dashboard tells a story after `make run`. Idempotent.

The history is written through ingestion (`usage.ingest.ingest`), a week at a time with `now` at
the week's end (ingestion accepts events up to 7 days old), so events, rollups (folded at the end,
usage.fold) and pending charges are exactly what the fleet would have produced; each week's billed
usage is then charged the way the `charge_usage` job would have charged it, dated at the week's end.
Event ids are derived from the project and the hour ("demo-<project>-<UTC hour>-<n>"), and the
history ends where the demo was first seeded (see `history_end`), so a second seed inserts nothing
and charges nothing.

The story (`STORIES`): the Checkout assistant grows threefold over the 90 days on office hours in
Los Angeles, dips at weekends and had an incident `ERROR_SPIKE_DAYS_AGO` (three hours of mostly 5xx
answers and retries); the Upgrade candidate grows sixfold; the Support bot follows office hours in
India; Research lab runs nightly batches on weekdays; the Default Gemini Project reached the free
tier's requests-per-day limit of `RPD_MODEL` `RPD_DAYS_AGO` (a Pacific day), and the requests refused
after that are on record as the limiter's denials would be (`usage.denials.record_past`). Usage is
billed only from the projects' link to billing (`billing.demo.LINKED_DAYS_AGO`); before that it is
free. The Weekend prototype has usage only before its link, so that its account's promotional
credit is left for `simulate_traffic` to use up.

About 3,800 events in all: on SQLite (`make run`) ingestion writes each new rollup row by itself,
so seeding time grows with the rollup rows (minute, hour and day per project, key and model), about
8,000 here. Events carry generous token counts instead, so that the projects cost what busier ones
would.

Demo only: the fleet token below is public, like the demo passwords. Never seed production.
"""

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.utils import timezone

from billing import dunning
from billing.demo import LINKED_DAYS_AGO
from billing.models import BillingAccount, BillingPeriod
from billing.statements import charge_day, charge_statement, month_of, month_start, next_month, previous_month
from studio import keyformat
from studio.models import ApiKey, Project, Tier
from usage import charging
from usage.admission import quota_ids
from usage.denials import record_past
from usage.fold import fold
from usage.ingest import MAX_BATCH, OLDEST, ingest
from usage.models import FleetToken, UsageEvent, event_key
from usage.statements import issue_for_account

DEMO_FLEET_TOKEN = "flt_demo-fleet-token-for-make-run-only"

HISTORY_DAYS = 90
ISSUE_AFTER = timedelta(minutes=5)  # statements: the jobs run a few minutes past midnight, Pacific
PACIFIC = ZoneInfo("America/Los_Angeles")  # quota days are Pacific days
CHECKOUT = "gen-lang-client-0100000002"
DEFAULT = "gen-lang-client-0100000001"
PROTOTYPE = "gen-lang-client-0100000008"
ERROR_SPIKE_DAYS_AGO = 12  # a Los Angeles day of the Checkout assistant
ERROR_SPIKE_HOURS = (10, 11, 12)  # local hours: most answers are 5xx, and the app retries
ERROR_SPIKE_RETRIES = 12  # requests per hour added by the retries, on top of the usual traffic tripled
ERROR_SPIKE_SHARE = 0.6
RPD_DAYS_AGO = 3  # a Pacific day of the Default Gemini Project
RPD_MODEL = "gemini-2.5-pro"
RPD_LIMIT = 100  # the free tier's RPD of RPD_MODEL (usage.catalog_data)
RPD_DENIED = 37  # requests refused that day once the limit was reached
RPD_PACE = timedelta(seconds=90)  # one request every 90 s: within the free tier's RPM

# Relative traffic per local hour (0-23), 1 in the busiest hour.
OFFICE = (0.05, 0.03, 0.02, 0.02, 0.03, 0.05, 0.15, 0.35, 0.65, 0.9, 1, 0.95,
          0.8, 0.9, 1, 0.95, 0.85, 0.7, 0.45, 0.3, 0.2, 0.15, 0.1, 0.07)  # fmt: skip
EVENING = (0.3, 0.15, 0.08, 0.05, 0.05, 0.05, 0.1, 0.2, 0.3, 0.35, 0.4, 0.45,
           0.5, 0.5, 0.45, 0.45, 0.5, 0.6, 0.75, 0.9, 1, 0.95, 0.75, 0.5)  # fmt: skip
NIGHTLY = tuple(1 if 1 <= hour <= 4 else 0.05 for hour in range(24))  # batch jobs at night
STEADY = tuple(0.6 + 0.4 * math.sin(math.pi * hour / 23) for hour in range(24))


@dataclass(frozen=True)
class Story:
    """How one demo project was used: events per hour = per_hour × hours[local hour] × the day's
    factor (weekday or weekend) × growth over the 90 days (from 1 to `growth`, exponentially)."""

    project_id: str
    zone: str
    hours: tuple[float, ...]
    per_hour: float  # events in the busiest hour of a weekday 90 days ago
    growth: float
    weekend: float
    models: tuple[tuple[str, float, int, int], ...]  # (model id, share of events, median input, median output)
    keys: tuple[tuple[str, float], ...]  # (key name, share of events)
    weekday: float = 1.0
    cached: float = 0.0  # share of events that read a third of their prompt from a context cache
    kind: str = "generate"
    before_link_only: bool = False  # free usage only, before the project was linked to billing


STORIES = (
    Story(
        DEFAULT, "America/Los_Angeles", EVENING, per_hour=0.25, growth=2.5, weekend=1.3,
        models=(("gemini-2.5-flash", 0.7, 3_000, 600), (RPD_MODEL, 0.3, 6_000, 1_200)),
        keys=(("Default API key", 1),),
    ),
    Story(
        CHECKOUT, "America/Los_Angeles", OFFICE, per_hour=1, growth=3, weekend=0.35,
        models=(("gemini-2.5-flash", 0.8, 110_000, 8_000), ("gemini-2.5-flash-lite", 0.2, 70_000, 5_000)),
        keys=(("Production", 0.9), ("Staging", 0.1)), cached=0.3,
    ),
    Story(
        "gen-lang-client-0100000003", "Asia/Kolkata", OFFICE, per_hour=0.33, growth=1.5, weekend=0.6,
        models=(("gemini-2.0-flash", 1, 4_000, 500),), keys=(("Support bot key", 1),),
    ),
    Story(
        "gen-lang-client-0100000004", "Europe/London", STEADY, per_hour=0.2, growth=1.3, weekend=0.8,
        models=(("gemini-embedding-001", 0.6, 1_500, 0), ("gemini-2.5-flash-lite", 0.4, 100_000, 4_000)),
        keys=(("Ranking service", 1),),
    ),
    Story(
        "gen-lang-client-0100000005", "UTC", NIGHTLY, per_hour=1, growth=1.2, weekend=0.2,
        models=(("gemini-2.5-pro", 0.5, 140_000, 20_000), ("gemini-2.5-flash", 0.5, 140_000, 20_000)),
        keys=(("Batch jobs", 1),), kind="batch",
    ),
    Story(
        "gen-lang-client-0100000006", "America/Los_Angeles", EVENING, per_hour=0.16, growth=6, weekend=1.2,
        models=(("gemini-2.5-flash", 1, 60_000, 4_000),), keys=(("Mobile app", 1),), cached=0.2,
    ),
    Story(
        "gen-lang-client-0100000007", "America/Los_Angeles", OFFICE, per_hour=0.2, growth=1, weekend=0.1,
        models=(("gemini-2.0-flash-lite", 1, 8_000, 800),), keys=(("Dashboards", 1),),
    ),
    Story(
        PROTOTYPE, "America/Los_Angeles", EVENING, per_hour=0.8, growth=1, weekend=1, weekday=0,
        models=(("gemini-2.5-flash", 1, 10_000, 1_000),), keys=(("Prototype key", 1),), before_link_only=True,
    ),
)  # fmt: skip


def seed_usage():
    """The demo fleet token and the usage history; returns the token."""
    FleetToken.objects.get_or_create(
        secret_hash=keyformat.hash_key(DEMO_FLEET_TOKEN),
        defaults={"name": "Demo fleet (make run)", "prefix": DEMO_FLEET_TOKEN[:12]},
    )
    seed_history()
    seed_statements()
    return DEMO_FLEET_TOKEN


def seed_statements(*, now=None) -> list:
    """Every demo account's statements of the history's past months, issued on the 1st and charged
    on the 2nd as the jobs would have done (the demo's cards pay); returns those issued now."""
    now = now or timezone.now()
    month, last = month_of(history_end() - timedelta(days=HISTORY_DAYS)), previous_month(month_of(now))
    issued = []
    while month <= last:
        for account in BillingAccount.objects.filter(administrators__isnull=False).distinct().order_by("pk"):
            statement, new = issue_for_account(account.pk, month, at=month_start(next_month(month)) + ISSUE_AFTER)
            if new:
                issued.append(statement)
            if charge_day(month) + ISSUE_AFTER <= now:
                charge_statement(statement, at=charge_day(month) + ISSUE_AFTER)
                _retry_as_dunning_would_have(statement, now=now)
        month = next_month(month)
    return issued


def _retry_as_dunning_would_have(statement, *, now):
    """A statement whose charge failed (the demo's declined card) is retried at each scheduled time
    that has come, as the retry_statement_payments job would have done; the last failure suspends."""
    statement.refresh_from_db()
    for retry in range(1, dunning.LAST_RETRY + 1):
        due = statement.retry_at(retry)
        if due is not None and due + ISSUE_AFTER <= now:
            dunning.retry_statement(statement, at=due + ISSUE_AFTER)


def history_end() -> datetime:
    """When the history ends: the moment the demo was first seeded, which billing/demo.py recorded
    as the projects' link to billing, LINKED_DAYS_AGO earlier. Later seeds find the same moment,
    so they derive the same events (and the dashboard's story does not move)."""
    linked_at = (
        BillingPeriod.objects.filter(project__project_id=CHECKOUT)
        .order_by("starts_at")
        .values_list("starts_at", flat=True)
        .first()
    )
    return (linked_at + timedelta(days=LINKED_DAYS_AGO)).replace(second=0, microsecond=0)


def seed_history() -> int:
    """Write the 90 days of usage through ingestion and charge what is billed; returns the number
    of events inserted (0 when seeded before)."""
    end = history_end()
    marker = _rpd_event_id(end, 0)
    if UsageEvent.objects.filter(event_key=event_key(marker)).exists():
        return 0  # written before: seed_demo commits all of it or nothing
    linked_at = end - timedelta(days=LINKED_DAYS_AGO)
    # Keys revoked or renamed since the demo was seeded get no history (ingestion would refuse a revoked key's).
    keys = {
        (project_id, name): str(pk)
        for pk, project_id, name in ApiKey.objects.filter(
            project__project_id__in=[story.project_id for story in STORIES], revoked_at__isnull=True
        ).values_list("pk", "project__project_id", "name")
    }
    events = []
    for story in STORIES:
        events += _story_events(story, end, linked_at, keys)
    events += _rpd_day_events(end, keys.get((DEFAULT, "Default API key")))
    events.sort(key=lambda event: (event["occurred_at"], event["event_id"]))
    # Only the accounts the history bills are charged (never the prototype's: its credit is for simulate_traffic).
    billed = set(
        BillingPeriod.objects.filter(
            project__project_id__in=[story.project_id for story in STORIES if not story.before_link_only],
            account__isnull=False,
        ).values_list("account_id", flat=True)
    )
    inserted = _ingest_by_week(events, end - timedelta(days=HISTORY_DAYS), end, billed)
    fold()  # PostgreSQL: the last batches' minute sums into the rollups now, not at the next charge run
    # New in this run: denials are added up, not keyed.
    if UsageEvent.objects.filter(event_key=event_key(marker)).exists():
        _record_rpd_denials(end)
    return inserted


def _story_events(story: Story, end: datetime, linked_at: datetime, keys: dict) -> list[dict]:
    """The story's events in the HISTORY_DAYS before `end`, hour by hour; each hour's from its own seed."""
    zone = ZoneInfo(story.zone)
    first = end - timedelta(days=HISTORY_DAYS)
    spike_day = end.astimezone(PACIFIC).date() - timedelta(days=ERROR_SPIKE_DAYS_AGO)
    rpd_day = end.astimezone(PACIFIC).date() - timedelta(days=RPD_DAYS_AGO)
    stop = linked_at - timedelta(days=1) if story.before_link_only else end
    events = []
    slot = first.replace(minute=0)
    while slot < stop:
        local = slot.astimezone(zone)
        rng = random.Random(f"{story.project_id}:{slot:%Y%m%d%H}")  # the same hour always gets the same events
        progress = (slot - first) / (end - first)
        expected = story.per_hour * story.hours[local.hour] * story.growth**progress
        expected *= story.weekend if local.weekday() >= 5 else story.weekday
        spike = story.project_id == CHECKOUT and local.date() == spike_day and local.hour in ERROR_SPIKE_HOURS
        if spike:
            expected = expected * 3 + ERROR_SPIKE_RETRIES
        count = int(expected) + (rng.random() < expected % 1)
        models = story.models
        if story.project_id == DEFAULT and slot.astimezone(PACIFIC).date() == rpd_day:
            models = models[:1]  # that day's RPD_MODEL requests are the ones of _rpd_day_events
        for n in range(count):
            occurred_at = slot + timedelta(seconds=rng.randrange(3600))
            if not first <= occurred_at < stop:
                continue
            model, _, input_median, output_median = rng.choices(models, weights=[m[1] for m in models])[0]
            key_id = keys.get((story.project_id, rng.choices(story.keys, weights=[k[1] for k in story.keys])[0][0]))
            if spike and rng.random() < ERROR_SPIKE_SHARE:
                status = 503
            else:
                status = rng.choices((200, 400, 500), weights=(985, 10, 5))[0]
            input_tokens = min(int(rng.lognormvariate(math.log(input_median), 0.6)), 180_000)
            output = int(rng.lognormvariate(math.log(output_median), 0.5)) if output_median else 0
            if key_id is None:
                continue
            events.append(
                _event(
                    f"demo-{story.project_id[-10:]}-{slot:%Y%m%d%H}-{n}",
                    key_id,
                    model,
                    story.kind,
                    status,
                    occurred_at,
                    input_tokens,
                    output if status < 400 else 0,
                    input_tokens // 3 if rng.random() < story.cached else 0,
                )
            )
        slot += timedelta(hours=1)
    return events


def _rpd_day(end: datetime):
    """The Pacific day that hit RPD, and the UTC moment of its first request (09:00 there)."""
    day = end.astimezone(PACIFIC).date() - timedelta(days=RPD_DAYS_AGO)
    return day, datetime.combine(day, time(9), tzinfo=PACIFIC).astimezone(UTC)


def _rpd_event_id(end: datetime, n: int) -> str:
    return f"demo-{DEFAULT[-10:]}-{_rpd_day(end)[0]:%Y%m%d}-rpd-{n}"


def _rpd_day_events(end: datetime, key_id: str | None) -> list[dict]:
    """RPD_LIMIT requests of RPD_MODEL on one Pacific day, one every RPD_PACE from 09:00, so the
    project reached its requests-per-day limit at about half past eleven."""
    if key_id is None:
        return []
    day, first = _rpd_day(end)
    rng = random.Random(f"{DEFAULT}:rpd:{day}")
    return [
        _event(
            _rpd_event_id(end, n),
            key_id,
            RPD_MODEL,
            "generate",
            200,
            first + RPD_PACE * n,
            int(rng.lognormvariate(math.log(6_000), 0.5)),
            int(rng.lognormvariate(math.log(1_200), 0.5)),
            0,
        )
        for n in range(RPD_LIMIT)
    ]


def _record_rpd_denials(end: datetime) -> None:
    """RPD_DENIED requests refused by the free tier's RPD quota after the day's last admitted one:
    the app kept retrying, one to three requests every few minutes, as the limiter would have
    recorded them."""
    day, first = _rpd_day(end)
    project = Project.objects.get(project_id=DEFAULT)
    quota_id = quota_ids(Tier.FREE)["rpd"]
    rng = random.Random(f"{DEFAULT}:denied:{day}")
    minute, left = first + RPD_PACE * RPD_LIMIT, RPD_DENIED
    while left:
        count = min(left, rng.randint(1, 3))
        record_past(project, RPD_MODEL, quota_id, minute, count)
        left -= count
        minute += timedelta(minutes=rng.randint(3, 12))


def _event(event_id, key_id, model, kind, status, occurred_at, input_tokens, output_tokens, cached_tokens) -> dict:
    """An event as the fleet reports it to usage:report."""
    return {
        "event_id": event_id,
        "key_id": key_id,
        "model": model,
        "kind": kind,
        "status_code": status,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cached_tokens": cached_tokens,
        "occurred_at": occurred_at,
    }


def _ingest_by_week(events: list[dict], start: datetime, end: datetime, accounts: set[int]) -> int:
    """Ingest the events a week at a time with `now` at the week's end, then charge that week's
    billed usage of `accounts` as the charge job would have, at the week's end. Returns the events
    inserted."""
    inserted = 0
    lower = 0
    week_end = start
    while week_end < end:
        week_end = min(week_end + OLDEST, end)
        upper = lower
        while upper < len(events) and events[upper]["occurred_at"] < week_end:
            upper += 1
        week = events[lower:upper]
        accepted = 0
        for first in range(0, len(week), MAX_BATCH):
            report = ingest(week[first : first + MAX_BATCH], now=week_end)
            if report.rejected:
                raise ValueError(f"demo usage rejected: {report.rejected[:3]}")
            accepted += report.accepted
        if accepted:
            for account_id in sorted(accounts.intersection(charging.chargeable_accounts())):
                charging.charge_account(account_id, at=week_end)
        inserted += accepted
        lower = upper
    return inserted
