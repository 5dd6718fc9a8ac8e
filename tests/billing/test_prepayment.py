import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core import mail
from django.core.management import call_command
from django.utils import timezone

from billing import ledger
from billing.models import (
    CreditKind,
    EntryKind,
    LedgerEntry,
    PaymentStatus,
    Prepayment,
    PrepaymentStatus,
    RefundRequest,
    RefundStatus,
    TestProcessorCharge,
)
from billing.payments import (
    approve_refund,
    confirm_bank_transfer,
    fail_bank_transfer,
    pay_prepayment,
    reconcile_payments,
    reject_refund,
    request_refund,
)
from billing.processor import get_processor
from billing.services import BillingError, add_card
from studio.models import BillingState, Tier
from tests.concurrency import at_once
from tests.factories import deliver_mail, make_account, make_project, make_user

D = Decimal


def card(account, number="4242424242424242"):
    return add_card(
        account.payments_profile,
        number=number,
        exp_month=12,
        exp_year=2099,
        cvc="123",
        brand="visa",
        by=account.created_by,
    )


@pytest.fixture
def due(owner):
    """An account with a USD 10 prepayment due and two linked projects on Action required."""
    projects = [make_project(owner, name="One"), make_project(owner, name="Two")]
    account = make_account(owner, prepayment_due=True, projects=projects)
    return account


TEN = D("10")


def pay(account, method=None, amount=TEN, attempt=None, **kwargs):
    return pay_prepayment(
        account,
        attempt_id=attempt or uuid.uuid4(),
        amount=amount,
        payment_method=method,
        by=account.created_by,
        **kwargs,
    )


def test_card_prepayment_becomes_credit_and_moves_every_project_to_tier_1(
    due, owner, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        attempt = pay(due, card(due), amount=D("25"))

    assert attempt.status == PaymentStatus.SUCCEEDED
    due.refresh_from_db()
    assert due.prepayment_status == PrepaymentStatus.PAID
    credit = attempt.credit
    assert (credit.kind, credit.original_amount) == (CreditKind.PREPAYMENT, D("25"))
    assert ledger.balances(due).credit_remaining == D("25")
    projects = due.project_links.values_list("project__tier", "project__billing_state")
    assert sorted(projects) == [(Tier.TIER_1, BillingState.ACTIVE)] * 2
    assert TestProcessorCharge.objects.count() == 1
    deliver_mail()
    assert [m.subject for m in mail.outbox] == ["Your prepayment was received"]
    assert "USD 25.00" in mail.outbox[0].body and "One (" in mail.outbox[0].body


def test_amount_below_the_required_one_is_refused(due):
    with pytest.raises(BillingError, match="at least USD 10"):
        pay(due, card(due), amount=D("9.99"))

    assert not Prepayment.objects.exists()
    assert not TestProcessorCharge.objects.exists()


@pytest.mark.parametrize(
    ("number", "code", "reason"),
    [
        ("4000000000009995", "insufficient_funds", "Your card was declined for insufficient funds."),
        ("4000000000000119", "processing_error", "The card could not be processed. Try again in a few minutes."),
    ],
)
def test_declined_charge_grants_nothing_and_a_retry_succeeds(due, number, code, reason):
    failed = pay(due, card(due, number))

    assert (failed.status, failed.failure_code, str(failed.failure_reason)) == (PaymentStatus.FAILED, code, reason)
    assert failed.credit is None
    assert ledger.balances(due).credit_remaining == D("0")
    due.refresh_from_db()
    assert due.prepayment_status == PrepaymentStatus.REQUIRED

    assert pay(due, card(due)).status == PaymentStatus.SUCCEEDED
    assert LedgerEntry.objects.filter(kind=EntryKind.CREDIT_GRANT, credit__kind=CreditKind.PREPAYMENT).count() == 1


def test_repeating_one_attempt_charges_once(due):
    method, attempt = card(due), uuid.uuid4()

    first = pay(due, method, attempt=attempt)
    again = pay(due, method, attempt=attempt)

    assert first.pk == again.pk == attempt
    assert TestProcessorCharge.objects.count() == 1
    assert Prepayment.objects.count() == 1


def test_a_second_attempt_after_success_is_refused(due):
    pay(due, card(due))

    with pytest.raises(BillingError, match="No prepayment is due"):
        pay(due, card(due))
    assert TestProcessorCharge.objects.count() == 1


def test_timeout_is_unknown_until_reconciled_from_the_processors_records(due, settings):
    attempt = pay(due, card(due, settings.TEST_PROCESSOR_TIMEOUT_CARD))

    assert attempt.status == PaymentStatus.UNKNOWN
    assert ledger.balances(due).credit_remaining == D("0")
    assert TestProcessorCharge.objects.get().status == "succeeded"  # the money did move

    call_command("reconcile_payments")
    attempt.refresh_from_db()
    assert attempt.status == PaymentStatus.SUCCEEDED
    assert ledger.balances(due).credit_remaining == D("10")

    assert reconcile_payments() == []  # idempotent
    assert LedgerEntry.objects.filter(kind=EntryKind.CREDIT_GRANT).count() == 1


def test_stale_attempt_the_processor_never_saw_is_failed(due, owner):
    attempt = Prepayment.objects.create(account=due, amount=D("10"), payment_method=card(due), created_by=owner)

    with time_machine.travel(timezone.now() + timedelta(minutes=10)):
        reconcile_payments()

    attempt.refresh_from_db()
    assert (attempt.status, attempt.failure_code) == (PaymentStatus.FAILED, "processing_error")


def test_bank_transfer_is_pending_until_confirmed(due, owner):
    attempt = pay(due, bank_transfer=True)

    assert attempt.status == PaymentStatus.PENDING
    assert attempt.processor_reference.startswith("ch_test_")
    assert reconcile_payments() == []  # still waiting for the money
    with pytest.raises(BillingError):
        pay(due, card(due))  # one prepayment at a time

    staff = make_user("staff@example.com", is_staff=True)
    confirmed = confirm_bank_transfer(attempt, by=staff, reason="Seen on the bank statement")

    assert confirmed.status == PaymentStatus.SUCCEEDED
    assert ledger.balances(due).credit_remaining == D("10")


def test_bank_transfer_not_received(due):
    attempt = pay(due, bank_transfer=True)

    failed = fail_bank_transfer(attempt, by=make_user(is_staff=True), reason="Nothing arrived")

    assert (failed.status, failed.failure_code) == (PaymentStatus.FAILED, "transfer_not_received")
    due.refresh_from_db()
    assert due.prepayment_outstanding


def test_prepayment_credit_pays_after_the_welcome_credit_and_never_reduces_it(due, owner):
    welcome = ledger.grant_credit(due, kind=CreditKind.WELCOME, amount=D("300"), welcome_for=owner)
    pay(due, card(due))

    ledger.record_usage_charge(due, amount=D("5"), description="usage", idempotency_key="u1")

    remaining = {c.kind: c.remaining for c in ledger.credits_with_remaining(due)}
    assert remaining == {CreditKind.WELCOME: D("295"), CreditKind.PREPAYMENT: D("10")}
    assert welcome.original_amount == D("300")


def test_prepayment_required_email_in_the_users_language(owner, django_capture_on_commit_callbacks):
    owner.language = "ja"
    owner.save()
    from billing.services import finish_setup, start_setup
    from tests.factories import make_card, make_profile

    session = start_setup(owner, project=make_project(owner))
    session.country_id, session.terms_accepted = "IN", True
    session.payment_method = make_card(make_profile(owner, country="IN"))
    session.save()

    with django_capture_on_commit_callbacks(execute=True):
        finish_setup(session)

    deliver_mail()
    (message,) = mail.outbox
    assert message.to == [owner.email]
    assert message.subject == "対応が必要: 請求先アカウントの 1 回限りの前払い"
    assert "USD 10.00" in message.body


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_submissions_of_one_attempt_charge_once():
    owner = make_user("concurrent@example.com")
    account = make_account(owner, prepayment_due=True, projects=[make_project(owner)])
    method = card(account)
    attempt = uuid.uuid4()

    results, errors = at_once(lambda _: pay(account, method, attempt=attempt).pk, 50)

    assert errors == []
    assert set(results) == {attempt}
    assert TestProcessorCharge.objects.count() == 1
    assert LedgerEntry.objects.filter(kind=EntryKind.CREDIT_GRANT, credit__kind=CreditKind.PREPAYMENT).count() == 1
    assert Prepayment.objects.get().status == PaymentStatus.SUCCEEDED


# Refunds


@pytest.fixture
def paid(due):
    pay(due, card(due), amount=D("40"))
    return due


def test_refund_request_waits_for_review_and_approval_refunds_from_the_prepayment_credit(paid, owner):
    request = request_refund(paid, amount=D("30"), reason="No longer needed", by=owner)
    assert request.status == RefundStatus.PENDING

    with pytest.raises(BillingError, match=r"at most USD 10\.00"):
        request_refund(paid, amount=D("10.01"), reason="", by=owner)

    approve_refund(request, by=make_user(is_staff=True), note="ok")

    request.refresh_from_db()
    assert request.status == RefundStatus.REFUNDED
    assert [(e.amount, e.label) for e in LedgerEntry.objects.filter(kind=EntryKind.REFUND)] == [
        (D("-30"), "Prepayment refund")
    ]
    assert ledger.balances(paid).credit_remaining == D("10")
    refund = TestProcessorCharge.objects.get(idempotency_key=f"refund:{request.pk}")
    assert (refund.status, refund.amount) == ("refunded", D("-30"))

    approve_refund(request, by=make_user(is_staff=True))  # a second approval changes nothing
    assert TestProcessorCharge.objects.filter(status="refunded").count() == 1
    assert LedgerEntry.objects.filter(kind=EntryKind.REFUND).count() == 1


def test_refund_never_exceeds_what_remains_after_usage(paid, owner):
    request = request_refund(paid, amount=D("40"), reason="", by=owner)
    ledger.record_usage_charge(paid, amount=D("15"), description="usage", idempotency_key="u1")

    with pytest.raises(BillingError, match="no longer covers"):
        approve_refund(request, by=make_user(is_staff=True))

    request.refresh_from_db()
    assert request.status == RefundStatus.PENDING
    assert not LedgerEntry.objects.filter(kind=EntryKind.REFUND).exists()


def test_rejected_refund_frees_the_amount(paid, owner):
    request = request_refund(paid, amount=D("40"), reason="", by=owner)

    reject_refund(request, by=make_user(is_staff=True), note="Credit already used in a promotion")

    assert RefundRequest.objects.get().status == RefundStatus.REJECTED
    assert request_refund(paid, amount=D("40"), reason="", by=owner).status == RefundStatus.PENDING


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_refund_requests_never_exceed_the_balance():
    owner = make_user("refunds@example.com")
    account = make_account(owner, prepayment_due=True, projects=[make_project(owner)])
    pay(account, card(account), amount=D("40"))
    accepted, refused = at_once(lambda _: request_refund(account, amount=D("25"), reason="", by=owner), 10)

    assert len(accepted) == 1
    assert len(refused) == 9 and all(isinstance(error, BillingError) for error in refused)
    assert RefundRequest.objects.count() == 1


def test_processor_lookup_knows_nothing_of_an_unknown_key(db):
    assert get_processor().lookup(idempotency_key="nope") is None
