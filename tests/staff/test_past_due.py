"""The past-due accounts queue: accounts with a statement whose payment failed, with dunning's state."""

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.urls import reverse

from billing.models import AccountStatus, AttemptStatus, Statement, StatementPayment, StatementStatus
from billing.services import set_account_status
from tests.factories import make_account, make_user
from tests.staff.finance import D, nav_count, queries, records

LA = ZoneInfo("America/Los_Angeles")
T0 = datetime(2026, 11, 2, 0, 35, tzinfo=LA)  # the charge on the 2nd failed
NOW = T0 + timedelta(days=2)


def statement(account, month, amount, *, status=StatementStatus.PAYMENT_FAILED, failed_at=T0, retries=()):
    """A statement of `account` for `month` whose first charge failed at `failed_at`, with retries `retries` made."""
    made = Statement.objects.create(
        account=account,
        month=month,
        status=status,
        usage_total=D(amount),
        credits_total=D("0"),
        amount_due=D(amount),
        first_failed_at=failed_at if status == StatementStatus.PAYMENT_FAILED else None,
    )
    for attempt, retry in enumerate([None, *retries], start=1):
        StatementPayment.objects.create(
            statement=made, attempt=attempt, retry=retry, amount=D(amount), status=AttemptStatus.FAILED
        )
    return made


def account(name):
    return make_account(make_user(), name=name)


@pytest.fixture
def queue():
    """Three past-due accounts (one suspended, one with two failed months) and one that paid."""
    one, two, suspended, paid = account("One"), account("Two"), account("Suspended"), account("Paid")
    statement(one, date(2026, 10, 1), "15.00", retries=[1])
    statement(two, date(2026, 9, 1), "20.00", failed_at=T0 - timedelta(days=31), retries=[1, 2, 3])
    statement(two, date(2026, 10, 1), "5.50")
    statement(suspended, date(2026, 10, 1), "7.25", retries=[1, 2, 3])
    set_account_status(suspended, AccountStatus.SUSPENDED, by=None, reason="dunning", cause="past_due")
    statement(paid, date(2026, 10, 1), "9.00", status=StatementStatus.PAID)
    return {"one": one, "two": two, "suspended": suspended, "paid": paid}


def rows(response):
    return [
        (r.account.display_name, r.amount_due, r.oldest, r.retries, r.next_retry_at, r.account.status)
        for r in records(response)
    ]


def test_the_queue_shows_amount_due_oldest_month_retries_and_next_retry(client, finance, queue):
    client.force_login(finance)

    with time_machine.travel(NOW, tick=False):
        response = client.get(reverse("staff:past-due"))

    assert rows(response) == [
        ("Two", D("25.50"), date(2026, 9, 1), 3, T0 + timedelta(days=1), AccountStatus.ACTIVE),
        ("One", D("15.00"), date(2026, 10, 1), 1, T0 + timedelta(days=3), AccountStatus.ACTIVE),
        ("Suspended", D("7.25"), date(2026, 10, 1), 3, None, AccountStatus.SUSPENDED),
    ]
    page = response.content.decode()
    assert "USD 25.50" in page and "No retry left" in page and "Past-due statement" in page
    assert reverse("staff:account-status", args=[queue["suspended"].account_id]) in page
    assert nav_count(finance, "Past-due accounts") == 3


@pytest.mark.parametrize(("query", "expected"), [("?suspended=yes", ["Suspended"]), ("?suspended=no", ["Two", "One"])])
def test_the_queue_filters_suspended_accounts(client, finance, queue, query, expected):
    client.force_login(finance)

    response = client.get(reverse("staff:past-due") + query)

    assert [r.account.display_name for r in records(response)] == expected


def test_the_queue_makes_as_many_queries_for_three_rows_as_for_one(client, finance):
    client.force_login(finance)
    statement(account("A"), date(2026, 10, 1), "1.00", retries=[1])
    one = queries(client, reverse("staff:past-due"))
    statement(account("B"), date(2026, 10, 1), "2.00")
    other = account("C")
    statement(other, date(2026, 9, 1), "3.00", retries=[1, 2])
    statement(other, date(2026, 10, 1), "3.00")

    assert queries(client, reverse("staff:past-due")) == one


@pytest.mark.parametrize("persona", [None, "customer", "groupless_staff", "support"])
@pytest.mark.parametrize("method", ["get", "post"])
def test_the_queue_is_404_to_all_but_finance(db, client, request, persona, method):
    if persona:
        client.force_login(request.getfixturevalue(persona))
    assert getattr(client, method)(reverse("staff:past-due")).status_code == 404
