from django.core.management.base import BaseCommand

from studio.locks import job_lock
from studio.outbox import deliver_due


class Command(BaseCommand):
    help = "Send the outbox's due e-mails (retries with backoff). One runner at a time; safe to repeat."

    def handle(self, *args, **options):
        with job_lock("deliver_outbox") as held:
            if not held:
                self.stdout.write("deliver_outbox is already running; nothing done.")
                return
            result = deliver_due()
        if options["verbosity"] >= 1:  # the every-minute job runs at 0: each message is logged anyway
            self.stdout.write(
                self.style.SUCCESS(f"Sent {result.sent}, to retry {result.retrying}, failed {result.failed} e-mail(s).")
            )
