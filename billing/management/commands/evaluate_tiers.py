from django.core.management.base import BaseCommand

from billing import emails
from billing.tiers import evaluate_all


class Command(BaseCommand):
    help = "Upgrade every project that meets a higher tier's criteria and e-mail its owners (idempotent, cron-able)."

    def handle(self, *args, **options):
        upgraded = list(evaluate_all())
        for project in upgraded:
            emails.tier_upgraded(project)
            self.stdout.write(f"{project.project_id}: {project.get_tier_display()}")
        self.stdout.write(self.style.SUCCESS(f"Upgraded {len(upgraded)} project(s)."))
