from django.core.management.base import BaseCommand

from billing.budgets import check_budgets
from studio.locks import job_lock


class Command(BaseCommand):
    help = (
        "E-mail billing administrators about budget thresholds crossed this Pacific month (once per threshold "
        "per month). One runner at a time; safe to repeat."
    )

    def handle(self, *args, **options):
        with job_lock("check_budgets") as held:
            if not held:
                self.stdout.write("check_budgets is already running; nothing done.")
                return
            sent = check_budgets(report=self._report)
        self.stdout.write(self.style.SUCCESS(f"Sent {len(sent)} budget alert(s)."))

    def _report(self, status, alerts):
        budget = status.budget
        scope = budget.project.project_id if budget.project_id else "account"
        crossed = ", ".join(f"{alert.percent}% {alert.basis}" for alert in alerts)
        self.stdout.write(
            f"{budget.account.account_id} {scope} {status.month:%Y-%m}: {crossed} "
            f"(spend USD {status.spend}, forecast USD {status.forecast}, budget USD {budget.amount})"
        )
