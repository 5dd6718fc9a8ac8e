"""`manage.py seed_demo`: demo data for `make run`. Idempotent, safe to run on every start."""

from django.core.management.base import BaseCommand
from django.db import transaction

from billing.demo import seed_billing
from studio.demo import DEMO_PASSWORD, DEVELOPER, STAFF, seed_studio


class Command(BaseCommand):
    help = "Load the demo users, projects, API keys and billing accounts (idempotent)."

    @transaction.atomic
    def handle(self, *args, **options):
        users = seed_studio()
        seed_billing(users)
        self.stdout.write(self.style.SUCCESS("Demo data ready. Sign in at http://127.0.0.1:8000/ with:"))
        self.stdout.write(f"  developer: {DEVELOPER} / {DEMO_PASSWORD}  (existing billing user, two accounts)")
        self.stdout.write(f"  staff:     {STAFF} / {DEMO_PASSWORD}  (also /admin/)")
        self.stdout.write("  new billing user: sign up at http://127.0.0.1:8000/accounts/signup/")
