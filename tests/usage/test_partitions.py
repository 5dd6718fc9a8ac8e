"""Raw usage events in monthly partitions (issue 14): the idempotency rule at a month boundary, partitions made ahead
and on demand, retention of final months, reconciliation after a drop, the migration.

The rule (usage.partitions): a report is a duplicate iff an event with its id is stored with the same Pacific month,
or both lie within REPLAY_WINDOW (7 days 5 minutes) of the same month start. The dates are in 2031, far from the
partitions the test database was migrated with, so that each PostgreSQL test decides which partitions exist."""

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

import usage.jobs
from billing.models import Statement, UsageLine
from billing.statements import month_of, month_start, next_month
from studio.models import AuditEvent
from tests.concurrency import at_once
from tests.factories import make_billed_project, make_key, make_project, make_staff, make_user
from usage import partitions
from usage.charging import charge_account
from usage.fold import fold
from usage.ingest import ingest
from usage.models import PendingCharge, UsageEvent, UsageRollup
from usage.partitions import GUARD, RAW, Zones, guard_boundary
from usage.statements import MonthCheck, issue_for_account, reconcile

LA = ZoneInfo("America/Los_Angeles")
NOVEMBER, DECEMBER = date(2031, 11, 1), date(2031, 12, 1)
LAST_OF_NOVEMBER = datetime(2031, 11, 30, 23, 59, 59, 999999, tzinfo=LA)  # 2031-12-01 07:59:59.999999 UTC
FIRST_OF_DECEMBER = datetime(2031, 12, 1, tzinfo=LA)  # 08:00 UTC
CLOCK = datetime(2031, 12, 1, 0, 30, tzinfo=LA)  # both of them acceptable


def pacific(*args):
    return datetime(*args, tzinfo=LA)


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def send(event, key, at, *, now=CLOCK, event_id="evt-edge"):
    report = ingest([event(key, event_id=event_id, occurred_at=at.isoformat())], now=now)
    assert report.rejected == []
    return report.accepted, report.duplicates


def stored(event_id="evt-edge") -> list[tuple[str, date]]:
    return sorted(
        (when.astimezone(LA).isoformat(), month)
        for when, month in UsageEvent.objects.filter(event_id=event_id).values_list("occurred_at", "month")
    )


def claims() -> list[tuple[date, str]]:
    """(boundary, id) of each claim, its key shown as the id of the stored event with that key (else in hex)."""
    ids = {bytes(key): event_id for event_id, key in UsageEvent.objects.values_list("event_id", "event_key")}
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT boundary, event_key FROM {GUARD}")
        return sorted((boundary, ids.get(bytes(key), bytes(key).hex())) for boundary, key in cursor.fetchall())


def names(table: str) -> list[str]:
    return [partition.name for partition in partitions.partitions(table)]


@pytest.fixture
def no_partitions(db):
    """PostgreSQL: no partition of either table, inside the test's transaction (rolled back after it)."""
    with connection.cursor() as cursor:
        for table in (RAW, GUARD):
            for partition in partitions.partitions(table):
                cursor.execute(f"DROP TABLE {partition.name}")


# The window around a month start


def test_guard_boundary_is_the_month_start_within_the_replay_window_either_side():
    start = utc(2031, 12, 1, 8)  # midnight, Pacific (PST)
    window = timedelta(days=7, minutes=5)
    micro = timedelta(microseconds=1)

    assert [
        guard_boundary(moment)
        for moment in (
            start - window - micro,
            start - window,
            start - micro,
            start,
            start + window - micro,
            start + window,
            utc(2031, 12, 15, 12),
        )
    ] == [None, DECEMBER, DECEMBER, DECEMBER, DECEMBER, None, None]
    assert [month_of(moment) for moment in (start - micro, start)] == [NOVEMBER, DECEMBER]


def test_the_replay_window_is_counted_in_absolute_time_across_daylight_saving():
    # 1 November 2031 starts at 07:00 UTC (PDT); the clocks go back on the 2nd, so 7 days 5 minutes later is
    # 23:05 PST on the 7th: by the wall clock it would be an hour later.
    assert guard_boundary(utc(2031, 11, 8, 7, 4, 59, 999999)) == NOVEMBER
    assert guard_boundary(utc(2031, 11, 8, 7, 5)) is None
    assert guard_boundary(utc(2031, 10, 25, 6, 55)) == NOVEMBER
    assert guard_boundary(utc(2031, 10, 25, 6, 54, 59, 999999)) is None


def test_zones_agree_with_month_of_and_guard_boundary():
    """Ingestion stages each event with its month and boundary from Zones (usage.ingest._store_postgres)."""
    rng = random.Random(14)
    start = utc(2031, 1, 1)
    moments = [start + timedelta(seconds=rng.uniform(0, 366 * 86400)) for _ in range(5000)]
    moments += [utc(2031, 12, 1, 8) + timedelta(days=7, minutes=5, microseconds=delta) for delta in (-1, 0, 1)]
    zones = Zones()

    assert [zones.of(moment) for moment in moments] == [(month_of(m), guard_boundary(m)) for m in moments]


# The rule at a month boundary (both databases; PostgreSQL also shows the partitions and claims)


def test_events_either_side_of_a_month_start_are_stored_in_their_own_months(paid_key, event, on_postgres):
    key, _ = paid_key
    assert send(event, key, LAST_OF_NOVEMBER, event_id="evt-november") == (1, 0)
    assert send(event, key, FIRST_OF_DECEMBER, event_id="evt-december") == (1, 0)

    assert list(UsageEvent.objects.order_by("event_id").values_list("event_id", "month")) == [
        ("evt-december", DECEMBER),
        ("evt-november", NOVEMBER),
    ]
    if on_postgres:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT event_id, tableoid::regclass::text FROM {RAW} ORDER BY 1")
            assert cursor.fetchall() == [
                ("evt-december", "usage_usageevent_p203112"),
                ("evt-november", "usage_usageevent_p203111"),
            ]
        assert claims() == [(DECEMBER, "evt-december"), (DECEMBER, "evt-november")]


@pytest.mark.parametrize(
    ("first", "replays"),
    [
        (LAST_OF_NOVEMBER, [LAST_OF_NOVEMBER, FIRST_OF_DECEMBER, pacific(2031, 12, 7, 12)]),
        (FIRST_OF_DECEMBER, [FIRST_OF_DECEMBER, LAST_OF_NOVEMBER, pacific(2031, 11, 24, 12)]),
    ],
)
def test_a_replay_is_a_duplicate_on_its_side_of_the_boundary_and_moved_across_it(paid_key, event, first, replays):
    key, _ = paid_key
    assert send(event, key, first) == (1, 0)
    rollups = list(UsageRollup.objects.order_by("pk").values_list("granularity", "bucket_start", "requests", "cost"))
    pending = list(PendingCharge.objects.order_by("pk").values_list("sku", "events", "amount_nanos"))

    # The same report, and reports of it moved by 1 µs and by days across the month start, each within the window.
    assert [send(event, key, at, now=max(at + timedelta(minutes=1), CLOCK)) for at in replays] == [(0, 1)] * 3

    assert stored() == [(first.isoformat(), month_of(first))]
    assert list(UsageRollup.objects.order_by("pk").values_list("granularity", "bucket_start", "requests", "cost")) == (
        rollups
    )
    assert list(PendingCharge.objects.order_by("pk").values_list("sku", "events", "amount_nanos")) == pending


def test_a_replay_is_a_duplicate_anywhere_in_its_month(paid_key, event):
    key, _ = paid_key
    assert send(event, key, pacific(2031, 11, 10, 12), now=pacific(2031, 11, 11)) == (1, 0)

    assert send(event, key, pacific(2031, 11, 16, 12), now=pacific(2031, 11, 17)) == (0, 1)
    assert stored() == [("2031-11-10T12:00:00-08:00", NOVEMBER)]


def test_one_id_in_two_months_further_apart_than_the_window_is_two_events(paid_key, event):
    """Not two reports of one event: no moment accepts both (the rule's limit, docs/ARCHITECTURE.md)."""
    key, _ = paid_key
    assert send(event, key, pacific(2031, 11, 20, 12), now=pacific(2031, 11, 21)) == (1, 0)

    assert send(event, key, pacific(2031, 12, 10, 12), now=pacific(2031, 12, 11)) == (1, 0)
    assert stored() == [("2031-11-20T12:00:00-08:00", NOVEMBER), ("2031-12-10T12:00:00-08:00", DECEMBER)]


def test_a_replay_moved_into_the_window_within_its_month_leaves_no_claim(paid_key, event, on_postgres):
    """The id's event lies away from the boundary: the replay near it is a duplicate by the month key, and the claim
    it made is given back, so that the id is not taken near the boundary by an event that is not there."""
    key, _ = paid_key
    assert send(event, key, pacific(2031, 11, 15, 12), now=pacific(2031, 11, 16)) == (1, 0)

    assert send(event, key, pacific(2031, 11, 28, 12), now=pacific(2031, 11, 29)) == (0, 1)
    if on_postgres:
        assert claims() == []
    # Further than the window from the stored event, in the next month: another event by the rule.
    assert send(event, key, pacific(2031, 12, 2, 12), now=pacific(2031, 12, 3)) == (1, 0)

    assert stored() == [("2031-11-15T12:00:00-08:00", NOVEMBER), ("2031-12-02T12:00:00-08:00", DECEMBER)]
    if on_postgres:
        assert claims() == [(DECEMBER, "evt-edge")]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_replays_across_the_boundary_store_the_event_once(paid_key, event):
    key, _ = paid_key
    partitions.ensure([NOVEMBER, DECEMBER])  # the next month's partition exists: the replays meet in the claims
    try:

        def report(index: int) -> tuple[int, int]:
            at = (LAST_OF_NOVEMBER, FIRST_OF_DECEMBER)[index % 2]
            return send(event, key, at)

        results, errors = at_once(report, 6)
        fold()  # a batch whose own fold found another under way waits for the next fold (usage.fold)

        assert errors == []
        assert sorted(results) == [(0, 1)] * 5 + [(1, 0)]
        assert UsageEvent.objects.filter(event_id="evt-edge").count() == 1
        assert UsageRollup.objects.get(granularity="day").requests == 1
        assert {sku: events for sku, events in PendingCharge.objects.values_list("sku", "events")} == {
            "input": 1,
            "output": 1,
        }
        assert claims() == [(DECEMBER, "evt-edge")]
    finally:
        for table in (RAW, GUARD):
            for partition in partitions.partitions(table):
                if partition.month.year >= 2031:
                    partitions.drop(partition, reason="test")


def test_the_admin_lists_and_shows_events_of_both_months(paid_key, event, client):
    """Django keeps `id` as the primary key; on PostgreSQL the table's is (id, month): the admin finds events by id."""
    key, _ = paid_key
    send(event, key, LAST_OF_NOVEMBER, event_id="evt-november")
    send(event, key, FIRST_OF_DECEMBER, event_id="evt-december")
    client.force_login(make_staff("root@staff.example", superuser=True))

    listing = client.get("/admin/usage/usageevent/")
    pages = [
        client.get(f"/admin/usage/usageevent/{pk}/change/")
        for pk in UsageEvent.objects.order_by("pk").values_list("pk", flat=True)
    ]

    assert listing.status_code == 200
    assert [e.event_id for e in listing.context["cl"].result_list] == ["evt-december", "evt-november"]
    assert [(page.status_code, page.context["original"].event_id) for page in pages] == [
        (200, "evt-november"),
        (200, "evt-december"),
    ]


# Partitions made ahead and on demand


@pytest.mark.postgres
def test_partitions_are_created_ahead_once(no_partitions):
    created = partitions.ensure_ahead(now=pacific(2031, 7, 3, 12), ahead=2)

    # 3 July: events of late June are still accepted.
    assert created == [
        "usage_usageevent_p203106",
        "usage_usageevent_p203107",
        "usage_usageevent_p203108",
        "usage_usageevent_p203109",
        "usage_usageeventguard_p203106",
        "usage_usageeventguard_p203107",
        "usage_usageeventguard_p203108",
        "usage_usageeventguard_p203109",
        "usage_usageeventguard_p203110",
    ]
    assert partitions.ensure_ahead(now=pacific(2031, 7, 3, 12), ahead=2) == []
    assert [(p.name, p.month, p.attached, p.detach_pending) for p in partitions.partitions(RAW)] == [
        ("usage_usageevent_p203106", date(2031, 6, 1), True, False),
        ("usage_usageevent_p203107", date(2031, 7, 1), True, False),
        ("usage_usageevent_p203108", date(2031, 8, 1), True, False),
        ("usage_usageevent_p203109", date(2031, 9, 1), True, False),
    ]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = 'usage_usageevent_p203107'")
        assert cursor.fetchone() == ("FOR VALUES FROM ('2031-07-01') TO ('2031-08-01')",)
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'usage_usageevent_p203107' ORDER BY 1")
        assert sorted(row[0].split(" ON ")[1] for row in cursor.fetchall()) == [
            "public.usage_usageevent_p203107 USING btree (event_key, month)",
            "public.usage_usageevent_p203107 USING btree (id, month)",
        ]  # and no (project_id, occurred_at): migration 0012 dropped it
    # From the 8th, June's events are no longer accepted: the job asks for July onwards.
    assert partitions.ensure_ahead(now=pacific(2031, 7, 9), ahead=3) == [
        "usage_usageevent_p203110",
        "usage_usageeventguard_p203111",
    ]


@pytest.mark.postgres
def test_the_ensure_job_creates_partitions_ahead_and_says_so(no_partitions, settings):
    settings.USAGE_PARTITIONS_AHEAD = 1
    out = StringIO()
    with time_machine.travel(pacific(2031, 7, 20, 12), tick=False):
        call_command("ensure_usage_partitions", stdout=out)
        usage.jobs.ensure_usage_partitions.call_local()  # the daily job: nothing left to create

    assert out.getvalue().splitlines() == [
        "created usage_usageevent_p203107",
        "created usage_usageevent_p203108",
        "created usage_usageeventguard_p203107",
        "created usage_usageeventguard_p203108",
        "created usage_usageeventguard_p203109",
        "Created 5 partition(s); raw events have partitions for 2031-07 to 2031-08 (2 months).",
    ]
    assert names(RAW) == ["usage_usageevent_p203107", "usage_usageevent_p203108"]


@pytest.mark.postgres
def test_an_event_for_a_month_without_a_partition_is_stored(no_partitions, paid_key, event, caplog):
    key, _ = paid_key

    assert send(event, key, LAST_OF_NOVEMBER, event_id="evt-late") == (1, 0)

    assert stored("evt-late") == [("2031-11-30T23:59:59.999999-08:00", NOVEMBER)]
    assert names(RAW) == ["usage_usageevent_p203111"]
    assert names(GUARD) == ["usage_usageeventguard_p203111", "usage_usageeventguard_p203112"]
    assert [r.getMessage() for r in caplog.records if r.name == "usage.ingest"] == [
        "usage ingestion: a batch of 1 events found no partition for its month; created usage_usageevent_p203111, "
        "usage_usageeventguard_p203111, usage_usageeventguard_p203112, retrying"
    ]
    assert send(event, key, LAST_OF_NOVEMBER, event_id="evt-late") == (0, 1)


@pytest.mark.postgres
def test_a_batch_still_without_its_partition_after_a_repair_is_repaired_once_more(
    no_partitions, paid_key, event, caplog, monkeypatch
):
    """The first repair finds nothing to make (as when another process made the partitions meanwhile) and the write
    fails again: a second repair, then the write; a third failure would be raised."""
    from usage import ingest as ingestion

    key, _ = paid_key
    ensure_for = partitions.ensure_for
    calls = []

    def first_finds_nothing(moments):
        calls.append(1)
        return [] if len(calls) == 1 else ensure_for(moments)

    monkeypatch.setattr(ingestion.partitions, "ensure_for", first_finds_nothing)

    assert send(event, key, LAST_OF_NOVEMBER, event_id="evt-late") == (1, 0)

    assert stored("evt-late") == [("2031-11-30T23:59:59.999999-08:00", NOVEMBER)]
    assert [r.getMessage() for r in caplog.records if r.name == "usage.ingest"] == [
        "usage ingestion: a batch of 1 events found no partition for its month; created none (made meanwhile), "
        "retrying",
        "usage ingestion: a batch of 1 events found no partition for its month; created usage_usageevent_p203111, "
        "usage_usageeventguard_p203111, usage_usageeventguard_p203112, retrying",
    ]


@pytest.mark.postgres
def test_a_batch_whose_partition_never_comes_fails_after_two_repairs(no_partitions, paid_key, event, monkeypatch):
    from django.db import IntegrityError

    from usage import ingest as ingestion

    key, _ = paid_key
    monkeypatch.setattr(ingestion.partitions, "ensure_for", lambda moments: [])

    with pytest.raises(IntegrityError, match="no partition of relation"):
        send(event, key, LAST_OF_NOVEMBER, event_id="evt-late")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_for_a_missing_month_all_store_their_events(paid_key, event):
    key, _ = paid_key
    try:
        results, errors = at_once(lambda index: send(event, key, LAST_OF_NOVEMBER, event_id=f"evt-{index}"), 4)

        assert (errors, sorted(results)) == ([], [(1, 0)] * 4)
        assert sorted(UsageEvent.objects.values_list("event_id", flat=True)) == ["evt-0", "evt-1", "evt-2", "evt-3"]
        assert [name for name in names(RAW) if "2031" in name] == ["usage_usageevent_p203111"]
    finally:
        for table in (RAW, GUARD):
            for partition in partitions.partitions(table):
                if partition.month.year >= 2031:
                    partitions.drop(partition, reason="test")


def test_the_commands_say_sqlite_keeps_one_table(on_postgres):
    if on_postgres:
        pytest.skip("SQLite only: PostgreSQL has partitions")
    out = StringIO()
    call_command("ensure_usage_partitions", stdout=out)
    call_command("drop_usage_partitions", "--dry-run", stdout=out)

    assert out.getvalue().splitlines() == [
        "This database keeps usage events in one table (SQLite): no partitions to create.",
        "This database keeps usage events in one table (SQLite): nothing is dropped.",
    ]
    assert partitions.raw_events_kept(date(2020, 1, 1)) is True


# Retention


@pytest.fixture
def history(no_partitions, event):
    """January 2031: account A's usage, charged and on its January statement, and a late event of 31 January on its
    February statement (final). February: A's, on that statement, and account B's, still pending. March: A's,
    charged but on no statement yet. April: a free project's only (nothing billed). June: A's, within the retention
    window at the clock (10 August, USAGE_RAW_RETENTION_MONTHS=3: kept from May)."""
    owner = make_user("retention@example.com")
    paid_a = make_billed_project(owner, name="A", since=pacific(2030, 12, 31))
    paid_b = make_billed_project(owner, name="B", since=pacific(2030, 12, 31))
    free = make_project(owner, name="Free")
    keys = {name: make_key(project)[0] for name, project in (("a", paid_a), ("b", paid_b), ("free", free))}
    a, b = paid_a.billing.account, paid_b.billing.account
    # 0.30 + 0.25 USD exactly (flash: 0.30/M input, 2.50/M output): nothing under a micro-dollar stays pending.
    tokens = {"input_tokens": 1_000_000, "output_tokens": 100_000}
    plan = [
        ("a", pacific(2031, 1, 15, 12), pacific(2031, 1, 15, 12), date(2031, 1, 1)),
        ("a", pacific(2031, 1, 31, 23), pacific(2031, 2, 3, 12), None),  # late: after January's statement
        ("b", pacific(2031, 2, 15, 12), None, None),
        ("a", pacific(2031, 2, 20, 12), pacific(2031, 2, 20, 12), date(2031, 2, 1)),
        ("a", pacific(2031, 3, 15, 12), pacific(2031, 3, 15, 12), None),
        ("free", pacific(2031, 4, 15, 12), None, None),
        ("a", pacific(2031, 6, 15, 12), pacific(2031, 6, 15, 12), None),
    ]
    for number, (name, at, charged_at, statement_month) in enumerate(plan):
        event_ = event(keys[name], event_id=f"evt-{number}", occurred_at=at.isoformat(), **tokens)
        assert ingest([event_], now=charged_at or at).accepted == 1
        if charged_at:
            charge_account(a.pk, at=charged_at)
        if statement_month:
            issue_for_account(a.pk, statement_month, at=month_start(next_month(statement_month)) + timedelta(minutes=5))
    return a, b


def dry_run_lines(a, b, sizes) -> list[str]:
    return [
        f"would drop usage_usageevent_p203101 (2031-01, ~0 rows, {sizes[1]} MiB): all its usage is on issued "
        "statements (1 account(s) with usage of 2031-01)",
        f"kept usage_usageevent_p203102 (2031-02, ~0 rows, {sizes[2]} MiB): 2 pending charge line(s) not charged yet "
        f"(accounts {b.pk})",
        f"kept usage_usageevent_p203103 (2031-03, ~0 rows, {sizes[3]} MiB): 2 usage line(s) charged but on no "
        f"issued statement yet (accounts {a.pk})",
        f"would drop usage_usageevent_p203104 (2031-04, ~0 rows, {sizes[4]} MiB): no billed usage: no statement "
        "needs its events",
        f"kept usage_usageevent_p203106 (2031-06, ~0 rows, {sizes[6]} MiB): within USAGE_RAW_RETENTION_MONTHS (3): "
        "raw events are kept from 2031-05 on",
    ] + [
        f"would drop usage_usageeventguard_p2031{month:02d}: the events within 7 days 5 minutes of "
        f"2031-{month:02d}-01 (Pacific) are all older than ingestion accepts"
        for month in (1, 2, 3, 4, 5, 6, 7)
    ]


@pytest.mark.postgres
def test_retention_dry_run_says_what_it_would_drop_and_changes_nothing(history, settings):
    a, b = history
    settings.USAGE_RAW_RETENTION_MONTHS = 3
    sizes = {p.month.month: f"{p.bytes / 2**20:,.0f}" for p in partitions.partitions(RAW)}
    before = (names(RAW), names(GUARD), UsageEvent.objects.count(), AuditEvent.objects.count())
    out = StringIO()

    with time_machine.travel(pacific(2031, 8, 10), tick=False):
        call_command("drop_usage_partitions", "--dry-run", stdout=out)

    assert out.getvalue().splitlines() == [
        *dry_run_lines(a, b, sizes),
        "Would drop 2 month(s) of raw events (0 MiB) and 7 boundary claim partition(s); kept 3 month(s) "
        "(USAGE_RAW_RETENTION_MONTHS=3).",
    ]
    assert (names(RAW), names(GUARD), UsageEvent.objects.count(), AuditEvent.objects.count()) == before


@pytest.mark.postgres
def test_retention_drops_only_final_months_keeps_rollups_and_audits(history, settings):
    a, b = history
    settings.USAGE_RAW_RETENTION_MONTHS = 3
    plan = {p.name: p for p in partitions.partitions(RAW)}
    rollups = list(UsageRollup.objects.order_by("pk").values_list("bucket_start", "requests", "cost"))
    january = Statement.objects.get(account=a, month=date(2031, 1, 1))
    assert reconcile(january).ok

    with time_machine.travel(pacific(2031, 8, 10), tick=False):
        usage.jobs.drop_usage_partitions.call_local()

    assert names(RAW) == ["usage_usageevent_p203102", "usage_usageevent_p203103", "usage_usageevent_p203106"]
    assert names(GUARD) == []  # every claim partition of 2031 up to July is past its window
    assert sorted(UsageEvent.objects.values_list("event_id", flat=True)) == ["evt-2", "evt-3", "evt-4", "evt-6"]
    assert list(UsageRollup.objects.order_by("pk").values_list("bucket_start", "requests", "cost")) == rollups
    assert [
        (e.action, e.actor_id, e.actor_kind, e.object_type, e.object_id, e.after, e.reason)
        for e in AuditEvent.objects.filter(action="usage.raw_events.drop").order_by("pk")
    ] == [
        (
            "usage.raw_events.drop",
            None,
            "system",
            "usage.usageevent",
            name,
            {"month": plan[name].label, "rows_estimate": 0, "bytes": plan[name].bytes},
            reason,
        )
        for name, reason in (
            (
                "usage_usageevent_p203101",
                "all its usage is on issued statements (1 account(s) with usage of 2031-01)",
            ),
            ("usage_usageevent_p203104", "no billed usage: no statement needs its events"),
        )
    ]
    # What stays pending or unstated keeps its events until it is final.
    assert PendingCharge.objects.filter(account=b, month=date(2031, 2, 1)).count() == 2
    assert UsageLine.objects.filter(account=a, month=date(2031, 3, 1), entry__statement_link__isnull=True).count() == 2


@pytest.mark.postgres
def test_reconciling_a_statement_after_its_events_were_dropped_says_so_and_is_no_mismatch(history, settings):
    a, _ = history
    settings.USAGE_RAW_RETENTION_MONTHS = 3
    january = Statement.objects.get(account=a, month=date(2031, 1, 1))
    with time_machine.travel(pacific(2031, 8, 10), tick=False):
        call_command("drop_usage_partitions", stdout=StringIO())

    result = reconcile(january)

    # Its late event is on February's statement (elsewhere).
    assert result.months == [
        MonthCheck(month=date(2031, 1, 1), events=None, elsewhere=D("0.55"), not_yet=D(0), on_statement=D("0.55"))
    ]
    assert (result.complete, result.mismatched, result.ok, result.expected_total) == (False, [], False, None)
    out = StringIO()
    call_command("reconcile_statement", a.account_id, "2031-01", stdout=out)  # no SystemExit: not a mismatch
    assert out.getvalue().splitlines() == [
        "2031-01: raw events dropped by retention (drop_usage_partitions), not recomputed; on other statements "
        "USD 0.550000000, not on a statement yet USD 0E-9; its lines say USD 0.550000000",
        f"NOT CHECKED {a.account_id} 2031-01: the raw events of 2031-01 were dropped; the months kept agree with the "
        "statement's lines; statement says USD 0.55",
    ]


@pytest.mark.postgres
def test_the_months_still_kept_are_reconciled_when_another_months_events_were_dropped(history, settings):
    a, _ = history
    settings.USAGE_RAW_RETENTION_MONTHS = 3
    february = Statement.objects.get(account=a, month=date(2031, 2, 1))
    with time_machine.travel(pacific(2031, 8, 10), tick=False):
        call_command("drop_usage_partitions", stdout=StringIO())
    out = StringIO()
    call_command("reconcile_statement", a.account_id, "2031-02", stdout=out)
    assert out.getvalue().splitlines()[-1] == (
        f"NOT CHECKED {a.account_id} 2031-02: the raw events of 2031-01 were dropped; the months kept agree with the "
        "statement's lines; statement says USD 1.10"
    )

    UsageEvent.objects.filter(event_id="evt-3").update(cost=D("0.60"))  # February's events no longer add up

    assert [(m.month, m.kept, m.covered, m.on_statement) for m in reconcile(february).months] == [
        (date(2031, 1, 1), False, None, D("0.55")),
        (date(2031, 2, 1), True, D("0.6"), D("0.55")),
    ]
    err = StringIO()
    with pytest.raises(SystemExit) as exit_:
        call_command("reconcile_statement", a.account_id, "2031-02", stdout=StringIO(), stderr=err)
    assert exit_.value.code == 1
    assert err.getvalue().strip() == (
        f"MISMATCH {a.account_id} 2031-02: 2031-02 (events USD 0.600000000, its lines USD 0.550000000); "
        "the raw events of 2031-01 were dropped"
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_drop_outside_a_transaction_detaches_the_partition_concurrently(paid_key, event):
    key, _ = paid_key
    try:
        assert send(event, key, pacific(2031, 1, 15), now=pacific(2031, 1, 16)) == (1, 0)
        (january,) = [p for p in partitions.partitions(RAW) if p.month == date(2031, 1, 1)]
        rollups = UsageRollup.objects.count()

        partitions.drop(january, reason="test: outside a transaction")

        assert not connection.in_atomic_block
        assert [p.name for p in partitions.partitions(RAW) if p.month.year >= 2031] == []
        assert (UsageEvent.objects.count(), UsageRollup.objects.count()) == (0, rollups)
        assert partitions.raw_events_kept(date(2031, 1, 1)) is False
        assert AuditEvent.objects.filter(action="usage.raw_events.drop", object_id=january.name).count() == 1
    finally:
        for table in (RAW, GUARD):
            for partition in partitions.partitions(table):
                if partition.month.year >= 2031:
                    partitions.drop(partition, reason="test")


@pytest.mark.postgres
def test_a_partition_left_detached_by_an_interrupted_drop_is_dropped_next_time(history, settings):
    settings.USAGE_RAW_RETENTION_MONTHS = 3
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {RAW} DETACH PARTITION usage_usageevent_p203101")  # then the process died

    (left,) = [v for v in partitions.retention_plan(now=pacific(2031, 8, 10)) if v.partition.month.month == 1]

    assert (left.partition.attached, left.drop, left.reason) == (
        False,
        True,
        "left detached by an interrupted drop, whose checks it had passed",
    )
    partitions.drop(left.partition, reason=left.reason)
    assert "usage_usageevent_p203101" not in names(RAW)


# The migration


def migrate_to_the_latest_and_drop_2031(on_postgres: bool) -> None:
    """After a migration test: the schema as the code expects it again, and no partition of the test's year."""
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes("usage"))
    if on_postgres:
        for table in (RAW, GUARD):
            for partition in partitions.partitions(table):
                if partition.month.year >= 2031:
                    partitions.drop(partition, reason="test")


@pytest.mark.django_db(transaction=True)
def test_the_migration_moves_existing_events_into_monthly_partitions_and_back(paid_key, on_postgres):
    key, _ = paid_key
    executor = MigrationExecutor(connection)
    before, after = [("usage", "0010_quota_increases")], [("usage", "0011_partitioned_usage_events")]
    times = [pacific(2031, 9, 15, 12), LAST_OF_NOVEMBER, FIRST_OF_DECEMBER, pacific(2031, 12, 2, 12)]
    try:
        executor.migrate(before)
        OldEvent = executor.loader.project_state(before).apps.get_model("usage", "UsageEvent")
        old = [
            OldEvent.objects.create(
                event_id=f"evt-old-{n}", project_id=key.project_id, api_key_id=key.pk, model_id="gemini-2.5-flash",
                kind="generate", source="api", status_code=200, input_tokens=10, output_tokens=1, cached_tokens=0,
                cache_token_hours=0, occurred_at=at, billable=False, counts_against_quota=True,
            )
            for n, at in enumerate(times)
        ]  # fmt: skip
        with time_machine.travel(pacific(2031, 12, 3), tick=False):
            executor = MigrationExecutor(connection)
            executor.migrate(after)

        assert list(UsageEvent.objects.order_by("pk").values_list("pk", "event_id", "month")) == [
            (event.pk, f"evt-old-{n}", month_of(at)) for n, (event, at) in enumerate(zip(old, times, strict=True))
        ]
        if on_postgres:
            assert names(RAW)[-6:] == [f"usage_usageevent_p2031{m:02d}" for m in (9, 10, 11, 12)] + [
                "usage_usageevent_p203201",
                "usage_usageevent_p203202",
            ]
            # The events a report can still meet at the December boundary are claimed there (by id until 0015).
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT boundary, event_id FROM {GUARD} ORDER BY 1, 2")
                assert cursor.fetchall() == [(DECEMBER, "evt-old-1"), (DECEMBER, "evt-old-2"), (DECEMBER, "evt-old-3")]
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT nextval(pg_get_serial_sequence('{RAW}', 'id'))")
                assert cursor.fetchone()[0] > old[-1].pk  # the ids go on

        executor = MigrationExecutor(connection)
        executor.migrate(before)
        assert list(OldEvent.objects.order_by("pk").values_list("pk", "event_id")) == [
            (event.pk, event.event_id) for event in old
        ]
    finally:
        migrate_to_the_latest_and_drop_2031(on_postgres)


@pytest.mark.django_db(transaction=True)
def test_the_migration_keys_events_and_claims_by_a_digest_of_their_id_and_back(paid_key, on_postgres):
    """0015: every stored event gets event_key (the first 16 bytes of its id's SHA-256, in SQL on PostgreSQL as in
    Python), the events are unique by (event_key, month) and the claims by (boundary, event_key); going back, the
    claims are made again by id from the stored events."""
    from django.db import IntegrityError, transaction

    from usage.models import event_key

    key, _ = paid_key
    before, after = [("usage", "0014_prices_not_negative")], [("usage", "0015_event_keys")]
    times = [LAST_OF_NOVEMBER, pacific(2031, 12, 20), pacific(2031, 12, 21)]  # near the December boundary, and not
    ids = ["evt-key-0", "evt-key-~!", "0190a3b2-7c1d-7abc-8def-0123456789ab"]
    try:
        executor = MigrationExecutor(connection)
        executor.migrate(before)
        if on_postgres:
            partitions.ensure([NOVEMBER, DECEMBER])
        OldEvent = executor.loader.project_state(before).apps.get_model("usage", "UsageEvent")
        for event_id, at in zip(ids, times, strict=True):
            OldEvent.objects.create(
                event_id=event_id, project_id=key.project_id, api_key_id=key.pk, model_id="gemini-2.5-flash",
                kind="generate", source="api", status_code=200, input_tokens=10, output_tokens=1, cached_tokens=0,
                cache_token_hours=0, occurred_at=at, month=month_of(at), billable=False, counts_against_quota=True,
            )  # fmt: skip
        if on_postgres:
            with connection.cursor() as cursor:
                cursor.execute(f"INSERT INTO {GUARD} (boundary, event_id) VALUES (%s, %s)", [DECEMBER, ids[0]])

        with time_machine.travel(pacific(2031, 12, 3), tick=False):
            executor = MigrationExecutor(connection)
            executor.migrate(after)

        expected = [(event_id, event_key(event_id)) for event_id in ids]
        assert [(e, bytes(k)) for e, k in UsageEvent.objects.order_by("pk").values_list("event_id", "event_key")] == (
            expected
        )
        assert event_key("evt-key-0") == bytes.fromhex("6cef70e5351cf098a80cf0972b9b50f0")  # sha256, 16 bytes
        assert event_key(ids[2]) == bytes.fromhex("0190a3b27c1d7abc8def0123456789ab")  # a UUID: its own bytes
        if on_postgres:
            assert claims() == [(DECEMBER, "evt-key-0")]
        with pytest.raises(IntegrityError), transaction.atomic():  # the same key in the same month
            stored = UsageEvent.objects.get(event_id=ids[0])
            UsageEvent.objects.create(**{f.attname: getattr(stored, f.attname) for f in UsageEvent._meta.fields[1:]})

        with time_machine.travel(pacific(2031, 12, 3), tick=False):
            executor = MigrationExecutor(connection)
            executor.migrate(before)
        assert sorted(OldEvent.objects.values_list("event_id", flat=True)) == sorted(ids)
        if on_postgres:
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT boundary, event_id FROM {GUARD} ORDER BY 1, 2")
                assert cursor.fetchall() == [(DECEMBER, "evt-key-0")]
    finally:
        migrate_to_the_latest_and_drop_2031(on_postgres)
