from django.core.management.base import BaseCommand

from billing.statements import charge_due
from studio.locks import job_lock


class Command(BaseCommand):
    help = (
        "Charge issued statements whose charge day (the 2nd, Pacific) has come to each account's primary payment "
        "method, once, and settle attempts of unknown outcome. One runner at a time; safe to repeat."
    )

    def handle(self, *args, **options):
        with job_lock("charge_statements") as held:
            if not held:
                self.stdout.write("charge_statements is already running; nothing done.")
                return
            report = charge_due(progress=self._progress)
        self.stdout.write(
            self.style.SUCCESS(
                f"Charged {len(report.paid)} statement(s); {len(report.failed)} failed, {len(report.unknown)} "
                f"awaiting the processor; {len(report.settled)} earlier attempt(s) settled."
            )
        )

    def _progress(self, payment):
        statement = payment.statement
        self.stdout.write(
            f"{statement.account.account_id} {statement.month:%Y-%m} attempt {payment.attempt}: USD {payment.amount} "
            f"{payment.status}{' ' + payment.failure_code if payment.failure_code else ''}"
        )
