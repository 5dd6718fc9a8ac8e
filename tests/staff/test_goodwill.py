"""Goodwill credits: a reason code, a note and an expiry; above the threshold a second Finance member approves."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from billing import ledger
from billing.goodwill import approve_goodwill, reject_goodwill, request_goodwill
from billing.models import Credit, CreditKind, EntryKind, GoodwillGrant, GoodwillReason, GoodwillStatus, LedgerEntry
from billing.services import BillingError
from studio.models import ActorKind
from tests.factories import deliver_mail, make_account, make_user
from tests.staff.finance import D, audit, nav_count, queries, records

TOKYO = ZoneInfo("Asia/Tokyo")
NOW = datetime(2026, 12, 2, 10, 0, tzinfo=TOKYO)
EXPIRES = datetime(2027, 1, 1, tzinfo=TOKYO)  # the end of 31 December in Tokyo


@pytest.fixture
def account(customer):
    return make_account(customer, name="Customer billing")


def ask(account, by, amount="50", **fields):
    return request_goodwill(
        account,
        amount=D(amount),
        reason_code=fields.get("reason_code", GoodwillReason.SERVICE_ISSUE),
        note=fields.get("note", "Outage on 1 Dec"),
        expires_at=fields.get("expires_at", timezone.now() + timedelta(days=30)),
        by=by,
    )


def goodwill_entries(account):
    return [
        (e.kind, e.amount, e.credit.kind, e.credit.expires_at)
        for e in LedgerEntry.objects.filter(account=account).select_related("credit")
    ]


def request_row(grant, by, amount, status):
    after = {
        "amount": amount,
        "reason_code": "service_issue",
        "credit_expires_at": grant.credit_expires_at.isoformat(),
        "status": status,
    }
    return ("goodwill.request", by.email, ActorKind.STAFF, {}, after, "Outage on 1 Dec")


def grant_row(grant, by, note):
    after = {"status": "granted", "credit": grant.credit_id, "amount": str(grant.amount)}
    return ("goodwill.grant", by.email, ActorKind.STAFF, {"status": "pending"}, after, note)


# The service


def test_a_credit_at_the_threshold_is_granted_at_once(account, finance):
    grant = ask(account, finance, "100")

    grant.refresh_from_db()
    assert (grant.status, grant.decided_by, grant.decision_note) == (GoodwillStatus.GRANTED, finance, "Outage on 1 Dec")
    assert goodwill_entries(account) == [
        (EntryKind.CREDIT_GRANT, D("100"), CreditKind.GOODWILL, grant.credit_expires_at)
    ]
    assert ledger.balances(account).credit_remaining == D("100")
    assert grant.credit.source == "Goodwill credit: Service problem"
    assert audit(grant) == [
        request_row(grant, finance, "100.00", "pending"),
        grant_row(grant, finance, "Outage on 1 Dec"),
    ]


def test_a_credit_above_the_threshold_waits_for_another_finance_member(account, finance, finance2):
    grant = ask(account, finance, "100.01")

    assert (grant.status, grant.credit) == (GoodwillStatus.PENDING, None)
    assert ledger.balances(account).credit_remaining == D("0")
    with pytest.raises(BillingError, match="their own goodwill credit"):
        approve_goodwill(grant, by=finance, note="mine")
    assert GoodwillGrant.objects.get().status == GoodwillStatus.PENDING

    approve_goodwill(grant, by=finance2, note="Agreed")

    grant.refresh_from_db()
    assert (grant.status, grant.decided_by, grant.decision_note) == (GoodwillStatus.GRANTED, finance2, "Agreed")
    assert goodwill_entries(account) == [
        (EntryKind.CREDIT_GRANT, D("100.01"), CreditKind.GOODWILL, grant.credit_expires_at)
    ]
    assert audit(grant) == [request_row(grant, finance, "100.01", "pending"), grant_row(grant, finance2, "Agreed")]

    approve_goodwill(grant, by=finance2, note="Again")  # decided: nothing more
    reject_goodwill(grant, by=finance2, note="Too late")
    assert Credit.objects.count() == 1 and len(audit(grant)) == 2


def test_a_pending_credit_can_be_rejected_by_anyone_in_finance_even_its_requester(account, finance):
    grant = ask(account, finance, "500")

    reject_goodwill(grant, by=finance, note="Asked for the wrong account")

    grant.refresh_from_db()
    assert (grant.status, grant.decided_by, grant.credit) == (GoodwillStatus.REJECTED, finance, None)
    assert Credit.objects.count() == 0
    assert audit(grant)[-1] == (
        "goodwill.reject",
        finance.email,
        ActorKind.STAFF,
        {"status": "pending"},
        {"status": "rejected"},
        "Asked for the wrong account",
    )


@pytest.mark.parametrize(
    ("amount", "expires_in", "note", "message"),
    [
        ("-5", 30, "x", "positive amount"),
        ("0", 30, "x", "positive amount"),
        ("1.001", 30, "x", "dollars and cents"),
        ("5", -1, "x", "expire in the future"),
        ("5", 30, "  ", "a note"),
    ],
)
def test_the_service_refuses_bad_requests(account, finance, amount, expires_in, note, message):
    with pytest.raises(BillingError, match=message):
        ask(account, finance, amount, note=note, expires_at=timezone.now() + timedelta(days=expires_in))
    assert GoodwillGrant.objects.count() == 0


def test_the_administrators_are_emailed_when_a_credit_is_granted(account, finance, customer):
    customer.time_zone = "Asia/Tokyo"
    customer.save()
    ask(account, finance, "40", expires_at=EXPIRES)

    [message] = deliver_mail()

    assert message.to == [customer.email]
    assert message.subject == "A credit of USD 40.00 was added to your billing account"
    assert "goodwill credit of USD 40.00 to Customer billing" in message.body
    assert "(Asia/Tokyo)" in message.body


# The console


def new_url(account):
    return reverse("staff:goodwill-new", args=[account.account_id])


def form(**fields):
    return {
        "amount": "40",
        "reason_code": "service_issue",
        "note": "Outage on 1 Dec",
        "expires_on": "2026-12-31",
        **fields,
    }


def test_a_credit_asked_for_in_the_console_expires_at_the_end_of_the_day_in_the_staff_members_zone(
    client, account, finance
):
    finance.time_zone = "Asia/Tokyo"
    finance.save()
    client.force_login(finance)

    with time_machine.travel(NOW, tick=False):
        response = client.post(new_url(account), form())

    assert (response.status_code, response["Location"]) == (302, reverse("staff:goodwill"))
    grant = GoodwillGrant.objects.get()
    assert (grant.amount, grant.status, grant.credit_expires_at) == (D("40.00"), GoodwillStatus.GRANTED, EXPIRES)
    assert grant.credit.expires_at == EXPIRES
    assert ledger.balances(account).credit_remaining == D("40")
    assert "Goodwill credit of USD 40.00 granted." in client.get(response["Location"]).content.decode()


def test_today_is_the_earliest_expiry_day(client, account, finance):
    finance.time_zone = "Asia/Tokyo"
    finance.save()
    client.force_login(finance)

    with time_machine.travel(NOW, tick=False):
        client.post(new_url(account), form(expires_on="2026-12-02"))

    assert GoodwillGrant.objects.get().credit_expires_at == datetime(2026, 12, 3, tzinfo=TOKYO)


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({"amount": "-5"}, {"amount": ["Ensure this value is greater than or equal to 0.01."]}),
        ({"amount": "1.234"}, {"amount": ["Ensure that there are no more than 2 decimal places."]}),
        ({"expires_on": "2026-12-01"}, {"expires_on": ["Choose today or a later day."]}),
        ({"note": ""}, {"note": ["This field is required."]}),
        (
            {"reason_code": "because"},
            {"reason_code": ["Select a valid choice. because is not one of the available choices."]},
        ),
    ],
)
def test_bad_input_is_refused_with_field_errors_and_nothing_changes(client, account, finance, fields, errors):
    finance.time_zone = "Asia/Tokyo"
    finance.save()
    client.force_login(finance)

    with time_machine.travel(NOW, tick=False):
        response = client.post(new_url(account), form(**fields))

    assert response.status_code == 422
    assert response.context["form"].errors == errors
    assert (GoodwillGrant.objects.count(), Credit.objects.count()) == (0, 0)


def test_a_large_credit_is_approved_in_the_console_by_a_second_member(client, account, finance, finance2):
    client.force_login(finance)
    client.post(new_url(account), form(amount="250"))
    grant = GoodwillGrant.objects.get()
    assert grant.status == GoodwillStatus.PENDING
    decide_url = reverse("staff:goodwill-decide", args=[grant.pk])

    own = client.post(decide_url, {"decision": "approve", "reason": "mine"})
    assert own.status_code == 422 and "their own goodwill credit" in own.content.decode()

    client.force_login(finance2)
    response = client.post(decide_url, {"decision": "approve", "reason": "Agreed"}, headers={"HX-Request": "true"})

    assert "queue-changed" in response["HX-Trigger"] and "Goodwill credit granted." in response.content.decode()
    grant.refresh_from_db()
    assert (grant.status, grant.decided_by) == (GoodwillStatus.GRANTED, finance2)
    assert ledger.balances(account).credit_remaining == D("250")


def test_a_decision_needs_a_reason(client, account, finance, finance2):
    grant = ask(account, finance, "250")
    client.force_login(finance2)

    response = client.post(reverse("staff:goodwill-decide", args=[grant.pk]), {"decision": "approve", "reason": ""})

    assert response.status_code == 422
    assert response.context["form"].errors == {"reason": ["This field is required."]}
    assert GoodwillGrant.objects.get().status == GoodwillStatus.PENDING


@pytest.fixture
def grants(account, finance, finance2):
    # The USD 20 one on another account: on this one, the pending USD 250 would make it wait too (30 days' sum).
    pending, granted = ask(account, finance, "250"), ask(make_account(make_user()), finance, "20")
    rejected = ask(account, finance, "300")
    reject_goodwill(rejected, by=finance2, note="No")
    return {"pending": pending, "granted": granted, "rejected": rejected}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["pending"]),
        ("?status=granted", ["granted"]),
        ("?status=rejected", ["rejected"]),
        ("?status=all", ["pending", "granted", "rejected"]),
    ],
)
def test_the_list_filters_by_status_and_shows_pending_by_default(client, finance, grants, query, expected):
    client.force_login(finance)

    response = client.get(reverse("staff:goodwill") + query)

    assert [g.pk for g in records(response)] == [grants[name].pk for name in expected]
    assert nav_count(finance, "Goodwill credits") == 1


def test_the_list_makes_as_many_queries_for_three_rows_as_for_one(client, account, finance):
    client.force_login(finance)
    ask(account, finance, "20")
    url = reverse("staff:goodwill") + "?status=all"
    one = queries(client, url)
    ask(account, finance, "200")
    ask(make_account(make_user()), finance, "30")

    assert queries(client, url) == one


@pytest.mark.parametrize("persona", [None, "customer", "groupless_staff", "support"])
@pytest.mark.parametrize("method", ["get", "post"])
def test_goodwill_pages_are_404_to_all_but_finance(client, request, account, finance, persona, method):
    grant = ask(account, finance, "250")
    if persona:
        client.force_login(request.getfixturevalue(persona))
    for url in [reverse("staff:goodwill"), new_url(account), reverse("staff:goodwill-decide", args=[grant.pk])]:
        assert getattr(client, method)(url, {**form(), "decision": "approve", "reason": "x"}).status_code == 404
    assert (GoodwillGrant.objects.count(), Credit.objects.count()) == (1, 0)


def test_goodwill_grants_are_read_only_in_the_admin(client, account, finance, superuser):
    grant = ask(account, finance, "20")
    client.force_login(superuser)

    listing = client.get("/admin/billing/goodwillgrant/?status=granted").content.decode()

    assert "Customer billing" in listing
    assert client.get("/admin/billing/goodwillgrant/add/").status_code == 403
    assert client.post(f"/admin/billing/goodwillgrant/{grant.pk}/delete/", {"post": "yes"}).status_code == 403
    assert GoodwillGrant.objects.count() == 1
