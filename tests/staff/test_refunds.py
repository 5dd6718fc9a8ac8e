"""Refund requests in the staff console: the queue, decisions with a reason, the two-person rule (X10)."""

import pytest
from django.urls import reverse

from billing import ledger
from billing.models import EntryKind, LedgerEntry, RefundRequest, RefundStatus, TestProcessorCharge
from billing.payments import approve_refund, reject_refund
from billing.services import BillingError
from studio.models import ActorKind
from tests.factories import make_staff
from tests.staff.finance import D, audit, nav_count, queries, records, refund_of


def refunds_at_processor():
    return [(c.idempotency_key, c.amount) for c in TestProcessorCharge.objects.filter(status="refunded")]


def refund_entries(account):
    return [
        (e.kind, e.amount, e.idempotency_key.split(":")[0])
        for e in LedgerEntry.objects.filter(account=account, kind__in=[EntryKind.REFUND, EntryKind.ADJUSTMENT])
    ]


def request_row(refund, amount):
    return ("refund.request", refund.requested_by.email, ActorKind.USER, {}, {"amount": amount}, "")


# The service: the two-person rule


def test_a_refund_at_the_threshold_is_made_by_one_approval(finance):
    refund = refund_of("100")

    approve_refund(refund, by=finance, note="Customer left")

    refund.refresh_from_db()
    assert (refund.status, refund.reviewed_by, refund.review_note, refund.first_approved_by) == (
        RefundStatus.REFUNDED,
        finance,
        "Customer left",
        None,
    )
    assert refunds_at_processor() == [(f"refund:{refund.pk}", D("-100.00"))]
    assert refund_entries(refund.account) == [(EntryKind.REFUND, D("-100"), "refund")]
    assert ledger.balances(refund.account).credit_remaining == D("150")
    assert audit(refund) == [
        request_row(refund, "100"),
        (
            "refund.approve",
            finance.email,
            ActorKind.STAFF,
            {"status": "pending"},
            {"status": "refunded"},
            "Customer left",
        ),
    ]


def test_a_refund_above_the_threshold_waits_for_a_second_finance_member(finance, finance2):
    refund = refund_of("100.01")

    first = approve_refund(refund, by=finance, note="Looks right")

    assert (first.status, first.first_approved_by, first.first_approval_note) == (
        RefundStatus.PENDING,
        finance,
        "Looks right",
    )
    assert first.first_approved_at is not None
    assert refunds_at_processor() == []
    assert refund_entries(refund.account) == []
    assert ledger.balances(refund.account).credit_remaining == D("250")

    with pytest.raises(BillingError, match="another Finance member must give the second"):
        approve_refund(refund, by=finance, note="Again")
    assert refunds_at_processor() == []

    second = approve_refund(refund, by=finance2, note="Agreed")

    assert (second.status, second.reviewed_by, second.review_note) == (RefundStatus.REFUNDED, finance2, "Agreed")
    assert refunds_at_processor() == [(f"refund:{refund.pk}", D("-100.01"))]
    assert refund_entries(refund.account) == [(EntryKind.REFUND, D("-100.01"), "refund")]
    assert ledger.balances(refund.account).credit_remaining == D("149.99")
    assert audit(refund) == [
        request_row(refund, "100.01"),
        (
            "refund.first_approval",
            finance.email,
            ActorKind.STAFF,
            {"first_approved_by": None},
            {"first_approved_by": finance.email},
            "Looks right",
        ),
        ("refund.approve", finance2.email, ActorKind.STAFF, {"status": "pending"}, {"status": "refunded"}, "Agreed"),
    ]

    approve_refund(refund, by=finance2)  # decided: a further approval changes nothing
    assert len(refunds_at_processor()) == 1 and len(audit(refund)) == 3


def test_the_threshold_is_configurable(settings, finance):
    settings.STAFF_APPROVAL_THRESHOLD = D("200")
    refund = refund_of("150")

    assert approve_refund(refund, by=finance, note="ok").status == RefundStatus.REFUNDED


def test_nobody_approves_their_own_refund_request(finance):
    account_owner = make_staff("staff-customer@staff.example", "Finance")
    refund = refund_of("20", owner=account_owner)

    with pytest.raises(BillingError, match="their own refund request"):
        approve_refund(refund, by=account_owner, note="mine")

    assert RefundRequest.objects.get().status == RefundStatus.PENDING
    assert refunds_at_processor() == []


def test_a_first_approved_refund_can_be_rejected(finance, finance2):
    refund = refund_of("150")
    approve_refund(refund, by=finance, note="ok")

    reject_refund(refund, by=finance2, note="Credit used in a promotion")

    refund.refresh_from_db()
    assert (refund.status, refund.reviewed_by, refund.first_approved_by) == (RefundStatus.REJECTED, finance2, finance)
    assert refunds_at_processor() == [] and refund_entries(refund.account) == []
    assert [row[0] for row in audit(refund)] == ["refund.request", "refund.first_approval", "refund.reject"]
    assert audit(refund)[-1] == (
        "refund.reject",
        finance2.email,
        ActorKind.STAFF,
        {"status": "pending"},
        {"status": "rejected"},
        "Credit used in a promotion",
    )


# The queue


@pytest.fixture
def queue(finance, finance2):
    """Four requests: waiting for review (USD 20 and 150), waiting for a second approval (150), rejected (30)."""
    small, big, half, done = refund_of("20"), refund_of("150"), refund_of("150"), refund_of("30")
    approve_refund(half, by=finance2, note="ok")
    reject_refund(done, by=finance2, note="no")
    return {"small": small, "big": big, "half": half, "done": done}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["small", "big", "half"]),
        ("?status=review", ["small", "big"]),
        ("?status=second", ["half"]),
        ("?status=decided", ["done"]),
        ("?above_threshold=on", ["big", "half"]),
        ("?status=review&above_threshold=on", ["big"]),
    ],
)
def test_the_queue_filters_by_stage_and_amount(client, finance, queue, query, expected):
    client.force_login(finance)

    response = client.get(reverse("staff:refunds") + query)

    assert [r.pk for r in records(response)] == [queue[name].pk for name in expected]


def test_the_queue_shows_each_requests_columns_and_the_nav_counts_its_default_view(client, finance, queue):
    client.force_login(finance)

    page = client.get(reverse("staff:refunds")).content.decode()

    assert "USD 150.00" in page and "Project ended" in page and "Waiting for a second approval" in page
    assert "finance2@staff.example" in page  # the first approver
    assert reverse("staff:refund-decide", args=[queue["half"].pk]) in page
    assert nav_count(finance, "Refund requests") == 3


def test_the_queue_makes_as_many_queries_for_three_rows_as_for_one(client, finance):
    client.force_login(finance)
    refund_of("20")
    one = queries(client, reverse("staff:refunds"))
    refund_of("150")
    approve_refund(refund_of("150"), by=finance, note="ok")

    assert queries(client, reverse("staff:refunds")) == one


# Deciding in the console


def decide(client, refund, **data):
    return client.post(reverse("staff:refund-decide", args=[refund.pk]), data)


def test_approving_in_the_console_refunds_and_goes_back_to_the_queue(client, finance):
    refund = refund_of("40")
    client.force_login(finance)

    response = decide(client, refund, decision="approve", reason="Customer left")

    assert (response.status_code, response["Location"]) == (302, reverse("staff:refunds"))
    refund.refresh_from_db()
    assert (refund.status, refund.review_note) == (RefundStatus.REFUNDED, "Customer left")
    assert ledger.balances(refund.account).credit_remaining == D("210")
    page = client.get(response["Location"]).content.decode()
    assert "Refunded USD 40.00." in page


def test_two_finance_members_approve_in_the_console_with_htmx(client, finance, finance2):
    refund = refund_of("150")
    client.force_login(finance)

    first = client.post(
        reverse("staff:refund-decide", args=[refund.pk]),
        {"decision": "approve", "reason": "ok"},
        headers={"HX-Request": "true"},
    )

    assert first.status_code == 200
    assert "close-modal" in first["HX-Trigger"] and "queue-changed" in first["HX-Trigger"]
    assert "First approval recorded" in first.content.decode()
    again = decide(client, refund, decision="approve", reason="twice")
    assert again.status_code == 422
    assert "another Finance member must give the second" in again.content.decode()

    client.force_login(finance2)
    decide(client, refund, decision="approve", reason="Agreed")

    refund.refresh_from_db()
    assert (refund.status, refund.first_approved_by, refund.reviewed_by) == (RefundStatus.REFUNDED, finance, finance2)
    assert refunds_at_processor() == [(f"refund:{refund.pk}", D("-150.00"))]


def test_rejecting_in_the_console(client, finance):
    refund = refund_of("40")
    client.force_login(finance)

    decide(client, refund, decision="reject", reason="Duplicate request")

    refund.refresh_from_db()
    assert (refund.status, refund.review_note) == (RefundStatus.REJECTED, "Duplicate request")
    assert refunds_at_processor() == []


@pytest.mark.parametrize(
    ("data", "errors"),
    [
        ({"decision": "approve", "reason": ""}, {"reason": ["This field is required."]}),
        ({"reason": "ok"}, {"decision": ["This field is required."]}),
        (
            {"decision": "refund-twice", "reason": "ok"},
            {"decision": ["Select a valid choice. refund-twice is not one of the available choices."]},
        ),
    ],
)
def test_a_decision_without_a_reason_or_choice_is_refused_and_changes_nothing(client, finance, data, errors):
    refund = refund_of("40")
    client.force_login(finance)

    response = decide(client, refund, **data)

    assert response.status_code == 422
    assert response.context["form"].errors == errors
    assert RefundRequest.objects.get().status == RefundStatus.PENDING
    assert len(audit(refund)) == 1


def test_the_decision_dialog_shows_the_request_and_its_history(client, finance, finance2):
    refund = refund_of("150")
    approve_refund(refund, by=finance2, note="First look")
    client.force_login(finance)

    page = client.get(reverse("staff:refund-decide", args=[refund.pk])).content.decode()

    assert "USD 150.00" in page and "First approved by finance2@staff.example (First look)" in page
    assert "refund.first_approval" in page and 'name="reason"' in page


# Who may


def urls(refund):
    return [reverse("staff:refunds"), reverse("staff:refund-decide", args=[refund.pk])]


@pytest.mark.parametrize("persona", [None, "customer", "groupless_staff", "support"])
@pytest.mark.parametrize("method", ["get", "post"])
def test_refund_pages_are_404_to_all_but_finance(db, client, request, persona, method):
    refund = refund_of("40")
    if persona:
        client.force_login(request.getfixturevalue(persona))
    for url in urls(refund):
        assert getattr(client, method)(url, {"decision": "approve", "reason": "x"}).status_code == 404
    assert RefundRequest.objects.get().status == RefundStatus.PENDING


def test_superuser_may_open_the_refund_pages(client, superuser):
    refund = refund_of("40")
    client.force_login(superuser)
    assert [client.get(url).status_code for url in urls(refund)] == [200, 200]


def test_an_unknown_refund_is_404(client, finance):
    client.force_login(finance)
    assert client.get(reverse("staff:refund-decide", args=[999999])).status_code == 404


def test_admin_approval_follows_the_two_person_rule(client, finance, finance2):
    refund = refund_of("150")
    finance.is_superuser = True
    finance.save()
    client.force_login(finance)
    selected = {"action": "approve", "_selected_action": [refund.pk]}

    response = client.post("/admin/billing/refundrequest/", selected, follow=True)

    assert "first approval recorded" in response.content.decode()
    refund.refresh_from_db()
    assert (refund.status, refund.first_approved_by, refund.first_approval_note) == (
        RefundStatus.PENDING,
        finance,
        "Decided in the admin",
    )
