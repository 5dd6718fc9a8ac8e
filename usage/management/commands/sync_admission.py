from django.core.management.base import BaseCommand, CommandError
from redis.exceptions import RedisError

from studio.locks import job_lock
from usage import admission_store

KINDS = ("keys", "projects", "catalog")


class Command(BaseCommand):
    help = (
        "Check that the admission store (what quota:check reads in Redis) agrees with the database: per kind, the "
        "records checked, missing, differing and extra. Exits with status 1 when they disagree, unless --fix "
        "repairs them. One runner at a time; safe to repeat: a repair never overwrites a newer write-through."
    )

    def add_arguments(self, parser):
        parser.add_argument("--fix", action="store_true", help="repair what disagrees")
        parser.add_argument(
            "--flush", action="store_true", help="delete every record first and rebuild from the database (--fix)"
        )

    def handle(self, *args, fix, flush, **options):
        if admission_store.client() is None:
            self.stdout.write("REDIS_URL is not set: quota:check reads the database; nothing to sync.")
            return
        fix = fix or flush
        with job_lock("sync_admission") as held:
            if not held:
                self.stdout.write("sync_admission is already running; nothing done.")
                return
            try:
                report = admission_store.sync(fix=fix, flush=flush)
            except RedisError as error:
                raise CommandError(f"Redis failed during the sync: {error} Nothing more was done.") from error
        for kind in KINDS:
            self.stdout.write(
                f"{kind}: {report.checked[kind]} checked, {report.missing[kind]} missing, "
                f"{report.differing[kind]} differing, {report.extra[kind]} extra"
            )
        if report.agrees:
            self.stdout.write(self.style.SUCCESS("The admission store agrees with the database."))
        elif fix:
            found = sum(
                sum(counts[kind] for kind in KINDS) for counts in (report.missing, report.differing, report.extra)
            )
            self.stdout.write(
                self.style.SUCCESS(
                    f"Repaired {report.fixed} of {found} record(s); the others were written meanwhile by a change."
                    if report.fixed < found
                    else f"Repaired {report.fixed} record(s)."
                )
            )
        else:
            self.stderr.write(
                self.style.ERROR("The admission store disagrees with the database: run sync_admission --fix.")
            )
            raise SystemExit(1)
