from django.core.management.base import BaseCommand

from studio.locks import job_lock
from usage.statements import issue_due


class Command(BaseCommand):
    help = (
        "Issue last month's (Pacific) statement of every billing account that has none yet, after closing the "
        "month's pending usage. One runner at a time; safe to repeat: one statement per account and month."
    )

    def handle(self, *args, **options):
        with job_lock("issue_statements") as held:
            if not held:
                self.stdout.write("issue_statements is already running; nothing done.")
                return
            run = issue_due(progress=self._progress)
        self.stdout.write(
            self.style.SUCCESS(
                f"{run.month:%Y-%m}: issued {len(run.issued)} statement(s); {run.existing} already issued."
            )
        )

    def _progress(self, statement, issued):
        if issued:
            self.stdout.write(
                f"{statement.account.account_id} {statement.month:%Y-%m}: usage USD {statement.usage_total}, "
                f"due USD {statement.amount_due} ({statement.status})"
            )
