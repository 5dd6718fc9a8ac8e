from django.core.management.base import BaseCommand

from billing.tiers import evaluate_all
from studio.locks import job_lock


class Command(BaseCommand):
    help = (
        "Upgrade every project that meets a higher tier's criteria and e-mail its owners. "
        "One runner at a time; safe to repeat."
    )

    def handle(self, *args, **options):
        with job_lock("evaluate_tiers") as held:
            if not held:
                self.stdout.write("evaluate_tiers is already running; nothing done.")
                return
            upgraded = []
            for project in evaluate_all(progress=self._progress):
                upgraded.append(project)
                self.stdout.write(f"{project.project_id}: {project.get_tier_display()}")
        self.stdout.write(self.style.SUCCESS(f"Upgraded {len(upgraded)} project(s)."))

    def _progress(self, done: int, total: int):
        # About ten lines however many accounts there are, and always the last one.
        if done == total or done % max(total // 10, 1) == 0:
            self.stdout.write(f"{done}/{total} accounts")
