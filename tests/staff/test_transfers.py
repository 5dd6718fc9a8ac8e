"""Pending bank transfers in the staff console: the queue with its filters, confirm or fail with a reason."""

import uuid
from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from billing import ledger
from billing.models import BillingAccount, PaymentStatus, Prepayment, PrepaymentStatus
from billing.payments import pay_prepayment
from studio.models import ActorKind
from tests.factories import make_account, make_project, make_user
from tests.staff.finance import D, audit, nav_count, queries, records


def transfer(country="US", *, days_ago=0, amount="10"):
    """A bank-transfer prepayment started `days_ago` days ago, waiting for the money."""
    owner = make_user()
    with time_machine.travel(timezone.now() - timedelta(days=days_ago)):
        account = make_account(owner, country=country, prepayment_due=True, projects=[make_project(owner)])
        attempt = pay_prepayment(
            account, attempt_id=uuid.uuid4(), amount=D(amount), bank_transfer=True, payment_method=None, by=owner
        )
    assert attempt.status == PaymentStatus.PENDING
    return attempt


def decide(client, attempt, **data):
    return client.post(reverse("staff:transfer-decide", args=[attempt.pk]), data)


def settle_rows(attempt):
    return [row for row in audit(attempt) if row[0] == "prepayment.settle"]


def test_confirming_a_transfer_grants_the_prepayment_credit_with_the_reason_audited(client, finance):
    attempt = transfer(amount="25")
    client.force_login(finance)

    response = decide(client, attempt, decision="received", reason="On the statement of 2 Dec")

    assert (response.status_code, response["Location"]) == (302, reverse("staff:transfers"))
    attempt.refresh_from_db()
    assert attempt.status == PaymentStatus.SUCCEEDED
    account = BillingAccount.objects.get(pk=attempt.account_id)
    assert account.prepayment_status == PrepaymentStatus.PAID
    assert ledger.balances(account).credit_remaining == D("25")
    assert settle_rows(attempt) == [
        (
            "prepayment.settle",
            None,
            ActorKind.SYSTEM,
            {"status": "processing"},
            {"status": "pending", "failure": ""},
            "",
        ),
        (
            "prepayment.settle",
            finance.email,
            ActorKind.STAFF,
            {"status": "pending"},
            {"status": "succeeded", "failure": ""},
            "On the statement of 2 Dec",
        ),
    ]
    assert "Bank transfer confirmed" in client.get(response["Location"]).content.decode()


def test_marking_a_transfer_not_received_fails_it_and_the_prepayment_is_due_again(client, finance):
    attempt = transfer()
    client.force_login(finance)

    decide(client, attempt, decision="not_received", reason="Nothing after 14 days")

    attempt.refresh_from_db()
    assert (attempt.status, attempt.failure_code) == (PaymentStatus.FAILED, "transfer_not_received")
    account = BillingAccount.objects.get(pk=attempt.account_id)
    assert account.prepayment_outstanding
    assert ledger.balances(account).credit_remaining == D("0")
    assert settle_rows(attempt)[-1] == (
        "prepayment.settle",
        finance.email,
        ActorKind.STAFF,
        {"status": "pending"},
        {"status": "failed", "failure": "transfer_not_received"},
        "Nothing after 14 days",
    )


def test_a_decided_transfer_cannot_be_decided_again(client, finance, finance2):
    attempt = transfer()
    client.force_login(finance)
    decide(client, attempt, decision="received", reason="Arrived")
    client.force_login(finance2)

    response = decide(client, attempt, decision="not_received", reason="Oops")

    assert response.status_code == 422
    assert "Only a pending bank transfer can be marked as failed." in response.content.decode()
    assert Prepayment.objects.get().status == PaymentStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("data", "errors"),
    [
        ({"decision": "received", "reason": ""}, {"reason": ["This field is required."]}),
        ({"decision": "", "reason": "ok"}, {"decision": ["This field is required."]}),
    ],
)
def test_a_decision_without_reason_or_choice_is_refused_and_changes_nothing(client, finance, data, errors):
    attempt = transfer()
    client.force_login(finance)

    response = decide(client, attempt, **data)

    assert response.status_code == 422
    assert response.context["form"].errors == errors
    assert Prepayment.objects.get().status == PaymentStatus.PENDING


@pytest.fixture
def queue():
    """Pending transfers: US today, DE 4 days old, US 8 days old; and one card payment, never listed."""
    rows = {"us_new": transfer("US"), "de_4": transfer("DE", days_ago=4), "us_8": transfer("US", days_ago=8)}
    owner = make_user()
    account = make_account(owner, prepayment_due=True, projects=[make_project(owner)])
    pay_prepayment(
        account, attempt_id=uuid.uuid4(), amount=D("10"), payment_method=account.primary_payment_method, by=owner
    )
    return rows


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["us_8", "de_4", "us_new"]),
        ("?age=3", ["us_8", "de_4"]),
        ("?age=7", ["us_8"]),
        ("?country=US", ["us_8", "us_new"]),
        ("?country=DE&age=7", []),
    ],
)
def test_the_queue_lists_pending_transfers_oldest_first_by_age_and_country(client, finance, queue, query, expected):
    client.force_login(finance)

    response = client.get(reverse("staff:transfers") + query)

    assert [p.pk for p in records(response)] == [queue[name].pk for name in expected]


def test_the_nav_counts_the_queues_default_view(client, finance, queue):
    client.force_login(finance)
    page = client.get(reverse("staff:transfers")).content.decode()
    assert nav_count(finance, "Bank transfers") == 3
    assert reverse("staff:transfer-decide", args=[queue["de_4"].pk]) in page
    assert queue["de_4"].processor_reference in page


def test_the_queue_makes_as_many_queries_for_three_rows_as_for_one(client, finance):
    client.force_login(finance)
    transfer("US")
    one = queries(client, reverse("staff:transfers"))
    transfer("DE")
    transfer("US", days_ago=5)

    assert queries(client, reverse("staff:transfers")) == one


@pytest.mark.parametrize("persona", [None, "customer", "groupless_staff", "support"])
@pytest.mark.parametrize("method", ["get", "post"])
def test_transfer_pages_are_404_to_all_but_finance(db, client, request, persona, method):
    attempt = transfer()
    if persona:
        client.force_login(request.getfixturevalue(persona))
    for url in [reverse("staff:transfers"), reverse("staff:transfer-decide", args=[attempt.pk])]:
        assert getattr(client, method)(url, {"decision": "received", "reason": "x"}).status_code == 404
    assert Prepayment.objects.get().status == PaymentStatus.PENDING


def test_a_card_payment_is_no_transfer_to_decide(client, finance):
    owner = make_user()
    account = make_account(owner, prepayment_due=True, projects=[make_project(owner)])
    paid = pay_prepayment(
        account, attempt_id=uuid.uuid4(), amount=D("10"), payment_method=account.primary_payment_method, by=owner
    )
    client.force_login(finance)
    assert client.get(reverse("staff:transfer-decide", args=[paid.pk])).status_code == 404


def test_admin_confirmation_records_the_admin_reason(client, superuser):
    attempt = transfer()
    client.force_login(superuser)

    client.post("/admin/billing/prepayment/", {"action": "confirm_transfer", "_selected_action": [attempt.pk]})

    attempt.refresh_from_db()
    assert attempt.status == PaymentStatus.SUCCEEDED
    assert settle_rows(attempt)[-1][5] == "Decided in the admin"
