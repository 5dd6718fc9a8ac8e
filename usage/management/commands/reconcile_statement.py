from django.core.management.base import BaseCommand, CommandError

from billing.models import Statement
from billing.statements import parse_month
from usage.statements import reconcile


class Command(BaseCommand):
    help = (
        "Recompute a statement's usage from the usage events (their per-event costs, by the month they occurred "
        "in) and compare it with the statement's total after the rounding rule. Exits with status 1 on a mismatch."
    )

    def add_arguments(self, parser):
        parser.add_argument("account", help="billing account id, e.g. 01A2B3-C4D5E6-F7G8H9")
        parser.add_argument("month", help="the statement's month, YYYY-MM")

    def handle(self, *args, account, month, **options):
        first = parse_month(month)
        statement = Statement.objects.filter(account__account_id=account, month=first).first() if first else None
        if statement is None:
            raise CommandError(f"No statement of {account} for {month}.")
        result = reconcile(statement)
        for check in result.months:
            if not check.kept:
                self.stdout.write(
                    f"{check.month:%Y-%m}: raw events dropped by retention (drop_usage_partitions), not recomputed; "
                    f"on other statements USD {check.elsewhere}, not on a statement yet USD {check.not_yet}; "
                    f"its lines say USD {check.on_statement}"
                )
                continue
            self.stdout.write(
                f"{check.month:%Y-%m}: events USD {check.events}, on other statements USD {check.elsewhere}, "
                f"not on a statement yet USD {check.not_yet}, so this statement covers USD {check.covered}; "
                f"its lines say USD {check.on_statement}"
            )
        if result.without_events:
            self.stdout.write(f"usage charged without event lines: USD {result.without_events}")
        if not result.complete:
            # A month's raw events are dropped only once its usage is all on issued statements: not a mismatch.
            dropped = ", ".join(f"{check.month:%Y-%m}" for check in result.months if not check.kept)
            if result.mismatched:
                months = ", ".join(
                    f"{check.month:%Y-%m} (events USD {check.covered}, its lines USD {check.on_statement})"
                    for check in result.mismatched
                )
                self.stderr.write(
                    self.style.ERROR(f"MISMATCH {account} {month}: {months}; the raw events of {dropped} were dropped")
                )
                raise SystemExit(1)
            self.stdout.write(
                self.style.WARNING(
                    f"NOT CHECKED {account} {month}: the raw events of {dropped} were dropped; the months kept agree "
                    f"with the statement's lines; statement says USD {statement.usage_total}"
                )
            )
            return
        summary = (
            f"{account} {month}: expected usage total USD {result.expected_total}, "
            f"statement says USD {statement.usage_total}"
        )
        if not result.ok:
            self.stderr.write(self.style.ERROR(f"MISMATCH {summary}"))
            raise SystemExit(1)
        self.stdout.write(self.style.SUCCESS(f"OK {summary}"))
