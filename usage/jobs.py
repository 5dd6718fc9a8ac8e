"""Usage's jobs for the job runner (`manage.py run_huey`). Each job is its management command."""

from django.conf import settings
from django.core.management import call_command
from huey import crontab
from huey.contrib.djhuey import db_periodic_task, db_task


@db_periodic_task(crontab(minute="*"), name="charge_usage")
def charge_usage():
    """Every minute, and again every CHARGE_INTERVAL_SECONDS within it (cron has minutes only), so
    that a report reaches the balance well within the 60 s the product promises (SPEC §9)."""
    call_command("charge_usage", verbosity=0)
    interval = settings.CHARGE_INTERVAL_SECONDS
    for delay in range(interval, 60, interval):
        charge_usage_later.schedule(delay=delay)


@db_task(name="charge_usage_later")
def charge_usage_later():
    call_command("charge_usage", verbosity=0)


@db_periodic_task(crontab(minute="*"), name="flush_denials")
def flush_denials():
    """Every minute: the denials quota:check recorded, from the limiter to the database (usage.denials)."""
    call_command("flush_denials", verbosity=0)


@db_periodic_task(crontab(minute="*/5"), name="sync_admission")
def sync_admission():
    """Every 5 minutes: repair what the admission store (Redis) holds where it disagrees with the database, e.g. a
    write-through lost to a crash between a commit and its write, or to a Redis failure (usage.admission_store)."""
    call_command("sync_admission", fix=True, verbosity=0)


@db_periodic_task(crontab(minute="*"), name="flush_key_use")
def flush_key_use():
    """Every minute: the keys' last use that quota:check noted in Redis, to ApiKey.last_used_at."""
    call_command("flush_key_use", verbosity=0)


@db_periodic_task(crontab(minute="40", hour="3"), name="ensure_usage_partitions")
def ensure_usage_partitions():
    """Daily: raw events' monthly partitions made ahead (USAGE_PARTITIONS_AHEAD), so that ingestion never has to
    (it would, once, should one be missing: usage.ingest)."""
    call_command("ensure_usage_partitions", verbosity=0)


@db_periodic_task(crontab(minute="50", hour="3"), name="drop_usage_partitions")
def drop_usage_partitions():
    """Daily: raw events of months whose usage is on issued statements, past USAGE_RAW_RETENTION_MONTHS, dropped
    (and boundary claims no event can need). A month becomes droppable once, so a daily run is soon enough."""
    call_command("drop_usage_partitions", verbosity=0)
