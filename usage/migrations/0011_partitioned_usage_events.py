"""Raw usage events partitioned by Pacific month on PostgreSQL (issue 14; usage.partitions says how they are kept).

Every database: UsageEvent gets `month` (the first day of the Pacific month of occurred_at, the statement month),
and its unique key becomes (event_id, month), the key a partitioned table can enforce.

PostgreSQL: the table is rebuilt as `usage_usageevent` PARTITION BY RANGE (month), one partition per month from the
oldest event's month to the current month + 2 (the `ensure_usage_partitions` job keeps USAGE_PARTITIONS_AHEAD from
then on), the rows copied over (ids and the id sequence kept), and the old table dropped. Its primary key is
(id, month): a partitioned table's unique keys hold the partition key; Django still knows `id` as the primary key,
which the sequence keeps unique. Indexes and constraints keep their names (usage_event_project_time; the unique key
is one_usage_event_per_id_and_month). Next to it, `usage_usageeventguard` (boundary, event_id), partitioned by
boundary: the ids of events within 7 days 5 minutes of a month start, filled here for the events that a report
could still meet there, and emptied with the events (a TRUNCATE trigger: Django's test flush truncates only its
models' tables). The copy runs in the migration's transaction, with the table locked: allow for it on a large
table (it writes the table once more, then builds its three indexes).

Reversible: back on PostgreSQL to one plain table with a unique event_id, refused with a message if some id is
stored in two months (which the partitioned table allows across boundaries far apart: docs/ARCHITECTURE.md).
"""

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from django.db import migrations, models
from django.db.migrations.operations.base import Operation
from django.utils import timezone

PACIFIC = ZoneInfo("America/Los_Angeles")
AHEAD = 2  # months after the current one created here
OLDEST = timedelta(days=7)  # the oldest event ingestion accepts
WINDOW = timedelta(days=7, minutes=5)  # the replay window around each month start (usage.partitions)
# In hours: timestamptz + '7 days' adds calendar days in the session's time zone.
WINDOW_SQL = "interval '169 hours 5 minutes'"
LOCAL_MONTH = "date_trunc('month', occurred_at AT TIME ZONE 'America/Los_Angeles')"
MONTH_SQL = f"{LOCAL_MONTH}::date"
BOUNDARY_SQL = f"""CASE
    WHEN occurred_at < ({LOCAL_MONTH} AT TIME ZONE 'America/Los_Angeles') + {WINDOW_SQL} THEN {LOCAL_MONTH}::date
    WHEN occurred_at >= (({LOCAL_MONTH} + interval '1 month') AT TIME ZONE 'America/Los_Angeles') - {WINDOW_SQL}
        THEN ({LOCAL_MONTH} + interval '1 month')::date
END"""
COPY_ROWS = f"""
INSERT INTO usage_usageevent_partitioned OVERRIDING SYSTEM VALUE SELECT *, {MONTH_SQL} FROM usage_usageevent
"""  # noqa: S608 - constant SQL
CLAIM_NEAR_BOUNDARIES = f"""
INSERT INTO usage_usageeventguard (boundary, event_id)
SELECT boundary, event_id
FROM (SELECT event_id, {BOUNDARY_SQL} AS boundary FROM usage_usageevent WHERE occurred_at >= %s) AS near
WHERE boundary IS NOT NULL ON CONFLICT DO NOTHING
"""  # noqa: S608 - constant SQL
# The indexes and constraints of the partitioned table, as Django names them (bench/event_partitions.py drops and
# rebuilds them around its bulk load with these statements).
INDEXES = [
    "ALTER TABLE usage_usageevent ADD CONSTRAINT usage_usageevent_pkey PRIMARY KEY (id, month)",
    "ALTER TABLE usage_usageevent ADD CONSTRAINT one_usage_event_per_id_and_month UNIQUE (event_id, month)",
    "CREATE INDEX usage_event_project_time ON usage_usageevent (project_id, occurred_at)",
]


def month_of(moment: datetime) -> date:
    return moment.astimezone(PACIFIC).date().replace(day=1)


def next_month(month: date) -> date:
    return (month.replace(day=28) + timedelta(days=4)).replace(day=1)


def months_between(first: date, last: date) -> list[date]:
    months = []
    while first <= last:
        months.append(first)
        first = next_month(first)
    return months


def create_partition(schema_editor, parent: str, month: date, *, named: str) -> None:
    schema_editor.execute(
        f"CREATE TABLE {named}_p{month:%Y%m} PARTITION OF {parent} "
        f"FOR VALUES FROM ('{month.isoformat()}') TO ('{next_month(month).isoformat()}')"
    )


def partition_postgres(apps, schema_editor):
    now = timezone.now()
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("LOCK TABLE usage_usageevent IN EXCLUSIVE MODE")  # reads go on; writes wait for the new table
        cursor.execute("SELECT min(occurred_at), max(occurred_at) FROM usage_usageevent")
        first, last = cursor.fetchone()
    current = month_of(now)
    last_month = max(month_of(last), current) if last else current
    for _ in range(AHEAD):
        last_month = next_month(last_month)
    months = months_between(
        min(month_of(first), month_of(now - OLDEST)) if first else month_of(now - OLDEST), last_month
    )

    schema_editor.execute(
        "CREATE TABLE usage_usageevent_partitioned (LIKE usage_usageevent INCLUDING IDENTITY, month date NOT NULL) "
        "PARTITION BY RANGE (month)"
    )
    for month in months:
        create_partition(schema_editor, "usage_usageevent_partitioned", month, named="usage_usageevent")
    schema_editor.execute(COPY_ROWS)
    schema_editor.execute(
        "SELECT setval(pg_get_serial_sequence('usage_usageevent_partitioned', 'id'), "
        "nextval(pg_get_serial_sequence('usage_usageevent', 'id')), false)"
    )
    schema_editor.execute("DROP TABLE usage_usageevent")
    schema_editor.execute("ALTER TABLE usage_usageevent_partitioned RENAME TO usage_usageevent")
    schema_editor.execute("ALTER SEQUENCE usage_usageevent_partitioned_id_seq RENAME TO usage_usageevent_id_seq")
    for statement in INDEXES:
        schema_editor.execute(statement)

    schema_editor.execute(
        "CREATE TABLE usage_usageeventguard (boundary date NOT NULL, event_id varchar(100) NOT NULL, "
        "CONSTRAINT usage_usageeventguard_pkey PRIMARY KEY (boundary, event_id)) PARTITION BY RANGE (boundary)"
    )
    for month in [*months, next_month(months[-1])]:
        create_partition(schema_editor, "usage_usageeventguard", month, named="usage_usageeventguard")
    # The events a report can still meet near a boundary: within the window of one whose own window is not past.
    schema_editor.execute(CLAIM_NEAR_BOUNDARIES, [now - OLDEST - 2 * WINDOW - timedelta(days=1)])
    schema_editor.execute(
        "CREATE FUNCTION usage_usageevent_truncate_guard() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN TRUNCATE usage_usageeventguard; RETURN NULL; END $$"
    )
    schema_editor.execute(
        "CREATE TRIGGER usage_usageevent_truncate_guard AFTER TRUNCATE ON usage_usageevent "
        "FOR EACH STATEMENT EXECUTE FUNCTION usage_usageevent_truncate_guard()"
    )


def unpartition_postgres(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("LOCK TABLE usage_usageevent IN EXCLUSIVE MODE")
        cursor.execute("SELECT count(*) FROM (SELECT 1 FROM usage_usageevent GROUP BY event_id HAVING count(*) > 1) d")
        (twice,) = cursor.fetchone()
    if twice:
        raise RuntimeError(
            f"Cannot go back to one unique event_id: {twice} event id(s) are stored in two months (allowed when their "
            "times lie more than 7 days 5 minutes apart). Delete the copies to keep first."
        )
    schema_editor.execute("CREATE TABLE usage_usageevent_plain (LIKE usage_usageevent INCLUDING IDENTITY)")
    schema_editor.execute("INSERT INTO usage_usageevent_plain OVERRIDING SYSTEM VALUE SELECT * FROM usage_usageevent")
    schema_editor.execute(
        "SELECT setval(pg_get_serial_sequence('usage_usageevent_plain', 'id'), "
        "nextval(pg_get_serial_sequence('usage_usageevent', 'id')), false)"
    )
    schema_editor.execute("DROP TABLE usage_usageevent, usage_usageeventguard")
    schema_editor.execute("DROP FUNCTION usage_usageevent_truncate_guard()")
    schema_editor.execute("ALTER TABLE usage_usageevent_plain RENAME TO usage_usageevent")
    schema_editor.execute("ALTER SEQUENCE usage_usageevent_plain_id_seq RENAME TO usage_usageevent_id_seq")
    schema_editor.execute("ALTER TABLE usage_usageevent DROP COLUMN month")
    schema_editor.execute("ALTER TABLE usage_usageevent ADD CONSTRAINT usage_usageevent_pkey PRIMARY KEY (id)")
    schema_editor.execute("ALTER TABLE usage_usageevent ADD CONSTRAINT one_usage_event_per_id UNIQUE (event_id)")
    schema_editor.execute("CREATE INDEX usage_event_project_time ON usage_usageevent (project_id, occurred_at)")


def fill_months(apps, schema_editor):
    UsageEvent = apps.get_model("usage", "UsageEvent")
    events = list(UsageEvent.objects.only("pk", "occurred_at"))
    for event in events:
        event.month = month_of(event.occurred_at)
    UsageEvent.objects.bulk_update(events, ["month"], batch_size=500)


class ByVendor(Operation):
    """One change of state, made in the database by raw work on PostgreSQL and by Django's own operations
    elsewhere (SQLite). `portable` are those operations: their state changes are this operation's."""

    reversible = True

    def __init__(self, *, postgresql, postgresql_reverse, portable):
        self.postgresql, self.postgresql_reverse, self.portable = postgresql, postgresql_reverse, portable

    def state_forwards(self, app_label, state):
        for operation in self.portable:
            operation.state_forwards(app_label, state)

    def _states(self, app_label, before):
        states = [before]
        for operation in self.portable:
            state = states[-1].clone()
            operation.state_forwards(app_label, state)
            states.append(state)
        return states

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            self.postgresql(from_state.apps, schema_editor)
            return
        states = self._states(app_label, from_state)
        for at, operation in enumerate(self.portable):
            operation.database_forwards(app_label, schema_editor, states[at], states[at + 1])

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            self.postgresql_reverse(from_state.apps, schema_editor)
            return
        states = self._states(app_label, to_state)
        for at in reversed(range(len(self.portable))):
            self.portable[at].database_backwards(app_label, schema_editor, states[at + 1], states[at])

    def describe(self):
        return "Add UsageEvent.month, unique (event_id, month); on PostgreSQL partition usage events by month"


class Migration(migrations.Migration):
    dependencies = [("usage", "0010_quota_increases")]

    operations = [
        ByVendor(
            postgresql=partition_postgres,
            postgresql_reverse=unpartition_postgres,
            portable=[
                migrations.AddField(
                    model_name="usageevent",
                    name="month",
                    field=models.DateField(null=True, verbose_name="month"),
                ),
                migrations.RunPython(fill_months, migrations.RunPython.noop),
                migrations.AlterField(
                    model_name="usageevent",
                    name="month",
                    field=models.DateField(verbose_name="month"),
                ),
                migrations.RemoveConstraint(model_name="usageevent", name="one_usage_event_per_id"),
                migrations.AddConstraint(
                    model_name="usageevent",
                    constraint=models.UniqueConstraint(
                        fields=("event_id", "month"), name="one_usage_event_per_id_and_month"
                    ),
                ),
            ],
        ),
    ]
