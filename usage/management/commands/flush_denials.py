from django.core.management.base import BaseCommand

from studio.locks import job_lock
from usage.denials import flush


class Command(BaseCommand):
    help = (
        "Move the quota denials the limiter recorded (Redis, and this process's) to the database, per minute, hour "
        "and day. One runner at a time; safe to repeat and to kill: each denial is written exactly once."
    )

    def handle(self, *args, **options):
        with job_lock("flush_denials") as held:
            if not held:
                self.stdout.write("flush_denials is already running; nothing done.")
                return
            run = flush()
        self.stdout.write(
            f"Wrote {run.requests} denied request(s) from {run.claims} claim(s); {run.already_written} claim(s) "
            f"written before; {run.dropped} dropped (not a project's)."
        )
