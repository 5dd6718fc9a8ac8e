import re
import uuid
from decimal import Decimal

import pytest

from billing.models import (
    BillingAdministrator,
    PaymentMethod,
    PaymentStatus,
    Prepayment,
    RefundRequest,
    TestProcessorCharge,
)
from studio.models import Role
from tests.factories import add_member, make_account, make_key, make_project, make_user


@pytest.fixture
def due(owner):
    project = make_project(owner, name="Needs prepayment")
    make_key(project)
    return make_account(owner, prepayment_due=True, projects=[project])


def attempt_id(html):
    return re.search(r'name="attempt" value="([0-9a-f-]{36})"', html).group(1)


def test_action_required_leads_an_administrator_to_the_prepayment(client_for, owner, due):
    project = due.project_links.get().project
    client = client_for(owner)

    response = client.get(f"/billing/prepayment/?project={project.project_id}")

    assert response["Location"] == f"/billing/accounts/{due.account_id}/prepayment/"
    html = client.get(response["Location"]).content.decode()
    assert "Pay at least USD 10.00" in html
    assert re.findall(r'name="method" value="([^"]+)"', html) == [
        str(due.primary_payment_method.pk),
        "new_card",
        "bank_transfer",
    ]


def test_a_project_member_who_is_not_billing_administrator_is_told_who_can_pay(client_for, editor, owner):
    project = make_project(owner, name="Shared")
    add_member(project, editor, Role.EDITOR)
    make_account(owner, prepayment_due=True, projects=[project])

    html = client_for(editor).get(f"/billing/prepayment/?project={project.project_id}").content.decode()

    assert "Only an administrator of that billing account can pay it" in html


def test_pay_with_the_primary_card(client_for, owner, due):
    client = client_for(owner)
    html = client.get(f"/billing/accounts/{due.account_id}/prepayment/").content.decode()

    response = client.post(
        f"/billing/accounts/{due.account_id}/prepayment/",
        {"attempt": attempt_id(html), "amount": "10.00", "method": str(due.primary_payment_method.pk)},
        headers={"HX-Request": "true"},
    )

    html = response.content.decode()
    assert "Payment of USD 10.00 received." in html
    # Everything that depended on the payment updates: the keys table (and its terms sentence),
    # the billing page, and the notice, removed out of band.
    assert response["HX-Trigger"] == '{"keys-changed": {}, "billing-changed": {}}'
    assert '<div id="prepayment-notice" data-hx-swap-oob="delete"></div>' in html
    project = due.project_links.get().project
    project.refresh_from_db()
    assert project.tier == "tier_1"


def test_double_submit_of_the_form_charges_once(client_for, owner, due):
    client = client_for(owner)
    data = {"attempt": str(uuid.uuid4()), "amount": "10.00", "method": str(due.primary_payment_method.pk)}

    first = client.post(f"/billing/accounts/{due.account_id}/prepayment/", data)
    second = client.post(f"/billing/accounts/{due.account_id}/prepayment/", data)

    assert "Payment of USD 10.00 received." in first.content.decode()
    assert second["Location"] == f"/billing/accounts/{due.account_id}/prepayment/{data['attempt']}/"
    assert "Payment of USD 10.00 received." in client.get(second["Location"]).content.decode()
    assert TestProcessorCharge.objects.count() == 1


def test_new_card_declined_on_verification_charges_nothing_and_keeps_the_amount(client_for, owner, due):
    client = client_for(owner)
    data = {
        "attempt": str(uuid.uuid4()),
        "amount": "15.00",
        "method": "new_card",
        "number": "4000 0000 0000 0002",
        "exp_month": "12",
        "exp_year": "2030",
        "cvc": "123",
    }

    response = client.post(f"/billing/accounts/{due.account_id}/prepayment/", data)

    html = response.content.decode()
    assert response.status_code == 422
    assert "Your card was declined. Try another card or contact your bank." in html
    assert 'name="amount" value="15.00"' in html
    assert not Prepayment.objects.exists() and not TestProcessorCharge.objects.exists()

    retry = client.post(f"/billing/accounts/{due.account_id}/prepayment/", {**data, "number": "4242 4242 4242 4242"})
    assert "Payment of USD 15.00 received." in retry.content.decode()
    assert PaymentMethod.objects.filter(last4="4242").count() == 2  # the account's card and the new one


def test_declined_charge_offers_a_retry_with_a_new_attempt(client_for, owner, due):
    from billing.services import add_card

    bad = add_card(
        due.payments_profile, number="4000000000009995", exp_month=1, exp_year=2099, cvc="1", brand="visa", by=owner
    )
    client = client_for(owner)
    first_attempt = str(uuid.uuid4())

    response = client.post(
        f"/billing/accounts/{due.account_id}/prepayment/", {"attempt": first_attempt, "amount": "10", "method": bad.pk}
    )

    html = response.content.decode()
    assert "The payment failed: Your card was declined for insufficient funds. Nothing was charged." in html
    assert attempt_id(html) != first_attempt
    assert Prepayment.objects.get().status == PaymentStatus.FAILED


def test_amount_under_the_minimum_is_a_field_error(client_for, owner, due):
    response = client_for(owner).post(
        f"/billing/accounts/{due.account_id}/prepayment/",
        {"attempt": str(uuid.uuid4()), "amount": "5", "method": due.primary_payment_method.pk},
    )

    assert response.status_code == 422
    assert "Ensure this value is greater than or equal to 10.00." in response.content.decode()


def test_someone_elses_card_or_account_cannot_be_used(client_for, owner, outsider, due):
    theirs = make_account(outsider)
    client = client_for(owner)

    response = client.post(
        f"/billing/accounts/{due.account_id}/prepayment/",
        {"attempt": str(uuid.uuid4()), "amount": "10", "method": theirs.primary_payment_method.pk},
    )
    assert response.status_code == 422
    assert client.get(f"/billing/accounts/{theirs.account_id}/prepayment/").status_code == 404
    assert not Prepayment.objects.exists()


def test_notice_shows_on_every_page_until_dismissed(client_for, owner, due):
    client = client_for(owner)

    for url in ("/api-keys/", "/settings/", "/billing/"):
        assert "Action required: one-time prepayment" in client.get(url).content.decode()

    client.post(f"/billing/accounts/{due.account_id}/notice/dismiss/", {"next": "/api-keys/"})

    assert "Action required: one-time prepayment" not in client.get("/api-keys/").content.decode()
    assert BillingAdministrator.objects.get(user=owner).prepayment_notice_dismissed_at is not None


def test_the_prepayment_page_does_not_repeat_the_notice(client_for, owner, due):
    client = client_for(owner)
    project = due.project_links.get().project

    pages = [
        f"/billing/accounts/{due.account_id}/prepayment/",
        client.get(f"/billing/prepayment/?project={project.project_id}")["Location"],
    ]

    assert ["Action required: one-time prepayment" in client.get(url).content.decode() for url in pages] == [
        False,
        False,
    ]
    assert "Action required: one-time prepayment" in client.get("/api-keys/").content.decode()


def test_a_reloaded_keys_table_brings_the_terms_sentence_along(client_for, owner, due):
    client = client_for(owner)
    page = client.get("/api-keys/").content.decode()
    assert "data-hx-swap-oob" not in page  # the full page has the sentence once, in place
    assert "None of your projects has billing enabled" in page
    client.post(
        f"/billing/accounts/{due.account_id}/prepayment/",
        {"attempt": str(uuid.uuid4()), "amount": "10.00", "method": str(due.primary_payment_method.pk)},
    )

    table = client.get("/api-keys/", headers={"HX-Request": "true"}).content.decode()

    sentence = re.search(
        r'<p id="terms-status" class="terms-status paid" data-hx-swap-oob="true">\s*([^<]+?)\s*</p>', table
    )
    assert sentence.group(1) == (
        "At least one of your projects has billing enabled, so your studio prompts are handled under the "
        "paid-services terms."
    )


def test_refund_request_from_the_billing_page(client_for, owner, due):
    client = client_for(owner)
    client.post(
        f"/billing/accounts/{due.account_id}/prepayment/",
        {"attempt": str(uuid.uuid4()), "amount": "30", "method": due.primary_payment_method.pk},
    )
    assert "USD 30.00 of prepayment credit can be refunded." in client.get("/billing/").content.decode()

    too_much = client.post(f"/billing/accounts/{due.account_id}/refund/", {"amount": "30.01", "reason": ""})
    assert "You can ask for at most USD 30.00." in too_much.content.decode()

    response = client.post(f"/billing/accounts/{due.account_id}/refund/", {"amount": "20", "reason": "Project ended"})
    assert response["Location"] == "/billing/"
    assert RefundRequest.objects.get().amount == Decimal("20")
    assert "USD 10.00 of prepayment credit can be refunded." in client.get("/billing/").content.decode()


def test_refund_is_404_for_someone_elses_account(client_for, due):
    intruder = make_user("intruder@example.com")

    assert client_for(intruder).post(f"/billing/accounts/{due.account_id}/refund/", {"amount": "1"}).status_code == 404
