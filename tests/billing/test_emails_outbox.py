"""The mail server is down while a billing change commits: the change succeeds, nothing is charged
twice, and the e-mail goes out once the server is back (SMTP to a port where nothing listens).

These tests commit for real (transaction=True): e-mail used to be sent after the commit, which is
where an unreachable mail server turned a finished change into a 500."""

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
    BillingAccount,
    Credit,
    PaymentStatus,
    Prepayment,
    RefundRequest,
    RefundStatus,
    TestProcessorCharge,
)
from billing.payments import pay_prepayment, request_refund
from studio.models import EmailStatus, OutboundEmail, Tier
from tests.factories import deliver_mail, make_account, make_key, make_project, make_user

pytestmark = pytest.mark.django_db(transaction=True)

CONTACT = {
    "profile_type": "individual",
    "name": "Ada Lovelace",
    "address_line1": "1 MG Road",
    "city": "Bengaluru",
    "postal_code": "560001",
    "country": "IN",
    "email": "ada@example.com",
    "phone": "+91 80 5555 0100",
}
CARD = {"number": "4242 4242 4242 4242", "exp_month": "12", "exp_year": str(timezone.now().year + 2), "cvc": "123"}


def waiting_after_one_failed_attempt(caplog) -> OutboundEmail:
    """The one e-mail of the change: stored, tried once (the deliver-now job after the commit)."""
    (row,) = OutboundEmail.objects.filter(status=EmailStatus.PENDING)
    assert (row.attempts, row.sent_at) == (1, None)
    assert row.last_error == "ConnectionRefusedError: [Errno 111] Connection refused"
    assert f"outbox: message {row.pk} (1 recipients) attempt 1 failed" in caplog.text
    assert mail.outbox == []
    return row


def delivered_once_smtp_is_back(smtp_back, row) -> list:
    smtp_back()
    with time_machine.travel(row.next_attempt_at):
        first = list(deliver_mail())
        assert list(deliver_mail()) == first  # delivering again sends nothing more
    row.refresh_from_db()
    assert (row.status, row.attempts) == (EmailStatus.SENT, 2)
    return first


def test_setup_finishes_with_smtp_down_and_the_prepayment_e_mail_follows(client_for, owner, smtp_down, caplog):
    project = make_project(owner, name="My app")
    make_key(project)
    client = client_for(owner)
    sid = client.get(f"/billing/setup/?project={project.project_id}")["Location"].split("/")[3]
    client.post(f"/billing/setup/{sid}/account/", {"country": "IN", "accept_terms": "on"})
    client.post(f"/billing/setup/{sid}/contact/", CONTACT)
    client.post(f"/billing/setup/{sid}/payment-method/", CARD)

    response = client.post(f"/billing/setup/{sid}/finish/")

    assert response["Location"] == f"/billing/setup/{sid}/status/"
    assert "a one-time prepayment of USD 10.00 is needed" in client.get(response["Location"]).content.decode()
    assert (BillingAccount.objects.count(), Credit.objects.count(), TestProcessorCharge.objects.count()) == (1, 1, 0)
    row = waiting_after_one_failed_attempt(caplog)
    (message,) = delivered_once_smtp_is_back(smtp_down, row)
    assert (message.to, message.subject) == (
        [owner.email],
        "Action required: a one-time prepayment for your billing account",
    )


def test_prepayment_succeeds_with_smtp_down_charges_once_and_the_receipt_follows(client_for, owner, smtp_down, caplog):
    account = make_account(owner, prepayment_due=True, projects=[make_project(owner, name="Needs prepayment")])
    client = client_for(owner)
    data = {"attempt": str(uuid.uuid4()), "amount": "10.00", "method": str(account.primary_payment_method.pk)}

    response = client.post(f"/billing/accounts/{account.account_id}/prepayment/", data)
    again = client.post(f"/billing/accounts/{account.account_id}/prepayment/", data)  # the user retries

    assert "Payment of USD 10.00 received." in response.content.decode()
    assert again["Location"] == f"/billing/accounts/{account.account_id}/prepayment/{data['attempt']}/"
    assert list(TestProcessorCharge.objects.values_list("status", "amount")) == [("succeeded", Decimal("10.00"))]
    assert Prepayment.objects.get().status == PaymentStatus.SUCCEEDED
    row = waiting_after_one_failed_attempt(caplog)
    (message,) = delivered_once_smtp_is_back(smtp_down, row)
    assert (message.to, message.subject) == ([owner.email], "Your prepayment was received")


@pytest.fixture
def refund_requested(owner):
    """A paid USD 40 prepayment (its receipt delivered) and a USD 30 refund request."""
    account = make_account(owner, prepayment_due=True, projects=[make_project(owner)])
    pay_prepayment(
        account, attempt_id=uuid.uuid4(), amount=Decimal("40"), payment_method=account.primary_payment_method, by=owner
    )
    mail.outbox.clear()
    return request_refund(account, amount=Decimal("30"), reason="Project ended", by=owner)


@pytest.mark.parametrize(
    ("action", "status", "subject", "charges"),
    [
        (
            "approve",
            RefundStatus.REFUNDED,
            "Your refund of USD 30.00 was approved",
            [("refunded", Decimal("-30.00")), ("succeeded", Decimal("40.00"))],
        ),
        ("reject", RefundStatus.REJECTED, "Your refund request was not approved", [("succeeded", Decimal("40.00"))]),
    ],
)
def test_refund_decision_with_smtp_down_is_made_once_and_the_requester_is_told_later(
    client, owner, refund_requested, request, caplog, action, status, subject, charges
):
    smtp_back = request.getfixturevalue("smtp_down")
    client.force_login(make_user("finance@example.com", is_staff=True, is_superuser=True))
    selected = {"action": action, "_selected_action": [refund_requested.pk]}

    response = client.post("/admin/billing/refundrequest/", selected, follow=True)
    client.post("/admin/billing/refundrequest/", selected)  # a second click changes nothing

    assert "Reviewed the selected refund requests." in response.content.decode()
    assert RefundRequest.objects.get().status == status
    assert sorted(TestProcessorCharge.objects.values_list("status", "amount")) == charges
    assert ledger.balances(refund_requested.account).credit_remaining == (
        Decimal("10") if action == "approve" else Decimal("40")
    )
    row = waiting_after_one_failed_attempt(caplog)
    (message,) = delivered_once_smtp_is_back(smtp_back, row)
    assert (message.to, message.subject) == ([owner.email], subject)


def test_tier_upgrade_with_smtp_down_is_kept_and_the_owner_is_told_later(owner, smtp_down, caplog):
    project = make_project(owner, name="Spender")
    account = make_account(owner, projects=[project])
    ledger.record_usage_charge(account, amount=Decimal("300"), description="usage", idempotency_key="s1")
    ledger.record_payment(account, amount=Decimal("300"), description="Statement paid", idempotency_key="p1")

    with time_machine.travel(timezone.now() + timedelta(days=31)):
        call_command("evaluate_tiers")
        call_command("evaluate_tiers")
        row = waiting_after_one_failed_attempt(caplog)

    project.refresh_from_db()
    assert project.tier == Tier.TIER_2
    (message,) = delivered_once_smtp_is_back(smtp_down, row)
    assert (message.to, message.subject) == ([owner.email], "Spender is now on Tier 2")


def test_refund_decision_e_mail_is_in_the_requesters_language(owner, refund_requested, client):
    owner.language = "ja"
    owner.save()
    client.force_login(make_user("finance@example.com", is_staff=True, is_superuser=True))

    client.post("/admin/billing/refundrequest/", {"action": "reject", "_selected_action": [refund_requested.pk]})

    (message,) = deliver_mail()
    assert message.to == [owner.email]
    assert "— Studio Console チーム" in message.body  # rendered in Japanese (the new strings' translations follow)
