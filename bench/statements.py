"""Benchmark: issuing a month's statements (usage.statements.issue_due) for N billing accounts of 50 projects each.

In-process, without HTTP. For each N, a throwaway PostgreSQL database is created and seeded in bulk with what a
month leaves behind: N accounts, each with 50 linked projects, a promotional credit, four weekly usage charges
of October 2026 (each with a UsageLine per project × SKU: 100 lines, so 400 per account) and their credit
applications, and 100 pending rows of sub-micro-dollar remainders per account to close. Then issue_due() runs
once, as the job would on 1 November, and the script prints wall and CPU time (this process and its PostgreSQL
backend), SQL statements, per account figures, the share of the machine's CPU used by other processes meanwhile,
and the growth from one N to the next.

    .venv/bin/python bench/statements.py [--accounts 100 1000] [--database studio_bench_h7] [--keep]
"""

import argparse
import itertools
import os
import random
import sys
import time
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import fleet_http  # bench/fleet_http.py: this script's directory is on sys.path
from charge_run import QueryCounter

LA = ZoneInfo("America/Los_Angeles")
PROJECTS = 50
SKUS = ("input", "output")
WEEKS = 4
ISSUE_AT = datetime(2026, 11, 1, 0, 5, tzinfo=LA)


def seed(accounts: int, rng: random.Random) -> None:
    from billing.models import (
        BillingAccount,
        BillingAdministrator,
        Credit,
        CreditKind,
        EntryKind,
        EntryReason,
        LedgerEntry,
        PaymentMethod,
        PaymentsProfile,
        UsageLine,
    )
    from studio.models import BillingState, Project, Tier, User
    from usage.models import PendingCharge, Price

    since = datetime(2026, 10, 1, tzinfo=LA)
    month = since.date()
    price = Price.objects.filter(model_id="gemini-2.5-flash").order_by("-effective_from").first()
    user = User.objects.create_user("statements-bench@bench.example", None)
    profile = PaymentsProfile.objects.create(
        owner=user,
        profile_type="business",
        name="Statements bench",
        address_line1="1 Bench Way",
        city="San Francisco",
        postal_code="94105",
        country_id="US",
        email="statements-bench@bench.example",
        phone="+1 415 555 0100",
    )
    card = PaymentMethod.objects.create(
        profile=profile, brand="visa", last4="4242", exp_month=12, exp_year=2099, processor_token="tok_bench"
    )
    created = BillingAccount.objects.bulk_create(
        BillingAccount(
            display_name=f"Bench {n}",
            country_id="US",
            payments_profile=profile,
            primary_payment_method=card,
            created_by=user,
            created_at=since,
        )
        for n in range(accounts)
    )
    BillingAdministrator.objects.bulk_create(BillingAdministrator(account=a, user=user) for a in created)
    projects = Project.objects.bulk_create(
        (
            Project(
                project_id=f"gen-lang-client-{n:010d}",
                number=str(10**11 + n),
                name=f"Bench {n}",
                tier=Tier.TIER_3,
                billing_state=BillingState.ACTIVE,
            )
            for n in range(accounts * PROJECTS)
        ),
        batch_size=5000,
    )
    credits = Credit.objects.bulk_create(
        Credit(account=a, kind=CreditKind.PROMOTIONAL, original_amount=Decimal(5), granted_at=since) for a in created
    )
    LedgerEntry.objects.bulk_create(
        LedgerEntry(
            account=c.account, kind=EntryKind.CREDIT_GRANT, amount=c.original_amount, credit=c, created_at=since
        )
        for c in credits
    )
    for week in range(WEEKS):
        at = since + timedelta(days=7 * week + 6)
        amounts = {
            a.pk: [Decimal(rng.randrange(1, 5_000_000)) / 10**6 for _ in range(PROJECTS * len(SKUS))] for a in created
        }
        charges = LedgerEntry.objects.bulk_create(
            (
                LedgerEntry(
                    account=a,
                    kind=EntryKind.USAGE_CHARGE,
                    amount=sum(amounts[a.pk]),
                    reason=EntryReason.USAGE,
                    usage_month=month,
                    created_at=at,
                )
                for a in created
            ),
            batch_size=5000,
        )
        UsageLine.objects.bulk_create(
            (
                UsageLine(
                    entry=charge,
                    account_id=charge.account_id,
                    project=projects[index * PROJECTS + n // len(SKUS)],
                    model_id="gemini-2.5-flash",
                    price_id=price.pk,
                    month=month,
                    sku=SKUS[n % len(SKUS)],
                    quantity=Decimal(rng.randrange(1, 10**7)),
                    events=rng.randrange(1, 1000),
                    amount=amounts[charge.account_id][n],
                    first_occurred_at=at - timedelta(days=6),
                    last_occurred_at=at,
                )
                for index, charge in enumerate(charges)
                for n in range(PROJECTS * len(SKUS))
            ),
            batch_size=10000,
        )
        if week == 0:  # the credit pays the first week's usage, up to its amount
            LedgerEntry.objects.bulk_create(
                LedgerEntry(
                    account=credit.account,
                    kind=EntryKind.CREDIT_APPLICATION,
                    amount=-min(Decimal(5), charge.amount),
                    credit=credit,
                    usage_month=month,
                    created_at=at,
                )
                for credit, charge in zip(credits, charges, strict=True)
            )
    PendingCharge.objects.bulk_create(
        (
            PendingCharge(
                account=a,
                project=projects[index * PROJECTS + n // len(SKUS)],
                model_id="gemini-2.5-flash",
                price=price,
                month=month,
                sku=SKUS[n % len(SKUS)],
                batch=False,
                long_prompt=False,
                amount_nanos=rng.randrange(1, 1000),
            )
            for index, a in enumerate(created)
            for n in range(PROJECTS * len(SKUS))
        ),
        batch_size=10000,
    )


def run_case(accounts: int, args) -> dict:
    environment = fleet_http.server_environment(args.database, args.redis_url)
    fleet_http.psql(f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)")
    fleet_http.psql(f"CREATE DATABASE {args.database}")
    os.environ.update(environment)
    from django.core.management import call_command
    from django.db import connection

    connection.close()
    connection.settings_dict["NAME"] = args.database
    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    seed(accounts, random.Random(accounts))
    seeded = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]

    from billing.models import Statement
    from usage.statements import issue_due

    counter = QueryCounter()
    machine = fleet_http.cpu_seconds(-1, set(), {"run": {os.getpid(), backend}})
    with connection.execute_wrapper(counter):
        backend_cpu = fleet_http.process_cpu_seconds(backend)
        started, cpu = time.perf_counter(), time.process_time()
        run = issue_due(at=ISSUE_AT)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        backend_cpu = fleet_http.process_cpu_seconds(backend) - backend_cpu
    used = {
        group: s - machine[group]
        for group, s in fleet_http.cpu_seconds(-1, set(), {"run": {os.getpid(), backend}}).items()
    }
    other = max(used["busy"] - sum(s for g, s in used.items() if g not in ("busy", "total")), 0) / used["total"]
    assert len(run.issued) == accounts == Statement.objects.count()
    lines = sum(s.lines.count() for s in run.issued[:3]) / min(3, accounts)
    result = {
        "accounts": accounts,
        "seeded": seeded,
        "wall": wall,
        "cpu": cpu,
        "backend_cpu": backend_cpu,
        "queries": counter.kinds.total(),
        "other": other,
        "lines": lines,
    }
    print(
        f"{accounts:>7,} accounts: seeded in {seeded:6.1f} s; issue_due wall {wall:7.2f} s "
        f"(CPU {cpu:6.2f} s + PostgreSQL {backend_cpu:6.2f} s), {result['queries'] / accounts:5.1f} queries and "
        f"{wall / accounts * 1000:6.1f} ms per account, {lines:.0f} lines per statement; other {other:.0%}"
    )
    connection.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, nargs="+", default=[100, 1000])
    fleet_http.add_target_arguments(parser, "studio_bench_statements")
    args = parser.parse_args()
    fleet_http.setup_django(fleet_http.server_environment(args.database, args.redis_url))
    print(f"command:    {' '.join(sys.orig_argv)}")
    print(
        f"per account: {PROJECTS} projects, {WEEKS} usage charges × {PROJECTS * len(SKUS)} lines, "
        f"{PROJECTS * len(SKUS)} pending remainders to close"
    )
    results = []
    try:
        for accounts in args.accounts:
            results.append(run_case(accounts, args))
    finally:
        if not args.keep:
            fleet_http.psql(f"DROP DATABASE IF EXISTS {args.database} WITH (FORCE)")
    for before, after in itertools.pairwise(results):
        print(
            f"growth {before['accounts']:,} → {after['accounts']:,} accounts "
            f"(×{after['accounts'] / before['accounts']:.0f}): "
            f"wall ×{after['wall'] / before['wall']:.1f}, per account "
            f"{before['wall'] / before['accounts'] * 1000:.1f} → {after['wall'] / after['accounts'] * 1000:.1f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
