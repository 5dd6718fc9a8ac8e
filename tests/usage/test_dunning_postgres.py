"""Dunning under concurrency (PostgreSQL): two retry runners make one attempt per scheduled retry, and a
payment submitted twice at once charges once."""

import uuid
from datetime import datetime

import pytest
import time_machine

from billing import ledger
from billing.dunning import pay_statement, retry_due
from billing.models import AttemptStatus, StatementPayment, StatementStatus, TestProcessorCharge
from billing.services import BillingError
from billing.statements import charge_due, issue_statement
from studio.models import OutboundEmail
from tests.concurrency import at_once
from tests.factories import make_account, make_card, make_project, make_user
from tests.usage.test_dunning import DAY, LA, OCTOBER, T0, card_with, statement_line

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def failed(db):
    owner = make_user("dunning-concurrent@example.com")
    project = make_project(owner, name="Concurrent")
    with time_machine.travel(datetime(2026, 9, 30, tzinfo=LA), tick=False):
        account = make_account(owner, projects=[project])
    with time_machine.travel(datetime(2026, 10, 20, tzinfo=LA), tick=False):
        ledger.record_usage(account, month=OCTOBER, lines=[statement_line(project, "15")])
    with time_machine.travel(datetime(2026, 11, 1, 0, 5, tzinfo=LA), tick=False):
        statement, _ = issue_statement(account, OCTOBER)
    card_with(account, "card_declined")
    with time_machine.travel(T0, tick=False):
        charge_due()
    statement.refresh_from_db()
    return statement


def test_two_retry_runners_make_one_attempt(failed):
    with time_machine.travel(T0 + DAY, tick=False):
        results, errors = at_once(lambda _: retry_due(), 2)

    assert errors == []
    assert sorted(len(report.failed) for report in results) == [0, 1]
    assert [(p.attempt, p.retry, p.status) for p in StatementPayment.objects.order_by("attempt")] == [
        (1, None, AttemptStatus.FAILED),
        (2, 1, AttemptStatus.FAILED),
    ]
    assert OutboundEmail.objects.count() == 2  # the charge's and the retry's failures, once each


def test_a_payment_submitted_twice_at_once_charges_once(failed):
    owner = failed.account.created_by
    card = make_card(failed.account.payments_profile, last4="1111")
    attempt = uuid.uuid4()
    with time_machine.travel(T0 + 2 * DAY, tick=False):
        results, errors = at_once(lambda _: pay_statement(failed, attempt_id=attempt, payment_method=card, by=owner), 2)

    assert errors == []
    assert {payment.pk for payment in results} == {attempt}
    assert TestProcessorCharge.objects.filter(idempotency_key=str(attempt)).count() == 1
    failed.refresh_from_db()
    assert failed.status == StatementStatus.PAID


def test_two_different_payments_at_once_pay_once(failed):
    owner = failed.account.created_by
    card = make_card(failed.account.payments_profile, last4="1111")
    with time_machine.travel(T0 + 2 * DAY, tick=False):
        results, errors = at_once(
            lambda _: pay_statement(failed, attempt_id=uuid.uuid4(), payment_method=card, by=owner), 2
        )

    assert [type(error) for error in errors] == [BillingError]  # "nothing left to pay", or "being processed"
    assert [payment.status for payment in results] == [AttemptStatus.SUCCEEDED]
    assert StatementPayment.objects.filter(status=AttemptStatus.SUCCEEDED).count() == 1
    assert TestProcessorCharge.objects.filter(status="succeeded").count() == 1
