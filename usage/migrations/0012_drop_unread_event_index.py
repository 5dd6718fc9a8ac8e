"""Drop the raw events' (project, occurred_at) index (issue 10): no query reads it (the console reads rollups,
reconciliation reads a month's partition, the admin finds an event by id), and it cost ingestion 5-7 ms of
PostgreSQL per 1,000 events. On PostgreSQL, dropping the partitioned index drops every partition's."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('usage', '0011_partitioned_usage_events'),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='usageevent',
            name='usage_event_project_time',
        ),
    ]
