"""The two-person rule (X10) over 30 days: a goodwill credit or a refund counts with the same account's others of
the last payments.APPROVAL_WINDOW, so splitting one into parts at or below the threshold still needs a second
Finance member."""

from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from billing.goodwill import recent_goodwill, reject_goodwill, request_goodwill
from billing.models import Credit, GoodwillReason, GoodwillStatus, RefundRequest, RefundStatus
from billing.payments import APPROVAL_WINDOW, approve_refund, recent_refunds, reject_refund, request_refund
from billing.services import BillingError
from tests.factories import make_account, make_user
from tests.staff.finance import D, paid_account

JUST_OUT = APPROVAL_WINDOW + timedelta(seconds=1)
JUST_IN = APPROVAL_WINDOW - timedelta(seconds=1)


def test_the_window_is_thirty_days():
    assert timedelta(days=30) == APPROVAL_WINDOW


# Goodwill


@pytest.fixture
def account(customer):
    return make_account(customer, name="Customer billing")


def ask(account, by, amount="100"):
    return request_goodwill(
        account,
        amount=D(amount),
        reason_code=GoodwillReason.SERVICE_ISSUE,
        note="Outage",
        expires_at=timezone.now() + timedelta(days=90),
        by=by,
    )


def statuses(grants):
    return [GoodwillStatus(g.status).value for g in grants]


def test_five_goodwill_credits_of_100_only_the_first_is_granted_at_once(account, finance):
    grants = [ask(account, finance) for _ in range(5)]

    assert statuses(grants) == ["granted", "pending", "pending", "pending", "pending"]
    assert [c.original_amount for c in Credit.objects.filter(account=account)] == [D("100.00")]
    assert recent_goodwill(account) == D("500.00")


def test_goodwill_adding_up_to_exactly_the_threshold_is_granted_at_once(account, finance):
    grants = [ask(account, finance, "60"), ask(account, finance, "40"), ask(account, finance, "0.01")]

    assert statuses(grants) == ["granted", "granted", "pending"]


def test_pending_goodwill_counts_and_rejected_goodwill_does_not(account, finance, finance2):
    pending = ask(account, finance, "150")
    assert statuses([ask(account, finance, "1")]) == ["pending"]  # 150 pending + 1

    reject_goodwill(pending, by=finance2, note="No")

    assert statuses([ask(account, finance, "99")]) == ["granted"]  # the rejected 150 is out: 1 pending + 99 = 100


def test_goodwill_of_another_account_does_not_count(account, finance):
    ask(make_account(make_user()), finance, "100")

    assert statuses([ask(account, finance, "100")]) == ["granted"]


def test_goodwill_older_than_30_days_no_longer_counts(account, finance):
    start = timezone.now()
    ask(account, finance, "100")
    ask(account, finance, "100")  # pending

    with time_machine.travel(start + JUST_IN):
        assert statuses([ask(account, finance, "1")]) == ["pending"]
    with time_machine.travel(start + JUST_OUT):
        # The two of day 0 are out of the window; the USD 1 of day 29 is in: 1 + 99 = 100.
        assert statuses([ask(account, finance, "99")]) == ["granted"]
        assert recent_goodwill(account) == D("100.00")


def test_the_goodwill_pages_state_the_window(client, account, finance):
    client.force_login(finance)

    listing = client.get(reverse("staff:goodwill")).content.decode()
    dialog = client.get(reverse("staff:goodwill-new", args=[account.account_id])).content.decode()

    assert (
        "A goodwill credit is granted at once while it and the account's other goodwill credits granted or "
        "pending from the last 30 days come to at most USD 100.00; above that, another Finance member must approve "
        "it." in listing
    )
    assert "goodwill credits granted or pending from the last 30 days come to at most USD 100.00, it is" in dialog


# Refunds


@pytest.fixture
def refunds(customer):
    """Five pending refund requests of USD 100 on one account that prepaid USD 600."""
    account = paid_account(customer, "600")
    return [request_refund(account, amount=D("100"), reason="Split", by=customer) for _ in range(5)]


def state(refund) -> tuple:
    refund.refresh_from_db()
    return refund.status, refund.first_approved_by.email if refund.first_approved_by else None


def test_five_pending_refunds_of_100_each_take_two_approvals(refunds, finance, finance2):
    approve_refund(refunds[0], by=finance, note="ok")  # 100 + the four others waiting (400): the first of two

    assert recent_refunds(refunds[0]) == D("400.00")
    assert [state(r) for r in refunds] == [(RefundStatus.PENDING, "finance@staff.example")] + [
        (RefundStatus.PENDING, None)
    ] * 4

    approve_refund(refunds[0], by=finance2, note="agreed")  # the second approval refunds it

    assert state(refunds[0]) == (RefundStatus.REFUNDED, "finance@staff.example")
    assert refunds[0].reviewed_by == finance2


def test_two_small_refunds_approved_at_once_count_each_other(customer, finance):
    """Each decision is made under the account's lock and counts the other request while it still waits, so two
    approvals whose processor calls overlap cannot each pass alone."""
    account = paid_account(customer, "300")
    first, second = (request_refund(account, amount=D("60"), reason="x", by=customer) for _ in range(2))

    approve_refund(first, by=finance, note="ok")

    assert state(first) == (RefundStatus.PENDING, "finance@staff.example")
    assert recent_refunds(second) == D("60.00")


def test_a_first_approved_refund_always_needs_someone_else_even_once_the_others_left_the_window(
    refunds, finance, finance2
):
    approve_refund(refunds[0], by=finance, note="ok")
    approve_refund(refunds[1], by=finance, note="first")

    with time_machine.travel(timezone.now() + JUST_OUT):
        with pytest.raises(BillingError, match="another Finance member must give the second"):
            approve_refund(refunds[1], by=finance, note="again")
        approve_refund(refunds[1], by=finance2, note="second")

    assert state(refunds[1]) == (RefundStatus.REFUNDED, "finance@staff.example")


def test_rejected_refunds_do_not_count(refunds, finance, finance2):
    approve_refund(refunds[0], by=finance, note="first")
    approve_refund(refunds[0], by=finance2, note="second")  # refunded
    for refund in (refunds[1], refunds[3], refunds[4]):
        reject_refund(refund, by=finance2, note="no")
    reject_refund(refunds[0], by=finance2, note="no")  # already refunded: unchanged

    assert recent_refunds(refunds[2]) == D("100.00")


def test_refunds_of_another_account_do_not_count(refunds, finance):
    other_owner = make_user()
    other = request_refund(paid_account(other_owner, "300"), amount=D("100"), reason="x", by=other_owner)

    approve_refund(other, by=finance, note="ok")

    assert state(other) == (RefundStatus.REFUNDED, None)
    assert recent_refunds(refunds[0]) == D("400.00")  # its own account's four others, not the other account's


def test_a_refund_after_30_days_needs_one_approval_again(customer, finance, finance2):
    account = paid_account(customer, "600")
    start = timezone.now()
    first = request_refund(account, amount=D("100"), reason="x", by=customer)
    approve_refund(first, by=finance, note="ok")  # refunded on day 0 with one approval

    with time_machine.travel(start + JUST_IN):
        second = request_refund(account, amount=D("100"), reason="x", by=customer)
        approve_refund(second, by=finance, note="day 29")
        assert state(second) == (RefundStatus.PENDING, "finance@staff.example")
        reject_refund(second, by=finance2, note="no")
    with time_machine.travel(start + timedelta(days=60)):
        third = request_refund(account, amount=D("100"), reason="x", by=customer)
        approve_refund(third, by=finance, note="day 60")
        assert state(third) == (RefundStatus.REFUNDED, None)
    assert state(first) == (RefundStatus.REFUNDED, None)


def test_refunds_adding_up_to_exactly_the_threshold_take_one_approval_each(customer, finance):
    account = paid_account(customer, "250")
    parts = []
    for amount in ("60", "40", "0.01"):
        parts.append(request_refund(account, amount=D(amount), reason="x", by=customer))
        approve_refund(parts[-1], by=finance, note="ok")

    assert [state(p) for p in parts] == [
        (RefundStatus.REFUNDED, None),
        (RefundStatus.REFUNDED, None),
        (RefundStatus.PENDING, "finance@staff.example"),
    ]


def test_the_refund_pages_state_the_window_and_the_decision_dialog_warns(client, refunds, finance):
    approve_refund(refunds[0], by=finance, note="ok")
    client.force_login(finance)

    listing = client.get(reverse("staff:refunds")).content.decode()
    dialog = client.get(reverse("staff:refund-decide", args=[refunds[1].pk])).content.decode()

    assert (
        "A refund needs the approval of two Finance members when it, the account's other refunds still waiting and "
        "those made in the last 30 days come to more than USD 100.00; nobody approves a request twice." in listing
    )
    assert (
        "This refund, the account's other refunds still waiting and those made in the last 30 days come to more "
        "than USD 100.00: your approval is the first of two." in dialog
    )
    assert RefundRequest.objects.filter(status=RefundStatus.PENDING).count() == 5  # refunds[0]: first approval only
