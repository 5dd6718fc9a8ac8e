"""The "Redeem a promotional code" dialog on the billing page: with and without htmx, who may use it,
and its throttle."""

import json
import re
from datetime import timedelta
from decimal import Decimal as D

import pytest
from django.utils import timezone

from billing.models import AccountStatus, Credit, CreditKind, PromoCode, PromoRedemption
from staff import roles
from studio.models import AuditEvent, Role
from tests.factories import add_member, approved_code, make_account, make_project, make_staff, make_user

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def finance(db):
    return make_staff("finance@staff.example", roles.FINANCE)


@pytest.fixture
def account(owner):
    return make_account(owner, name="Main")


@pytest.fixture
def code(finance):
    return approved_code(
        code="SPRING-2026",
        amount=D("50"),
        redeem_by=timezone.now() + timedelta(days=20),
        credit_valid_days=30,
        max_redemptions=10,
        description="",
        by=finance,
    )


def url(account):
    return f"/billing/accounts/{account.account_id}/redeem-code/"


def written():
    return (Credit.objects.count(), PromoRedemption.objects.count(), AuditEvent.objects.count())


def messages_in(html):
    return re.findall(r'<p class="notice notice-\w+" role="status">(.*?)</p>', html)


def test_billing_page_links_the_dialog_for_each_open_account(client_for, owner, account):
    closed = make_account(owner, name="Closed")
    closed.status = AccountStatus.CLOSED
    closed.save(update_fields=["status"])

    html = client_for(owner).get("/billing/").content.decode()

    assert re.findall(r'href="(/billing/accounts/[^"]+/redeem-code/)"', html) == [url(account)]
    assert f'data-hx-get="{url(account)}" data-hx-target="#modal">Redeem a promotional code</a>' in html


def test_dialog_without_js_is_a_page_of_its_own(client_for, owner, account):
    response = client_for(owner).get(url(account))
    html = response.content.decode()

    assert response.status_code == 200
    assert re.findall(r"<title>(.*?)</title>", html) == ["Redeem a promotional code · Studio Console"]
    assert re.findall(r"<h1[^>]*>(.*?)</h1>", html) == ["Redeem a promotional code"]
    assert f'<form method="post" action="{url(account)}" novalidate>' in html
    assert '<input type="text" name="code"' in html
    assert re.findall(r'<a class="button" href="([^"]*)" data-close-modal>Cancel</a>', html) == ["/billing/"]


def test_dialog_for_htmx_is_the_modal_content_alone(client_for, owner, account):
    response = client_for(owner).get(url(account), **HTMX)
    html = response.content.decode()

    assert response.status_code == 200
    assert html.lstrip().startswith('<h2 id="modal-title">Redeem a promotional code</h2>')
    assert ("<html" in html, "page-dialog" in html, "<title>" in html) == (False, False, False)
    assert f'<form method="post" action="{url(account)}" data-hx-post="{url(account)}" data-hx-target="#modal"' in html
    assert "HX-Request" in response["Vary"]


def test_redeeming_without_js_redirects_to_the_billing_page_with_the_credit(client_for, owner, account, code):
    client = client_for(owner)

    response = client.post(url(account), {"code": "  spring-2026 "})

    assert (response.status_code, response["Location"]) == (302, "/billing/")
    html = client.get("/billing/").content.decode()
    assert messages_in(html) == ["A promotional credit of USD 50.00 was added to Main. It pays for usage for 30 days."]
    assert "<td>Promotional credit</td><td>USD 50.00</td><td>USD 50.00</td>" in html
    assert "<dt>Credit remaining</dt><dd>USD 50.00</dd>" in html
    credit = Credit.objects.get()
    assert (credit.account, credit.kind, credit.original_amount) == (account, CreditKind.PROMOTIONAL, D("50"))
    assert PromoCode.objects.get().times_redeemed == 1


def test_redeeming_with_htmx_closes_the_modal_and_reloads_the_billing_page(client_for, owner, account, code):
    response = client_for(owner).post(url(account), {"code": "SPRING-2026"}, **HTMX)

    assert response.status_code == 200
    assert response["HX-Retarget"] == "#messages"
    assert json.loads(response["HX-Trigger"]) == {"billing-changed": {}, "close-modal": {}}
    assert messages_in(response.content.decode()) == [
        "A promotional credit of USD 50.00 was added to Main. It pays for usage for 30 days."
    ]
    assert PromoRedemption.objects.get().account == account


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("WINTER-2026", "There is no promotional code like this. Check the code and try again."),
        ("", "This field is required."),
    ],
)
def test_a_wrong_code_shows_the_dialog_again_with_the_reason(client_for, owner, account, code, typed, message):
    before = written()

    response = client_for(owner).post(url(account), {"code": typed}, **HTMX)

    assert response.status_code == 422
    html = response.content.decode()
    assert re.findall(r'<p class="field-error" id="id_code_error">(.*?)</p>', html) == [message]
    assert f'value="{typed}"' in html or not typed
    assert written() == before


def test_a_second_redemption_is_refused_with_a_clear_message(client_for, owner, account, code):
    client = client_for(owner)
    client.post(url(account), {"code": "SPRING-2026"})

    response = client.post(url(account), {"code": "SPRING-2026"})

    assert response.status_code == 422
    assert "This billing account has already redeemed this code." in response.content.decode()
    assert PromoRedemption.objects.count() == 1


@pytest.mark.parametrize("method", ["get", "post"])
def test_anyone_but_the_accounts_billing_administrators_gets_404(client_for, owner, account, code, method):
    project = make_project(owner, name="Linked")
    account_with_project = make_account(owner, name="With project", projects=[project])
    editor, outsider = make_user("editor@example.com"), make_user("outsider@example.com")
    add_member(project, editor, Role.EDITOR)  # may change the project, not its billing account

    for person in (editor, outsider):
        for target in (account, account_with_project):
            response = getattr(client_for(person), method)(url(target), {"code": "SPRING-2026"})
            assert response.status_code == 404
    assert PromoRedemption.objects.count() == 0


@pytest.mark.parametrize("method", ["get", "post"])
def test_signed_out_visitors_are_sent_to_sign_in(client, account, method):
    response = getattr(client, method)(url(account), {"code": "SPRING-2026"} if method == "post" else None)

    assert (response.status_code, response["Location"]) == (302, f"/accounts/login/?next={url(account)}")
    assert PromoRedemption.objects.count() == 0


def test_an_unknown_account_is_404(client_for, owner, account):
    assert client_for(owner).get("/billing/accounts/NOPE/redeem-code/").status_code == 404


def test_attempts_past_the_throttle_get_429_and_redeem_nothing(settings, client_for, owner, account, code):
    settings.THROTTLE_PROMO_REDEEM_PER_USER = "3/h"
    client = client_for(owner)
    statuses = [client.post(url(account), {"code": f"GUESS-{i}"}).status_code for i in range(3)]

    throttled = client.post(url(account), {"code": "SPRING-2026"})  # right, but one attempt too many

    assert statuses == [422, 422, 422]
    assert throttled.status_code == 429
    assert 0 < int(throttled["Retry-After"]) <= 3600
    minutes = -(-int(throttled["Retry-After"]) // 60)
    assert re.findall(r'<p class="notice notice-error" role="alert">(.*?)</p>', throttled.content.decode()) == [
        f"Too many attempts to redeem a code. Try again in {minutes} minute{'' if minutes == 1 else 's'}."
    ]
    assert PromoRedemption.objects.count() == 0
    assert client.get(url(account)).status_code == 200  # looking is not an attempt


def test_the_throttle_counts_each_person_apart(settings, client_for, owner, account, code):
    settings.THROTTLE_PROMO_REDEEM_PER_USER = "1/h"
    co_admin = make_user("co-admin@example.com")
    account.administrators.create(user=co_admin)
    assert client_for(owner).post(url(account), {"code": "GUESS"}).status_code == 422
    assert client_for(owner).post(url(account), {"code": "SPRING-2026"}).status_code == 429

    response = client_for(co_admin).post(url(account), {"code": "SPRING-2026"})

    assert response.status_code == 302
    assert list(PromoRedemption.objects.values_list("redeemed_by__email", flat=True)) == ["co-admin@example.com"]


def test_successful_redemptions_count_against_the_throttle_too(settings, client_for, owner, finance, code):
    settings.THROTTLE_PROMO_REDEEM_PER_USER = "2/h"
    accounts = [make_account(owner, name=f"Account {i}") for i in range(3)]
    client = client_for(owner)

    statuses = [client.post(url(a), {"code": "SPRING-2026"}).status_code for a in accounts]

    assert statuses == [302, 302, 429]
    assert PromoRedemption.objects.count() == 2
