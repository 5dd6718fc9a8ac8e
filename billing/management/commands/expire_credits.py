from django.core.management.base import BaseCommand

from billing.credits import expire_credits, send_reminders
from studio.locks import job_lock


class Command(BaseCommand):
    help = (
        "Write off what expired credits had left (one credit_expiry ledger entry each) and e-mail the "
        "reminders due 14 and 3 days before a credit expires. One runner at a time; safe to repeat."
    )

    def handle(self, *args, **options):
        with job_lock("expire_credits") as held:
            if not held:
                self.stdout.write("expire_credits is already running; nothing done.")
                return
            expired = expire_credits(progress=self._progress)
            for expiry in expired:
                credit = expiry.credit
                self.stdout.write(
                    f"{credit.account.account_id} credit {credit.pk} expired: USD {expiry.amount} written off"
                )
            reminders = send_reminders()
            for reminder in reminders:
                credit = reminder.credit
                self.stdout.write(
                    f"{credit.account.account_id} credit {credit.pk}: {reminder.days_before}-day reminder "
                    f"to {reminder.recipients} administrator(s)"
                )
        self.stdout.write(
            self.style.SUCCESS(f"Wrote off {len(expired)} expired credit(s); sent {len(reminders)} reminder(s).")
        )

    def _progress(self, done: int, total: int):
        if done == total or done % max(total // 10, 1) == 0:
            self.stdout.write(f"{done}/{total} expired credits")
