import io
import subprocess
import sys
import threading
import uuid
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core import mail
from django.core.mail import send_mail
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from huey.contrib.djhuey import HUEY

import billing.jobs
import studio.jobs
from billing import ledger
from billing.models import PaymentStatus, Prepayment
from billing.payments import pay_prepayment
from billing.services import add_card
from studio.locks import _key, job_lock, lock_file
from studio.models import EmailStatus, OutboundEmail, Tier
from tests.factories import make_account, make_project

pytestmark = pytest.mark.django_db


def periodic_at(hour, minute) -> list[str]:
    """Names of the periodic jobs the runner starts at that minute (huey works in UTC)."""
    return sorted(task.name for task in HUEY.read_periodic(datetime(2026, 3, 2, hour, minute)))


def test_periodic_jobs_are_registered_with_their_schedules():
    every_minute = ["charge_usage", "deliver_outbox", "flush_denials", "flush_key_use"]
    every_five = ["expire_credits", "reconcile_payments", "sync_admission"]
    every_ten = ["check_budgets", "retry_statement_payments"]
    assert periodic_at(9, 1) == every_minute
    assert periodic_at(9, 5) == sorted([*every_minute, *every_five, "issue_statements"])
    assert periodic_at(9, 10) == sorted([*every_minute, *every_five, *every_ten])
    assert periodic_at(9, 14) == every_minute
    quarter_past = sorted([*every_minute, *every_five, "evaluate_tiers"])
    assert periodic_at(9, 15) == quarter_past
    assert periodic_at(10, 15) == quarter_past
    assert periodic_at(9, 35) == sorted([*every_minute, *every_five, "charge_statements"])
    assert periodic_at(3, 40) == sorted([*every_minute, *every_five, *every_ten, "ensure_usage_partitions"])
    assert periodic_at(3, 50) == sorted([*every_minute, *every_five, *every_ten, "drop_usage_partitions"])
    assert periodic_at(4, 40) == sorted([*every_minute, *every_five, *every_ten])


def test_the_charge_usage_job_charges_now_and_again_within_the_minute(settings, monkeypatch):
    import usage.jobs

    settings.CHARGE_INTERVAL_SECONDS = 20
    runs, later = [], []
    monkeypatch.setattr(usage.jobs, "call_command", lambda name, **options: runs.append(name))
    monkeypatch.setattr(usage.jobs.charge_usage_later, "schedule", lambda delay: later.append(delay))

    usage.jobs.charge_usage.call_local()

    assert (runs, later) == (["charge_usage"], [20, 40])


def test_the_deliver_outbox_jobs_run_the_command():
    send_mail("Hello", "Body", None, ["ada@example.com"])
    studio.jobs.deliver_outbox.call_local()
    send_mail("Again", "Body", None, ["ada@example.com"])
    studio.jobs.deliver_outbox_now.call_local()

    assert [m.subject for m in mail.outbox] == ["Hello", "Again"]
    assert OutboundEmail.objects.filter(status=EmailStatus.SENT).count() == 2


def test_the_reconcile_payments_job_runs_the_command(owner, settings):
    account = make_account(owner, prepayment_due=True, projects=[make_project(owner)])
    card = add_card(
        account.payments_profile,
        number=settings.TEST_PROCESSOR_TIMEOUT_CARD,
        exp_month=12,
        exp_year=2099,
        cvc="123",
        brand="visa",
        by=owner,
    )
    attempt = pay_prepayment(account, attempt_id=uuid.uuid4(), amount=Decimal("10"), payment_method=card, by=owner)
    assert attempt.status == PaymentStatus.UNKNOWN

    billing.jobs.reconcile_payments.call_local()

    assert Prepayment.objects.get().status == PaymentStatus.SUCCEEDED


def test_the_evaluate_tiers_job_runs_the_command(owner):
    project = make_project(owner)
    account = make_account(owner, projects=[project])
    ledger.record_usage_charge(account, amount=Decimal("300"), description="usage", idempotency_key="s1")
    ledger.record_payment(account, amount=Decimal("300"), description="paid", idempotency_key="p1")

    with time_machine.travel(timezone.now() + timedelta(days=31)):
        billing.jobs.evaluate_tiers.call_local()

    project.refresh_from_db()
    assert project.tier == Tier.TIER_2


def command_output(name) -> str:
    out = io.StringIO()
    call_command(name, stdout=out)
    return out.getvalue()


def test_evaluate_tiers_shows_its_progress(owner):
    for _ in range(3):
        make_account(owner, projects=[make_project(owner)])

    assert command_output("evaluate_tiers") == "1/3 accounts\n2/3 accounts\n3/3 accounts\nUpgraded 0 project(s).\n"


def test_deliver_outbox_says_what_it_did():
    send_mail("Hello", "Body", None, ["ada@example.com"])

    assert command_output("deliver_outbox") == "Sent 1, to retry 0, failed 0 e-mail(s).\n"


def hold_lock_in_another_thread(name):
    """Another runner (its own database connection) holds job `name` until release is set."""
    held, release = threading.Event(), threading.Event()

    def run():
        try:
            with job_lock(name) as got:
                assert got
                held.set()
                release.wait()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    held.wait()
    return release, thread


@pytest.mark.parametrize("name", ["deliver_outbox", "reconcile_payments", "evaluate_tiers"])
def test_a_second_run_while_the_first_holds_the_lock_does_nothing(name):
    send_mail("Hello", "Body", None, ["ada@example.com"])
    release, thread = hold_lock_in_another_thread(name)
    try:
        output = command_output(name)
    finally:
        release.set()
        thread.join()

    assert output == f"{name} is already running; nothing done.\n"
    assert OutboundEmail.objects.get().status == EmailStatus.PENDING
    command_output(name)  # the first run is over: the next one works
    if name == "deliver_outbox":
        assert OutboundEmail.objects.get().status == EmailStatus.SENT


@pytest.mark.postgres
def test_an_evaluation_waiting_for_the_lock_upgrades_nothing_until_it_is_free(owner):
    project = make_project(owner)
    account = make_account(owner, projects=[project])
    ledger.record_usage_charge(account, amount=Decimal("300"), description="usage", idempotency_key="s1")
    ledger.record_payment(account, amount=Decimal("300"), description="paid", idempotency_key="p1")

    with time_machine.travel(timezone.now() + timedelta(days=31)):
        release, thread = hold_lock_in_another_thread("evaluate_tiers")
        try:
            assert command_output("evaluate_tiers") == "evaluate_tiers is already running; nothing done.\n"
            project.refresh_from_db()
            assert project.tier == Tier.TIER_1
        finally:
            release.set()
            thread.join()
        assert command_output("evaluate_tiers").endswith("Upgraded 1 project(s).\n")


def test_a_lock_is_released_when_its_holder_is_killed(monkeypatch, tmp_path):
    """What a crashed job leaves behind: nothing (PostgreSQL or the kernel drops the lock)."""
    key = _key("evaluate_tiers")
    if connection.vendor == "sqlite":
        # As under `make run`: a database file, shared by processes (this connection stays as it is).
        monkeypatch.setitem(connection.settings_dict, "NAME", str(tmp_path / "db.sqlite3"))
    if connection.vendor == "postgresql":
        db = connection.settings_dict
        conninfo = f"dbname={db['NAME']} user={db['USER']} host={db['HOST']} port={db['PORT'] or 5432}"
        holder = (
            f"import psycopg, time; c = psycopg.connect({conninfo!r}, password={db['PASSWORD']!r} or None); "
            f"c.execute('SELECT pg_advisory_lock({key})'); print('held', flush=True); time.sleep(60)"
        )
    else:
        holder = (
            f"import fcntl, time; f = open({str(lock_file('evaluate_tiers'))!r}, 'a'); "
            "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"
        )
    process = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "held\n"
        with job_lock("evaluate_tiers") as held:
            assert held is False
    finally:
        process.kill()
        process.wait()
        process.stdout.close()

    if connection.vendor == "postgresql":
        # The server ends the dead client's session as soon as it reads the closed socket: wait for
        # that (a blocking lock, bounded), not for a guessed time.
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '10s'")
            cursor.execute("SELECT pg_advisory_lock(%s), pg_advisory_unlock(%s)", [key, key])
    with job_lock("evaluate_tiers") as held:
        assert held is True
    if connection.vendor == "sqlite":
        lock_file("evaluate_tiers").unlink()  # this test's database file is gone with tmp_path


def test_jobs_never_run_inside_a_web_request(settings):
    # djhuey's default is immediate mode whenever DEBUG is on, i.e. jobs inside `make run`'s requests.
    assert settings.HUEY["immediate"] is False
