"""Studio's jobs for the job runner (`manage.py run_huey`). Each job is its management command."""

from django.core.management import call_command
from huey import crontab
from huey.contrib.djhuey import db_periodic_task, db_task


@db_periodic_task(crontab(minute="*"), name="deliver_outbox")
def deliver_outbox():
    """The sweep: due e-mails and retries, every minute."""
    call_command("deliver_outbox", verbosity=0)


@db_task(name="deliver_outbox_now")
def deliver_outbox_now():
    """Queued after a commit that wrote e-mails, so they leave within seconds, not at the sweep."""
    call_command("deliver_outbox", verbosity=0)
