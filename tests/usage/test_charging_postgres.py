"""Exactly once on PostgreSQL: two charge runners at the same time, and a runner process killed
(SIGKILL) in the middle of its run, end with the ledger one clean run would write."""

import os
import signal
import subprocess
import sys
import time
from decimal import Decimal as D

import pytest
from django.conf import settings
from django.db.models import Sum

from billing.models import EntryKind, LedgerEntry, UsageLine
from tests.concurrency import at_once
from tests.factories import make_billed_project, make_key, make_user
from tests.reliability.test_dropped_connections import database_url
from usage.charging import charge_pending
from usage.ingest import ingest
from usage.models import PendingCharge, UsageEvent

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

MODELS = ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash"]


def traffic(event, accounts: int) -> dict[int, D]:
    """`accounts` billed projects, each with usage on three models; returns {account pk: expected charge}."""
    expected = {}
    for number in range(accounts):
        project = make_billed_project(make_user(f"runner{number}@example.com"))
        key, _ = make_key(project)
        ingest(
            [
                event(key, model=model, input_tokens=1000 + number, output_tokens=10 * n, kind=kind)
                for n, model in enumerate(MODELS, start=1)
                for kind in ("generate", "batch")
            ]
        )
        # Each line is charged in whole micro-dollars (the rest waits for the line's next usage).
        lines = PendingCharge.objects.filter(project=project).values_list("amount_nanos", flat=True)
        expected[project.billing.account_id] = D(sum(nanos // 1000 for nanos in lines)) / 10**6
    return expected


def charged() -> dict[int, D]:
    rows = LedgerEntry.objects.filter(kind=EntryKind.USAGE_CHARGE).values("account_id").annotate(total=Sum("amount"))
    return {row["account_id"]: row["total"] for row in rows}


def assert_books_balance():
    """Every charge equals its lines, and charged + pending equals what the events cost, per account."""
    for entry in LedgerEntry.objects.filter(kind=EntryKind.USAGE_CHARGE):
        assert entry.amount == UsageLine.objects.filter(entry=entry).aggregate(total=Sum("amount"))["total"]
    costs = dict(
        UsageEvent.objects.filter(billable=True).values_list("account_id").annotate(total=Sum("cost")).order_by()
    )
    pending = dict(PendingCharge.objects.values_list("account_id").annotate(total=Sum("amount_nanos")).order_by())
    done = charged()
    for account_id, cost in costs.items():
        assert done.get(account_id, D(0)) + D(pending.get(account_id, 0)) / 10**9 == cost


def test_two_runners_at_the_same_time_charge_each_account_once(event):
    expected = traffic(event, accounts=12)

    runs, errors = at_once(lambda _: charge_pending(), 2)

    assert errors == []
    assert sum(run.accounts for run in runs) == 12  # each account charged by exactly one of them
    assert charged() == expected
    assert LedgerEntry.objects.filter(kind=EntryKind.USAGE_CHARGE).count() == 12
    assert_books_balance()


def runner_backends() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


# The job's run (charge_usage's), in chunks of 4 accounts so that 25 accounts make 7 transactions to kill it between.
RUNNER = "from usage.charging import charge_pending; charge_pending(chunk_size=4)"


@pytest.mark.parametrize("kill_after", [1, 7, 19])
def test_a_runner_killed_mid_run_loses_and_doubles_nothing(event, kill_after):
    expected = traffic(event, accounts=25)
    environment = {**os.environ, "DATABASE_URL": database_url(), "LOG_LEVEL": "WARNING"}
    runner = subprocess.Popen(
        [sys.executable, "manage.py", "shell", "--command", RUNNER],
        cwd=settings.BASE_DIR,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(3000):  # until `kill_after` accounts are committed: the next chunk is in flight
            if (
                LedgerEntry.objects.filter(kind=EntryKind.USAGE_CHARGE).count() >= kill_after
                or runner.poll() is not None
            ):
                break
            time.sleep(0.005)  # a real process: nothing to move a clock for
        runner.send_signal(signal.SIGKILL)
    finally:
        runner.wait(timeout=30)
    assert runner.returncode == -signal.SIGKILL, runner.stderr.read().decode()
    for _ in range(1000):  # PostgreSQL ends the dead runner's session (and rolls back its transaction)
        if runner_backends() == 0:
            break
        time.sleep(0.01)
    partial = charged()
    assert kill_after <= len(partial) < 25
    assert len(partial) % 4 == 0  # whole chunks, in account order
    assert sorted(partial) == sorted(expected)[: len(partial)]
    assert_books_balance()  # what committed is whole, per account

    charge_pending()  # the next run

    assert charged() == expected
    assert LedgerEntry.objects.filter(kind=EntryKind.USAGE_CHARGE).count() == 25
    assert_books_balance()


def test_a_chunk_that_fails_at_commit_is_charged_again_account_by_account(event, caplog):
    expected = traffic(event, accounts=3)
    first, broken, last = sorted(expected)
    # A line of a project that does not exist: its UsageLine's foreign key is checked at COMMIT (deferred).
    PendingCharge.objects.filter(account_id=broken).update(project_id=10**9)
    rows = PendingCharge.objects.filter(account_id=broken).order_by("pk")
    pending = list(rows.values_list("pk", "amount_nanos", "events"))

    run = charge_pending()

    assert (run.accounts, run.failed) == (2, [broken])
    assert charged() == {first: expected[first], last: expected[last]}
    assert list(rows.values_list("pk", "amount_nanos", "events")) == pending  # untouched, for the next run
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "usage.charging"] == [
        ("WARNING", f"charging accounts {first} to {last} failed; charging them one by one"),
        ("ERROR", f"charging account {broken} failed; its usage stays pending"),
    ]
