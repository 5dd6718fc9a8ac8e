import re
from decimal import Decimal

import pytest

from billing import ledger
from billing.models import CreditKind, PaymentMethod, ProjectBilling
from studio.models import BillingState, Tier
from tests.factories import make_account, make_card, make_profile, make_project


def account_ids(response):
    return re.findall(r'<h2 id="account-([0-9A-Z-]+)">', response.content.decode())


def test_billing_page_without_accounts_invites_to_set_up(client_for, owner):
    html = client_for(owner).get("/billing/").content.decode()

    assert "No billing account yet" in html
    assert 'href="/billing/setup/"' in html


def test_billing_page_lists_only_accounts_the_user_administers(client_for, owner, outsider):
    mine = make_account(owner, name="Mine")
    make_account(outsider, name="Theirs")

    response = client_for(owner).get("/billing/")

    assert account_ids(response) == [mine.account_id]


def test_billing_page_shows_projects_credits_balances_and_transactions(client_for, owner):
    project = make_project(owner, name="Linked app")
    account = make_account(owner, name="Main", projects=[project])
    ledger.grant_credit(account, kind=CreditKind.WELCOME, amount=Decimal("300"), welcome_for=owner)
    ledger.record_usage_charge(account, amount=Decimal("12.345"), description="November usage", idempotency_key="n1")

    html = client_for(owner).get("/billing/").content.decode()

    assert "Linked app" in html and project.project_id in html
    assert '<span class="badge paid">Tier 1</span>' in html
    assert "<td>Welcome credit</td><td>USD 300.00</td><td>USD 287.66</td>" in html
    assert "<dt>Credit remaining</dt><dd>USD 287.66</dd>" in html
    assert "<dt>Owed this cycle</dt><dd>USD 0.00</dd>" in html
    assert "<dt>Total spend</dt><dd>USD 12.35</dd>" in html
    assert "Usage charge · November usage" in html
    assert "Credit applied · Welcome credit" in html


def test_transactions_show_in_the_readers_language_whatever_language_wrote_them(client_for, owner):
    """X11: rows store a kind, not English text; the page translates them when it renders."""
    account = make_account(owner, name="Main")
    ledger.grant_credit(account, kind=CreditKind.WELCOME, amount=Decimal("300"), welcome_for=owner)  # in English
    ledger.record_usage_charge(account, amount=Decimal("2"), idempotency_key="u1")
    owner.language = "ja"
    owner.save()

    html = client_for(owner).get("/billing/").content.decode()
    rows = re.findall(r"<td>([^<]+)</td><td class=\"num\">USD [-0-9.]+</td>", html)

    # Newest first.
    assert rows == ["クレジット適用 · ウェルカム クレジット", "使用料金", "クレジット付与 · ウェルカム クレジット"]


def test_billing_page_query_count_does_not_grow_with_accounts(client_for, owner, django_assert_num_queries):
    client = client_for(owner)

    def add_account():
        account = make_account(owner, projects=[make_project(owner)])
        ledger.grant_credit(account, kind=CreditKind.PROMOTIONAL, amount=Decimal("5"))
        ledger.record_usage_charge(account, amount=Decimal("1"), description="u", idempotency_key=str(account.pk))

    # 16 for accounts, projects, payments and credits; budgets 1, statements and the month's estimate 2.
    add_account()
    with django_assert_num_queries(19):
        assert len(account_ids(client.get("/billing/"))) == 1
    add_account()
    add_account()
    with django_assert_num_queries(19):
        assert len(account_ids(client.get("/billing/"))) == 3


def test_unlink_returns_the_project_to_the_free_tier(client_for, owner):
    project = make_project(owner)
    account = make_account(owner, projects=[project])
    client = client_for(owner)
    url = f"/billing/accounts/{account.account_id}/projects/{project.project_id}/unlink/"

    assert "goes back to the free tier" in client.get(url).content.decode()
    response = client.post(url)

    assert response["Location"] == "/billing/"
    project.refresh_from_db()
    assert (project.tier, project.billing_state) == (Tier.FREE, BillingState.NONE)
    assert not ProjectBilling.objects.exists()


def test_move_to_an_account_with_a_prepayment_due_reevaluates_the_tier(client_for, owner):
    project = make_project(owner)
    source = make_account(owner, projects=[project])
    target = make_account(owner, prepayment_due=True)
    client = client_for(owner)

    response = client.post(
        f"/billing/accounts/{source.account_id}/projects/{project.project_id}/move/", {"account": target.account_id}
    )

    assert response["Location"] == "/billing/"
    project.refresh_from_db()
    assert project.billing.account == target
    assert (project.tier, project.billing_state) == (Tier.FREE, BillingState.PREPAYMENT_DUE)


def test_move_offers_only_the_users_other_accounts(client_for, owner, outsider):
    project = make_project(owner)
    source = make_account(owner, projects=[project])
    other = make_account(owner, name="Other")
    theirs = make_account(outsider)
    client = client_for(owner)
    url = f"/billing/accounts/{source.account_id}/projects/{project.project_id}/move/"

    assert re.findall(r'<option value="([^"]+)"', client.get(url).content.decode()) == [other.account_id]
    assert client.post(url, {"account": theirs.account_id}).status_code == 422
    assert ProjectBilling.objects.get(project=project).account == source


@pytest.mark.parametrize("action", ["unlink/", "move/"])
def test_project_actions_are_404_for_outsiders_and_viewers(client_for, owner, outsider, viewer, project, action):
    account = make_account(owner, projects=[project])
    url = f"/billing/accounts/{account.account_id}/projects/{project.project_id}/{action}"

    assert client_for(outsider).post(url).status_code == 404
    assert client_for(viewer).post(url).status_code == 404
    assert ProjectBilling.objects.get(project=project).account == account


def test_payment_methods_add_make_primary_and_remove(client_for, owner):
    account = make_account(owner)
    first = account.primary_payment_method
    client = client_for(owner)

    response = client.post(
        "/billing/payment-methods/add/",
        {"number": "5555 5555 5555 4444", "exp_month": "1", "exp_year": "2031", "cvc": "321"},
    )
    assert response["Location"] == "/billing/"
    second = PaymentMethod.objects.get(last4="4444")
    assert second.brand == "mastercard"

    client.post(f"/billing/accounts/{account.account_id}/payment-methods/{second.pk}/primary/")
    account.refresh_from_db()
    assert account.primary_payment_method == second

    client.post(f"/billing/payment-methods/{first.pk}/remove/")
    first.refresh_from_db()
    assert first.removed_at is not None


def test_the_primary_payment_method_cannot_be_removed(client_for, owner):
    account = make_account(owner)
    client = client_for(owner)

    response = client.post(f"/billing/payment-methods/{account.primary_payment_method.pk}/remove/", follow=True)

    assert "This is the primary payment method of a billing account." in response.content.decode()
    account.primary_payment_method.refresh_from_db()
    assert account.primary_payment_method.removed_at is None


def test_someone_elses_payment_methods_and_accounts_are_404(client_for, owner, outsider):
    mine = make_account(owner)
    theirs = make_account(outsider)
    spare = make_card(theirs.payments_profile, last4="0005")
    client = client_for(owner)

    assert client.post(f"/billing/payment-methods/{spare.pk}/remove/").status_code == 404
    assert (
        client.post(
            f"/billing/accounts/{theirs.account_id}/payment-methods/{mine.primary_payment_method.pk}/primary/"
        ).status_code
        == 404
    )
    assert client.post(f"/billing/accounts/{mine.account_id}/payment-methods/{spare.pk}/primary/").status_code == 404
    spare.refresh_from_db()
    assert spare.removed_at is None


def test_adding_a_payment_method_needs_a_profile(client_for, owner):
    assert client_for(owner).get("/billing/payment-methods/add/")["Location"] == "/billing/setup/"
    make_profile(owner)
    assert client_for(owner).get("/billing/payment-methods/add/").status_code == 200
