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
