from django.core.management.base import BaseCommand

from studio.locks import job_lock
from usage import admission_store


class Command(BaseCommand):
    help = (
        "Move the last use of each API key that quota:check noted in Redis to the keys' rows (the keys page's "
        "Last used). One runner at a time; safe to repeat and to kill: what is not saved goes back to Redis."
    )

    def handle(self, *args, **options):
        if admission_store.client() is None:
            self.stdout.write("REDIS_URL is not set: quota:check marks keys used in the database; nothing to flush.")
            return
        with job_lock("flush_key_use") as held:
            if not held:
                self.stdout.write("flush_key_use is already running; nothing done.")
                return
            updated = admission_store.flush_key_use()
        self.stdout.write(f"Updated the last use of {updated} key(s).")
