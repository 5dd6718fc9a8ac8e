"""Usage events are unique by a 16-byte key of their id, UsageEvent.event_key, instead of by the id itself (issue
10): the first 16 bytes of the id's SHA-256, or, for an id that is a UUID in canonical form, its own 16 bytes (so
that time-ordered ids keep their order). The unique index every insert goes to, and on PostgreSQL the boundary
claims' (usage_usageeventguard), are ~40 % smaller, so more of them stays in memory under heavy ingestion
(bench/README.md). The id is kept on the event, as reported.

On PostgreSQL the claims keep only the key: (boundary, event_key). Going back recomputes the claims from the stored
events, as migration 0011 made them.
"""

from datetime import timedelta
from hashlib import sha256
from importlib import import_module
import re

from django.db import migrations, models
from django.utils import timezone

# usage.models.EVENT_KEY_SQL as of this migration: a canonical UUID is its own 16 bytes, any other id the first 16
# bytes of its SHA-256.
KEY_SQL = (
    "CASE WHEN {0} ~ '^[0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}$' "
    "THEN decode(replace({0}, '-', ''), 'hex') ELSE substring(sha256(convert_to({0}, 'UTF8')) FROM 1 FOR 16) END"
)
CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def key_of(event_id: str) -> bytes:  # usage.models.event_key, as of this migration
    if CANONICAL_UUID.fullmatch(event_id):
        return bytes.fromhex(event_id.replace("-", ""))
    return sha256(event_id.encode()).digest()[:16]


def fill_keys(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"UPDATE usage_usageevent SET event_key = {KEY_SQL.format('event_id')}")  # noqa: S608
        return
    UsageEvent = apps.get_model("usage", "UsageEvent")
    events = list(UsageEvent.objects.only("pk", "event_id"))
    for event in events:
        event.event_key = key_of(event.event_id)
    UsageEvent.objects.bulk_update(events, ["event_key"], batch_size=500)


def key_claims(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return  # the claims table is PostgreSQL's only
    for sql in [
        "ALTER TABLE usage_usageeventguard ADD COLUMN event_key bytea",
        f"UPDATE usage_usageeventguard SET event_key = {KEY_SQL.format('event_id')}",  # noqa: S608
        "ALTER TABLE usage_usageeventguard ALTER COLUMN event_key SET NOT NULL",
        "ALTER TABLE usage_usageeventguard DROP CONSTRAINT usage_usageeventguard_pkey",
        "ALTER TABLE usage_usageeventguard DROP COLUMN event_id",
        "ALTER TABLE usage_usageeventguard ADD CONSTRAINT usage_usageeventguard_pkey PRIMARY KEY (boundary, event_key)",
    ]:
        schema_editor.execute(sql)


def unkey_claims(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    partitioned = import_module("usage.migrations.0011_partitioned_usage_events")
    for sql in [
        "ALTER TABLE usage_usageeventguard DROP CONSTRAINT usage_usageeventguard_pkey",
        "TRUNCATE usage_usageeventguard",
        "ALTER TABLE usage_usageeventguard DROP COLUMN event_key",
        "ALTER TABLE usage_usageeventguard ADD COLUMN event_id varchar(100) NOT NULL",
        "ALTER TABLE usage_usageeventguard ADD CONSTRAINT usage_usageeventguard_pkey PRIMARY KEY (boundary, event_id)",
    ]:
        schema_editor.execute(sql)
    # The events a report can still meet near a boundary, as migration 0011 claimed them.
    since = timezone.now() - partitioned.OLDEST - 2 * partitioned.WINDOW - timedelta(days=1)
    schema_editor.execute(partitioned.CLAIM_NEAR_BOUNDARIES, [since])


class Migration(migrations.Migration):
    dependencies = [("usage", "0014_prices_not_negative")]

    operations = [
        migrations.AddField(
            model_name="usageevent",
            name="event_key",
            field=models.BinaryField(editable=False, max_length=16, null=True),
        ),
        migrations.RunPython(fill_keys, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="usageevent",
            name="event_key",
            field=models.BinaryField(editable=False, max_length=16),
        ),
        migrations.RemoveConstraint(model_name="usageevent", name="one_usage_event_per_id_and_month"),
        migrations.AddConstraint(
            model_name="usageevent",
            constraint=models.UniqueConstraint(fields=("event_key", "month"), name="one_usage_event_per_key_and_month"),
        ),
        migrations.RunPython(key_claims, unkey_claims),
    ]
