from django.core.management.base import BaseCommand

from billing.dunning import retry_due
from studio.locks import job_lock


class Command(BaseCommand):
    help = (
        "Dunning: retry failed statement charges 1, 3 and 7 days after their first failure with each account's "
        "primary payment method, e-mail the billing administrators of each failure, and suspend the account when "
        "the last retry fails. Settles attempts of unknown outcome first. One runner at a time; safe to repeat."
    )

    def handle(self, *args, **options):
        with job_lock("retry_statement_payments") as held:
            if not held:
                self.stdout.write("retry_statement_payments is already running; nothing done.")
                return
            report = retry_due(progress=self._progress)
        self.stdout.write(
            self.style.SUCCESS(
                f"Retried {len(report.paid) + len(report.failed) + len(report.unknown)} statement(s): "
                f"{len(report.paid)} paid, {len(report.failed)} failed ({len(report.suspended)} account(s) "
                f"suspended), {len(report.unknown)} awaiting the processor; {len(report.settled)} earlier "
                f"attempt(s) settled."
            )
        )

    def _progress(self, payment):
        statement = payment.statement
        self.stdout.write(
            f"{statement.account.account_id} {statement.month:%Y-%m} retry {payment.retry} "
            f"(attempt {payment.attempt}): USD {payment.amount} {payment.status}"
            f"{' ' + payment.failure_code if payment.failure_code else ''}"
        )
