"""`manage.py seed_demo`: demo data for `make run`. Idempotent, safe to run on every start."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from billing.demo import seed_billing, seed_budgets
from staff.demo import FINANCE, FINANCE_2, SUPPORT, seed_staff
from studio.demo import DEMO_PASSWORD, DEVELOPER, STAFF, seed_studio
from usage.demo import seed_usage


class Command(BaseCommand):
    help = (
        "Load the demo users, projects, API keys, billing accounts, fleet token and 90 days of usage history "
        "(idempotent: a second run adds nothing)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--allow-without-debug", action="store_true", help="seed even with DEBUG off (never on production)"
        )

    @transaction.atomic
    def handle(self, *args, allow_without_debug=False, **options):
        if not settings.DEBUG and not allow_without_debug:
            # The demo's passwords and fleet token are public: they must never reach a real deployment.
            raise CommandError("seed_demo creates accounts with public passwords; it runs only with DEBUG on.")
        users = seed_studio()
        seed_billing(users)
        fleet_token = seed_usage()
        seed_budgets(users)
        seed_staff(users)
        self.stdout.write(self.style.SUCCESS("Demo data ready. Sign in at http://127.0.0.1:8000/ with:"))
        self.stdout.write(f"  developer: {DEVELOPER} / {DEMO_PASSWORD}  (existing billing user, two accounts)")
        self.stdout.write(f"  staff:     {STAFF} / {DEMO_PASSWORD}  (superuser: the staff console /staff/ and /admin/)")
        self.stdout.write(
            f"  support:   {SUPPORT} / {DEMO_PASSWORD}  (staff console: lookup, view as customer, quotas)"
        )
        self.stdout.write(
            f"  finance:   {FINANCE} and {FINANCE_2} / {DEMO_PASSWORD}  (refunds, transfers, goodwill, promotions)"
        )
        self.stdout.write("  new billing user: sign up at http://127.0.0.1:8000/accounts/signup/")
        self.stdout.write(
            f"  fleet API: Authorization: Bearer {fleet_token}  (http://127.0.0.1:8000/api/v1/openapi.json)"
        )
        self.stdout.write("  usage:     90 days of history on the demo projects at http://127.0.0.1:8000/usage/")
        self.stdout.write("  traffic:   .venv/bin/python manage.py simulate_traffic  (while the server runs)")
