import logging

from django.core.management.base import BaseCommand
from django.db import DatabaseError

from studio.locks import job_lock
from usage.charging import charge_pending
from usage.fold import fold

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Charge rated usage of paid projects to their billing accounts' ledgers, paid from credits first. "
        "One runner at a time; safe to repeat and to kill: each event is charged exactly once. "
        "First rolls up the usage ingestion has not rolled up yet (PostgreSQL)."
    )

    def handle(self, *args, **options):
        # The usage pages read the rollups: after the last batch of a burst, this is what rolls it up (usage.fold).
        # Never waiting for a fold under way (a long one, or a demo seed's transaction holding the lock, must not
        # stop charging): that one takes what it can see, and the next run the rest.
        try:
            folded = fold(wait=False)
        except DatabaseError:
            log.exception("usage fold failed; its rows wait for the next fold")
        else:
            if folded:
                self.stdout.write(f"Rolled up {folded} row(s) of usage.")
        with job_lock("charge_usage") as held:
            if not held:
                self.stdout.write("charge_usage is already running; nothing done.")
                return
            run = charge_pending()
        self.stdout.write(
            f"Charged {run.accounts} account(s): {run.charges} charge(s), {run.lines} line(s), USD {run.amount}."
        )
        if run.failed:
            # Logged with their tracebacks by charge_pending; their usage stays pending for the next run.
            ids = ", ".join(str(account_id) for account_id in run.failed)
            self.stderr.write(f"Not charged, left pending: {len(run.failed)} account(s) that failed: {ids}.")
