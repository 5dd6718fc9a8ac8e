"""The staff console's promotional codes: who may use them, the list and its states, a new code, one
code's page (redemptions, history, deactivation)."""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
import time_machine
from django.urls import NoReverseMatch, reverse

from billing import promotions
from billing.models import PromoCode
from studio.models import AuditEvent
from tests.factories import approved_code, make_account, make_user

NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _frozen():
    with time_machine.travel(NOW, tick=False):
        yield


def new_code(by, code="SPRING-2026", *, max_redemptions=10, redeem_by=None):
    return approved_code(
        code=code,
        amount=D("50"),
        redeem_by=redeem_by or NOW + timedelta(days=20),
        credit_valid_days=30,
        max_redemptions=max_redemptions,
        description=f"{code} campaign",
        by=by,
    )


def form_data(**changes):
    data = {
        "code": "summer-2026",
        "amount": "25.50",
        "redeem_by": "2026-07-31",
        "credit_valid_days": "60",
        "max_redemptions": "100",
        "description": "Summer campaign",
    }
    return {**data, **changes}


def table_rows(html):
    """(code, redemptions, state) of each row of the codes table."""
    rows = re.findall(r"<tr[^>]*>\s*<td[^>]*><a href=\"/staff/promotions/\d+/\">([^<]+)</a></td>(.*?)</tr>", html, re.S)
    found = []
    for code, rest in rows:
        cells = re.findall(r"<td[^>]*>(.*?)</td>", rest, re.S)
        found.append((code, cells[2].strip(), cells[5].strip()))
    return found


# Who may use it


@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize("persona", [None, "customer", "groupless_staff", "support"])
def test_promotions_are_404_to_anyone_without_the_permission(request, client, finance, method, persona):
    promo = new_code(finance)
    if persona:
        client.force_login(request.getfixturevalue(persona))
    waiting = promotions.create_code(  # USD 2,000 in all: waits for a second Finance member
        code="BIG",
        amount=D("200"),
        redeem_by=NOW + timedelta(days=20),
        credit_valid_days=30,
        max_redemptions=10,
        by=finance,
    )
    urls = [
        reverse("staff:promotions"),
        reverse("staff:promotion-new"),
        reverse("staff:promotion", args=[promo.pk]),
        reverse("staff:promotion-approve", args=[waiting.pk]),
    ]

    statuses = [getattr(client, method)(url, form_data(reason="Because", note="Fine")).status_code for url in urls]

    assert statuses == [404, 404, 404, 404]
    assert list(PromoCode.objects.order_by("code").values_list("code", "active", "approved_at")) == [
        ("BIG", True, None),
        ("SPRING-2026", True, NOW),
    ]
    assert list(AuditEvent.objects.order_by("pk").values_list("action", flat=True)) == [
        "promo_code.create",
        "promo_code.approve",
        "promo_code.create",
    ]


@pytest.mark.parametrize("persona", ["finance", "superuser"])
def test_finance_and_superusers_open_every_page(request, client, finance, persona):
    promo = new_code(finance)
    client.force_login(request.getfixturevalue(persona))
    urls = [reverse("staff:promotions"), reverse("staff:promotion-new"), reverse("staff:promotion", args=[promo.pk])]

    assert [client.get(url).status_code for url in urls] == [200, 200, 200]


def test_the_navigation_offers_promotions_to_finance_only(client, finance, support):
    client.force_login(finance)
    assert 'href="/staff/promotions/"' in client.get("/staff/").content.decode()
    client.force_login(support)
    assert 'href="/staff/promotions/"' not in client.get("/staff/").content.decode()


def test_an_unknown_code_is_404(client, finance):
    client.force_login(finance)

    assert client.get("/staff/promotions/999/").status_code == 404


# The list


@pytest.fixture
def four_states(finance):
    """One code in each state, created a minute apart (newest last)."""
    codes = {}
    for offset, name in enumerate(["ACTIVE-1", "EXPIRED-1", "USEDUP-1", "OFF-1"]):
        with time_machine.travel(NOW - timedelta(minutes=10 - offset), tick=False):
            redeem_by = NOW + timedelta(minutes=5) if name == "EXPIRED-1" else None
            codes[name] = new_code(finance, name, max_redemptions=2, redeem_by=redeem_by)
    for index in range(2):
        account = make_account(make_user(f"admin{index}@example.com"))
        promotions.redeem(account, "usedup-1", by=account.created_by)
    promotions.redeem(account, "ACTIVE-1", by=account.created_by)
    promotions.deactivate(codes["OFF-1"], by=finance, reason="Ended early")
    return codes


def test_the_list_shows_each_codes_redemptions_and_state(client, finance, four_states):
    client.force_login(finance)

    with time_machine.travel(NOW + timedelta(minutes=6), tick=False):
        html = client.get("/staff/promotions/").content.decode()

    assert table_rows(html) == [
        ("OFF-1", "0 / 2", "Deactivated"),
        ("USEDUP-1", "2 / 2", "Fully redeemed"),
        ("EXPIRED-1", "0 / 2", "Expired"),
        ("ACTIVE-1", "1 / 2", "Active"),
    ]
    assert "USD 50.00" in html


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("active", ["ACTIVE-1"]),
        ("expired", ["EXPIRED-1"]),
        ("exhausted", ["USEDUP-1"]),
        ("deactivated", ["OFF-1"]),
        ("", ["OFF-1", "USEDUP-1", "EXPIRED-1", "ACTIVE-1"]),
    ],
)
def test_the_list_filters_by_state(client, finance, four_states, state, expected):
    client.force_login(finance)

    with time_machine.travel(NOW + timedelta(minutes=6), tick=False):
        html = client.get("/staff/promotions/", {"state": state}).content.decode()
        partial = client.get("/staff/promotions/", {"state": state}, HTTP_HX_REQUEST="true").content.decode()

    assert [row[0] for row in table_rows(html)] == expected
    assert [row[0] for row in table_rows(partial)] == expected
    assert partial.startswith('\n<div id="codes-table" class="table-card">') and "<html" not in partial


def test_an_unknown_state_filter_lists_everything(client, finance, four_states):
    client.force_login(finance)

    html = client.get("/staff/promotions/", {"state": "bogus"}).content.decode()

    assert len(table_rows(html)) == 4


def test_the_list_query_count_does_not_grow_with_codes(client, finance, django_assert_num_queries):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(finance)
    new_code(finance, "ONE-1")
    with CaptureQueriesContext(connection) as one:
        assert len(table_rows(client.get("/staff/promotions/").content.decode())) == 1
    new_code(finance, "TWO-2")
    new_code(finance, "THREE-3")

    with django_assert_num_queries(len(one.captured_queries)):
        assert len(table_rows(client.get("/staff/promotions/").content.decode())) == 3


# A new code


def test_creating_a_code_stores_it_in_capitals_and_ends_on_the_day_pacific_time(client, finance):
    client.force_login(finance)

    response = client.post("/staff/promotions/new/", form_data())

    promo = PromoCode.objects.get()
    assert (response.status_code, response["Location"]) == (302, f"/staff/promotions/{promo.pk}/")
    assert (promo.code, promo.amount, promo.credit_valid_days, promo.max_redemptions, promo.description) == (
        "SUMMER-2026",
        D("25.50"),
        60,
        100,
        "Summer campaign",
    )
    assert promo.redeem_by == datetime(2026, 8, 1, 7, 0, tzinfo=UTC)  # midnight in Los Angeles (PDT)
    assert (promo.created_by, promo.approved_by, promo.approved_at) == (finance, None, None)  # USD 2,550 in all
    assert list(AuditEvent.objects.values_list("action", "actor", "actor_kind")) == [
        ("promo_code.create", finance.pk, "staff")
    ]
    page = client.get(response["Location"]).content.decode()
    assert "Promotional code SUMMER-2026 created: a second Finance member must approve it." in page
    assert '<span class="badge warning">Waiting for approval</span>' in page


def test_a_blank_code_is_generated(client, finance):
    client.force_login(finance)

    client.post("/staff/promotions/new/", form_data(code=""))

    assert re.fullmatch(r"[A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4}", PromoCode.objects.get().code)


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"code": "spring-2026"}, "code", "This code already exists."),
        ({"code": "a b"}, "code", "Use 3 to 32 letters, digits and dashes, starting with a letter or digit."),
        ({"redeem_by": "2026-06-09"}, "redeem_by", "Choose today or a later day."),
        ({"amount": "0"}, "amount", "Ensure this value is greater than or equal to 0.01."),
        ({"amount": "1.005"}, "amount", "Ensure that there are no more than 2 decimal places."),
        ({"credit_valid_days": "0"}, "credit_valid_days", "Ensure this value is greater than or equal to 1."),
        ({"max_redemptions": ""}, "max_redemptions", "This field is required."),
    ],
)
def test_a_wrong_new_code_is_refused_with_the_reason(client, finance, changes, field, message):
    new_code(finance)
    client.force_login(finance)

    response = client.post("/staff/promotions/new/", form_data(**changes))

    assert response.status_code == 422
    errors = re.findall(rf'<p class="field-error" id="id_{field}_error">(.*?)</p>', response.content.decode())
    assert [e.replace("&#x27;", "'") for e in errors] == [message]
    assert list(PromoCode.objects.values_list("code", flat=True)) == ["SPRING-2026"]


def test_a_code_redeemable_until_today_is_accepted(client, finance):
    client.force_login(finance)

    assert client.post("/staff/promotions/new/", form_data(redeem_by="2026-06-10")).status_code == 302


# One code's page


def test_the_code_page_shows_details_redemptions_and_history(client, finance):
    promo = new_code(finance)
    account = make_account(make_user("buyer@example.com"), name="Buyer's account")
    promotions.redeem(account, "SPRING-2026", by=account.created_by)
    client.force_login(finance)

    html = client.get(f"/staff/promotions/{promo.pk}/").content.decode()

    assert "<h1><code>SPRING-2026</code></h1>" in html
    assert "<dt>Redemptions (used / allowed)</dt><dd>1 / 10</dd>" in html
    assert "<dt>Credit amount</dt><dd>USD 50.00</dd>" in html
    try:
        account_url = reverse("staff:account", args=[account.account_id])
    except NoReverseMatch:  # written by another area of the console
        assert "Buyer&#x27;s account</td>" not in html and "Buyer&#x27;s account <small>" in html
    else:
        assert f'<a href="{account_url}">Buyer&#x27;s account</a>' in html
    assert "<td>buyer@example.com</td>" in html
    assert re.findall(r"<td><code>([a-z_.]+)</code></td>", html) == ["promo_code.approve", "promo_code.create"]
    assert "Deactivate code" in html and "Approve code" not in html
    assert "<dt>Approved</dt><dd>06/10/2026 noon · approver@staff.example (Second approval)</dd>" in html


def test_deactivating_needs_a_reason_and_is_audited(client, finance):
    promo = new_code(finance)
    client.force_login(finance)

    refused = client.post(f"/staff/promotions/{promo.pk}/", {"reason": ""})
    done = client.post(f"/staff/promotions/{promo.pk}/", {"reason": "Posted on a coupon site"})

    assert refused.status_code == 422
    assert (done.status_code, done["Location"]) == (302, f"/staff/promotions/{promo.pk}/")
    promo.refresh_from_db()
    assert promo.active is False
    deactivations = AuditEvent.objects.filter(action="promo_code.deactivate")
    assert list(deactivations.values_list("actor", "actor_kind", "reason")) == [
        (finance.pk, "staff", "Posted on a coupon site")
    ]
    html = client.get(done["Location"]).content.decode()
    assert "Promotional code SPRING-2026 deactivated." in html
    assert "Deactivate code" not in html
    assert '<span class="badge warning">Deactivated</span>' in html
    assert re.findall(r"<td><code>([a-z_.]+)</code></td>", html) == [
        "promo_code.deactivate",
        "promo_code.approve",
        "promo_code.create",
    ]


def test_posting_to_a_deactivated_code_changes_nothing(client, finance):
    promo = new_code(finance)
    promotions.deactivate(promo, by=finance, reason="First")
    client.force_login(finance)

    response = client.post(f"/staff/promotions/{promo.pk}/", {"reason": "Second"})

    assert response.status_code == 200
    assert AuditEvent.objects.filter(action="promo_code.deactivate").count() == 1


def test_the_admin_deactivates_through_the_same_service(client, superuser, finance):
    promo = new_code(finance)
    client.force_login(superuser)

    response = client.post(
        "/admin/billing/promocode/", {"action": "deactivate", "_selected_action": [promo.pk]}, follow=True
    )

    assert response.status_code == 200
    promo.refresh_from_db()
    assert promo.active is False
    assert list(AuditEvent.objects.filter(action="promo_code.deactivate").values_list("actor", "reason")) == [
        (superuser.pk, "Decided in the admin")
    ]
    assert client.get("/admin/billing/promocode/add/").status_code == 403
