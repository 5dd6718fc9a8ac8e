from django.conf import settings
from django.core.management.base import BaseCommand

from studio.locks import job_lock
from usage import partitions


class Command(BaseCommand):
    help = (
        "Drop the raw usage events of months that are USAGE_RAW_RETENTION_MONTHS behind and whose usage is all on "
        "issued statements (PostgreSQL: one partition per month; audited as usage.raw_events.drop), and the boundary "
        "claims no event can need any more. Rollups, pending charges and the ledger are never touched. "
        "--dry-run says what would be dropped and why the rest is kept."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="change nothing; say what would be dropped")

    def handle(self, *args, dry_run=False, **options):
        if not partitions.on_postgres():
            self.stdout.write("This database keeps usage events in one table (SQLite): nothing is dropped.")
            return
        with job_lock("drop_usage_partitions") as held:
            if not held:
                self.stdout.write("drop_usage_partitions is already running; nothing done.")
                return
            dropped, kept, freed = self._raw(dry_run)
            guards = self._guards(dry_run)
        verb, months = "Would drop" if dry_run else "Dropped", settings.USAGE_RAW_RETENTION_MONTHS
        self.stdout.write(
            self.style.SUCCESS(
                f"{verb} {dropped} month(s) of raw events ({freed / 2**20:,.0f} MiB) and {guards} boundary claim "
                f"partition(s); kept {kept} month(s) (USAGE_RAW_RETENTION_MONTHS={months})."
            )
        )

    def _raw(self, dry_run: bool) -> tuple[int, int, int]:
        dropped = kept = freed = 0
        for verdict in partitions.retention_plan():
            partition = verdict.partition
            about = (
                f"{partition.name} ({partition.label}, ~{partition.rows:,} rows, {partition.bytes / 2**20:,.0f} MiB)"
            )
            if not verdict.drop:
                kept += 1
                self.stdout.write(f"kept {about}: {verdict.reason}")
                continue
            if not dry_run:
                partitions.drop(partition, reason=verdict.reason)
            dropped, freed = dropped + 1, freed + partition.bytes
            self.stdout.write(f"{'would drop' if dry_run else 'dropped'} {about}: {verdict.reason}")
        return dropped, kept, freed

    def _guards(self, dry_run: bool) -> int:
        expired = partitions.expired_guards()
        for partition in expired:
            if not dry_run:
                partitions.drop(partition, reason="no acceptable event can lie near its month start any more")
            self.stdout.write(
                f"{'would drop' if dry_run else 'dropped'} {partition.name}: the events within 7 days 5 minutes "
                f"of {partition.month:%Y-%m-%d} (Pacific) are all older than ingestion accepts"
            )
        return len(expired)
