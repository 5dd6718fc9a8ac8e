from django.core.management.base import BaseCommand

from billing.payments import reconcile_payments
from studio.locks import job_lock


class Command(BaseCommand):
    help = (
        "Settle prepayments of unknown outcome (timeouts, stale attempts, bank transfers) from the processor. "
        "One runner at a time; safe to repeat."
    )

    def handle(self, *args, **options):
        with job_lock("reconcile_payments") as held:
            if not held:
                self.stdout.write("reconcile_payments is already running; nothing done.")
                return
            settled = reconcile_payments(progress=self._progress)
        for attempt in settled:
            self.stdout.write(f"{attempt.pk} {attempt.account.account_id} USD {attempt.amount}: {attempt.status}")
        self.stdout.write(self.style.SUCCESS(f"Settled {len(settled)} prepayment(s)."))

    def _progress(self, done: int, total: int):
        if done == total or done % max(total // 10, 1) == 0:
            self.stdout.write(f"{done}/{total} open prepayments checked")
