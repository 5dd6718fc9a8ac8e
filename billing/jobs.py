"""Billing's jobs for the job runner (`manage.py run_huey`). Each job is its management command."""

from django.core.management import call_command
from huey import crontab
from huey.contrib.djhuey import db_periodic_task


@db_periodic_task(crontab(minute="*/5"), name="reconcile_payments")
def reconcile_payments():
    call_command("reconcile_payments")


@db_periodic_task(crontab(minute="15"), name="evaluate_tiers")
def evaluate_tiers():
    call_command("evaluate_tiers")
