from django.conf import settings
from django.core.management.base import BaseCommand

from studio.locks import job_lock
from usage import partitions


class Command(BaseCommand):
    help = (
        "Create the monthly partitions of raw usage events ahead of time (PostgreSQL): from the month of the oldest "
        "event ingestion still accepts to the current Pacific month + USAGE_PARTITIONS_AHEAD, and the boundary "
        "claims' partitions next to them. Safe to repeat and to run beside ingestion (no lock stops inserts)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--ahead", type=int, help="months after the current one (default USAGE_PARTITIONS_AHEAD)")

    def handle(self, *args, ahead=None, **options):
        if not partitions.on_postgres():
            self.stdout.write("This database keeps usage events in one table (SQLite): no partitions to create.")
            return
        ahead = settings.USAGE_PARTITIONS_AHEAD if ahead is None else ahead
        with job_lock("ensure_usage_partitions") as held:
            if not held:
                self.stdout.write("ensure_usage_partitions is already running; nothing done.")
                return
            created = partitions.ensure_ahead(ahead=ahead)
        for name in created:
            self.stdout.write(f"created {name}")
        raw = [partition for partition in partitions.partitions(partitions.RAW) if partition.attached]
        self.stdout.write(
            self.style.SUCCESS(
                f"Created {len(created)} partition(s); raw events have partitions for {raw[0].label} to "
                f"{raw[-1].label} ({len(raw)} months)."
            )
        )
