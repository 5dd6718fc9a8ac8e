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


@db_periodic_task(crontab(minute="*/5"), name="expire_credits")
def expire_credits():
    call_command("expire_credits")


@db_periodic_task(crontab(minute="*/10"), name="check_budgets")
def check_budgets():
    call_command("check_budgets")


@db_periodic_task(crontab(minute="5"), name="issue_statements")
def issue_statements():
    """Hourly: last month's statements, issued from the 1st (Pacific) on; an account that already has
    one is skipped, so only the first run of a month issues anything and a missed run catches up.
    The command lives in usage (it closes the month's pending usage first)."""
    call_command("issue_statements")


@db_periodic_task(crontab(minute="35"), name="charge_statements")
def charge_statements():
    """Hourly: issued statements are charged from the 2nd (Pacific) on, once each."""
    call_command("charge_statements")


@db_periodic_task(crontab(minute="*/10"), name="retry_statement_payments")
def retry_statement_payments():
    """Every 10 minutes: dunning's retries of failed statement charges (1, 3 and 7 days after the
    first failure), each once; the last failure suspends the account."""
    call_command("retry_statement_payments")
