from django.core.management.base import BaseCommand

from billing.payments import reconcile_payments


class Command(BaseCommand):
    help = "Settle prepayments of unknown outcome (timeouts, stale attempts, bank transfers) from the processor."

    def handle(self, *args, **options):
        settled = reconcile_payments()
        for attempt in settled:
            self.stdout.write(f"{attempt.pk} {attempt.account.account_id} USD {attempt.amount}: {attempt.status}")
        self.stdout.write(self.style.SUCCESS(f"Settled {len(settled)} prepayment(s)."))
