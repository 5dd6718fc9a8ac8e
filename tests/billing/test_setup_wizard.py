import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import (
    BillingAccount,
    Credit,
    CreditKind,
    PaymentMethod,
    PaymentsProfile,
    ProjectBilling,
    SetupSession,
)
from billing.services import finish_setup, start_setup
from studio.models import BillingState, Role, Tier
from tests.concurrency import at_once
from tests.factories import make_account, make_card, make_key, make_profile, make_project, make_user

CONTACT = {
    "profile_type": "individual",
    "name": "Ada Lovelace",
    "address_line1": "1 Main Street",
    "city": "San Francisco",
    "postal_code": "94105",
    "country": "US",
    "email": "ada@example.com",
    "phone": "+1 650 555 0100",
}
CARD = {"number": "4242 4242 4242 4242", "exp_month": "12", "exp_year": str(timezone.now().year + 2), "cvc": "123"}


def setup_id(response):
    return re.search(r"/billing/setup/([0-9a-f-]{36})/", response["Location"]).group(1)


@pytest.fixture
def mine(owner):
    project = make_project(owner, name="My app")
    make_key(project, name="My key")
    return project


def start(client, project):
    response = client.get(f"/billing/setup/?project={project.project_id}")
    return response, setup_id(response)


def test_new_user_full_flow_links_the_project_at_tier_1_with_a_welcome_credit(client_for, owner, mine):
    client = client_for(owner)
    response, sid = start(client, mine)
    assert response["Location"] == f"/billing/setup/{sid}/account/"  # project and key pre-selected

    page = client.get(f"/billing/setup/{sid}/account/").content.decode()
    assert "Set up your Cloud Billing account" in page and 'name="country"' in page
    assert (
        client.post(f"/billing/setup/{sid}/account/", {"country": "US", "accept_terms": "on"})["Location"]
        == f"/billing/setup/{sid}/details/"
    )

    details = client.get(f"/billing/setup/{sid}/details/").content.decode()
    assert 'aria-label="Add contact information">+</a>' in details
    assert 'aria-label="Add payment method">+</a>' in details
    assert client.post(f"/billing/setup/{sid}/contact/", CONTACT)["Location"] == f"/billing/setup/{sid}/details/"
    assert client.post(f"/billing/setup/{sid}/payment-method/", CARD)["Location"] == f"/billing/setup/{sid}/details/"
    response = client.post(f"/billing/setup/{sid}/finish/")
    assert response["Location"] == f"/billing/setup/{sid}/status/"

    status = client.get(response["Location"]).content.decode()
    assert "Billing is set up." in status
    assert "My app is now on Tier 1 and can be billed at once." in status
    account = BillingAccount.objects.get()
    assert re.fullmatch(r"[0-9A-Z]{6}-[0-9A-Z]{6}-[0-9A-Z]{6}", account.account_id)
    assert account.primary_payment_method.last4 == "4242"
    mine.refresh_from_db()
    assert (mine.tier, mine.billing_state, mine.billing.account) == (Tier.TIER_1, BillingState.ACTIVE, account)
    welcome = Credit.objects.get()
    assert (welcome.kind, welcome.original_amount, welcome.welcome_for) == (CreditKind.WELCOME, Decimal("300"), owner)
    assert abs(welcome.expires_at - (timezone.now() + timedelta(days=90))) < timedelta(minutes=1)
    assert "USD 300.00, valid until" in status
    assert '<span class="badge paid">Tier 1</span>' in client.get("/api-keys/").content.decode()


def test_card_number_is_never_stored(client_for, owner, mine):
    client = client_for(owner)
    _, sid = start(client, mine)
    client.post(f"/billing/setup/{sid}/account/", {"country": "US", "accept_terms": "on"})
    client.post(f"/billing/setup/{sid}/contact/", CONTACT)

    client.post(f"/billing/setup/{sid}/payment-method/", CARD)

    stored = " ".join(str(v) for v in PaymentMethod.objects.values().get().values())
    assert "4242424242424242" not in stored and "123" not in stored.split()
    method = PaymentMethod.objects.get()
    assert (method.brand, method.last4, method.exp_month) == ("visa", "4242", 12)
    assert method.processor_token.startswith("tok_test_")


def test_declined_card_says_why_and_adds_nothing(client_for, owner, mine):
    client = client_for(owner)
    _, sid = start(client, mine)
    client.post(f"/billing/setup/{sid}/account/", {"country": "US", "accept_terms": "on"})
    client.post(f"/billing/setup/{sid}/contact/", CONTACT)

    response = client.post(f"/billing/setup/{sid}/payment-method/", {**CARD, "number": "4000 0000 0000 0002"})

    html = response.content.decode()
    assert response.status_code == 422
    assert "Your card was declined. Try another card or contact your bank." in html
    assert f'<option value="{CARD["exp_year"]}" selected>' in html  # the other fields are kept
    assert not PaymentMethod.objects.exists()


@pytest.mark.parametrize("number", ["4000 0000 0000 9995", "4000 0000 0000 0119"])
def test_cards_that_fail_only_when_charged_pass_verification(client_for, owner, mine, number):
    client = client_for(owner)
    make_profile(owner)
    _, sid = start(client, mine)

    response = client.post(f"/billing/setup/{sid}/payment-method/", {**CARD, "number": number})

    assert response["Location"] == f"/billing/setup/{sid}/details/"
    assert PaymentMethod.objects.get().last4 == number[-4:]


def test_contact_errors_are_per_field_and_keep_input(client_for, owner, mine):
    client = client_for(owner)
    _, sid = start(client, mine)

    response = client.post(
        f"/billing/setup/{sid}/contact/", {**CONTACT, "profile_type": "business", "name": "", "phone": "call me"}
    )

    html = response.content.decode()
    assert response.status_code == 422
    assert "Enter the organization&#x27;s name for a business profile." in html
    assert "Enter a phone number, for example +1 650 555 0100." in html
    assert 'value="1 Main Street"' in html
    assert not PaymentsProfile.objects.exists()


def test_profile_type_is_a_fieldset_with_a_legend_and_no_placeholder(client_for, owner, mine):
    client = client_for(owner)
    _, sid = start(client, mine)

    page = client.get(f"/billing/setup/{sid}/contact/").content.decode()
    group = page.split('<fieldset class="field">')[1].split("</fieldset>")[0]

    assert re.findall(r"<legend>([^<]+)</legend>", group) == ["Profile type"]  # the model field's verbose name
    assert re.findall(r'type="radio" name="profile_type" value="([^"]*)"', group) == ["individual", "business"]
    assert "checked" not in group
    assert 'for=""' not in page


def test_terms_are_required_and_country_kept(client_for, owner, mine):
    client = client_for(owner)
    _, sid = start(client, mine)

    response = client.post(f"/billing/setup/{sid}/account/", {"country": "JP"})

    html = response.content.decode()
    assert "Accept the terms of service to continue." in html
    assert '<option value="JP" selected>' in html


def test_unsupported_country_is_not_offered(client_for, owner, mine):
    client = client_for(owner)
    _, sid = start(client, mine)

    response = client.post(f"/billing/setup/{sid}/account/", {"country": "KP", "accept_terms": "on"})

    assert response.status_code == 422
    assert 'value="KP"' not in response.content.decode()


def test_existing_profile_prefills_contact_and_payment_method_with_change(client_for, owner, mine):
    profile = make_profile(owner, name="Existing Person")
    make_card(profile, last4="1111")
    client = client_for(owner)
    _, sid = start(client, mine)
    client.post(f"/billing/setup/{sid}/account/", {"country": "GB", "accept_terms": "on"})

    details = client.get(f"/billing/setup/{sid}/details/").content.decode()

    assert "Existing Person" in details
    assert "Visa •••• 1111" in details
    assert details.count(">Change</a>") == 2
    assert client.post(f"/billing/setup/{sid}/finish/")["Location"].endswith("/status/")
    assert BillingAccount.objects.get().primary_payment_method.last4 == "1111"


def test_existing_user_with_one_account_has_it_selected_and_gets_no_welcome_credit(client_for, owner, mine):
    account = make_account(owner, name="Only account")
    client = client_for(owner)
    _, sid = start(client, mine)

    page = client.get(f"/billing/setup/{sid}/account/").content.decode()
    options = re.findall(r'<option value="([^"]+)"( selected)?>', page)
    assert options == [(account.account_id, " selected"), ("new", "")]
    assert "Finish setup" in page

    response = client.post(f"/billing/setup/{sid}/account/", {"account": account.account_id})

    assert response["Location"] == f"/billing/setup/{sid}/status/"
    assert ProjectBilling.objects.get(project=mine).account == account
    assert not Credit.objects.exists()
    assert BillingAccount.objects.count() == 1


def test_existing_user_with_several_accounts_chooses_from_the_menu(client_for, owner, mine):
    first, second = make_account(owner, name="First"), make_account(owner, name="Second")
    client = client_for(owner)
    _, sid = start(client, mine)

    page = client.get(f"/billing/setup/{sid}/account/").content.decode()
    assert re.findall(r'<option value="([^"]+)"', page) == [first.account_id, second.account_id, "new"]
    assert " selected>" not in page

    client.post(f"/billing/setup/{sid}/account/", {"account": second.account_id})

    assert ProjectBilling.objects.get(project=mine).account == second


def test_existing_user_adds_a_new_account_at_the_details_step(client_for, owner, mine):
    make_account(owner, name="Old", country="GB")
    client = client_for(owner)
    _, sid = start(client, mine)

    response = client.post(f"/billing/setup/{sid}/account/", {"account": "new"})
    assert response["Location"] == f"/billing/setup/{sid}/details/"
    assert "Visa •••• 4242" in client.get(response["Location"]).content.decode()  # pre-filled from the profile
    assert client.post(f"/billing/setup/{sid}/finish/")["Location"].endswith("/status/")

    assert BillingAccount.objects.count() == 2
    assert ProjectBilling.objects.get(project=mine).account.display_name == "My billing account 2"
    assert not Credit.objects.exists()  # existing users get no welcome credit


def stepper(page: str) -> list[str]:
    return re.findall(r"<li[^>]*>([^<]+)</li>", page.split('class="stepper"')[1].split("</ol>")[0])


def test_stepper_shows_only_the_steps_the_flow_reaches(client_for, owner, mine):
    make_account(owner, name="Old", country="GB")
    client = client_for(owner)
    _, sid = start(client, mine)

    # An existing billing user picks an account and is done: no details step.
    assert stepper(client.get(f"/billing/setup/{sid}/account/").content.decode()) == [
        "Project and key",
        "Billing account",
    ]
    # Adding a new account goes through the details step, which the stepper now shows.
    client.post(f"/billing/setup/{sid}/account/", {"account": "new"})
    assert stepper(client.get(f"/billing/setup/{sid}/details/").content.decode()) == [
        "Project and key",
        "Billing account",
        "Account details",
    ]


def test_new_billing_user_sees_the_details_step_from_the_start(client_for, owner, mine):
    client = client_for(owner)
    _, sid = start(client, mine)

    assert stepper(client.get(f"/billing/setup/{sid}/project/").content.decode()) == [
        "Project and key",
        "Billing account",
        "Account details",
    ]


def test_prepayment_country_gives_action_required_with_the_reason(client_for, owner, mine):
    client = client_for(owner)
    _, sid = start(client, mine)
    client.post(f"/billing/setup/{sid}/account/", {"country": "IN", "accept_terms": "on"})
    client.post(f"/billing/setup/{sid}/contact/", {**CONTACT, "country": "IN"})
    client.post(f"/billing/setup/{sid}/payment-method/", CARD)

    status = client.get(client.post(f"/billing/setup/{sid}/finish/")["Location"]).content.decode()

    assert "a one-time prepayment of USD 10.00 is needed" in status
    assert "New billing accounts in India make a one-time prepayment." in status
    mine.refresh_from_db()
    assert (mine.tier, mine.billing_state) == (Tier.FREE, BillingState.PREPAYMENT_DUE)
    assert f'href="/billing/prepayment/?project={mine.project_id}"' in client.get("/api-keys/").content.decode()


def test_finish_without_details_says_what_is_missing(client_for, owner, mine):
    client = client_for(owner)
    _, sid = start(client, mine)
    client.post(f"/billing/setup/{sid}/account/", {"country": "US", "accept_terms": "on"})

    response = client.post(f"/billing/setup/{sid}/finish/")

    assert response.status_code == 422
    assert "Add your contact information." in response.content.decode()
    assert not BillingAccount.objects.exists()


def test_double_finish_and_second_tab_create_one_account_and_one_credit(client_for, owner, mine):
    client = client_for(owner)
    _, sid = start(client, mine)
    _, second_tab = start(client, mine)
    assert second_tab == sid  # a second tab resumes the same set-up
    client.post(f"/billing/setup/{sid}/account/", {"country": "US", "accept_terms": "on"})
    client.post(f"/billing/setup/{sid}/contact/", CONTACT)
    client.post(f"/billing/setup/{sid}/payment-method/", CARD)

    locations = {client.post(f"/billing/setup/{sid}/finish/")["Location"] for _ in range(3)}

    assert locations == {f"/billing/setup/{sid}/status/"}
    assert BillingAccount.objects.count() == 1
    assert Credit.objects.count() == 1


def test_back_and_refresh_keep_what_was_entered(client_for, owner, mine):
    client = client_for(owner)
    _, sid = start(client, mine)
    client.post(f"/billing/setup/{sid}/account/", {"country": "FR", "accept_terms": "on"})

    page = client.get(f"/billing/setup/{sid}/account/").content.decode()

    assert '<option value="FR" selected>' in page
    assert 'name="accept_terms" required id="id_accept_terms" checked' in page


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_finishes_create_one_account_and_one_welcome_credit():
    owner = make_user("racer@example.com")
    project = make_project(owner)
    profile = make_profile(owner)
    session = start_setup(owner, project=project)
    session.country_id, session.terms_accepted, session.payment_method = "US", True, make_card(profile)
    session.save()
    results, errors = at_once(lambda _: finish_setup(session).pk, 6)

    assert errors == []
    assert len(results) == 6 and len(set(results)) == 1
    assert BillingAccount.objects.count() == 1
    assert Credit.objects.filter(kind=CreditKind.WELCOME).count() == 1
    assert SetupSession.objects.get().finished_at is not None


# Permissions


def test_someone_elses_project_cannot_start_a_setup(client_for, outsider, mine):
    assert client_for(outsider).get(f"/billing/setup/?project={mine.project_id}").status_code == 404


def test_a_viewer_cannot_set_up_billing(client_for, viewer, project):
    assert client_for(viewer).get(f"/billing/setup/?project={project.project_id}").status_code == 404


@pytest.mark.parametrize("step", ["project/", "account/", "details/", "contact/", "payment-method/", "status/"])
def test_someone_elses_setup_is_404(client_for, owner, outsider, mine, step):
    _, sid = start(client_for(owner), mine)

    assert client_for(outsider).get(f"/billing/setup/{sid}/{step}").status_code == 404
    assert client_for(outsider).post(f"/billing/setup/{sid}/finish/").status_code == 404


def test_posting_someone_elses_project_is_refused(client_for, owner, outsider, mine):
    theirs = make_project(outsider, name="Theirs")
    client = client_for(owner)
    _, sid = start(client, mine)

    response = client.post(f"/billing/setup/{sid}/project/", {"project": theirs.project_id})

    assert response.status_code == 422
    assert SetupSession.objects.get(pk=sid).project == mine


def test_posting_someone_elses_billing_account_is_refused(client_for, owner, outsider, mine):
    make_account(owner)
    theirs = make_account(outsider)
    client = client_for(owner)
    _, sid = start(client, mine)

    response = client.post(f"/billing/setup/{sid}/account/", {"account": theirs.account_id})

    assert response.status_code == 422
    assert not ProjectBilling.objects.filter(project=mine).exists()


def test_posting_someone_elses_payment_method_is_404(client_for, owner, outsider, mine):
    make_profile(owner)
    theirs = make_card(make_profile(outsider))
    client = client_for(owner)
    _, sid = start(client, mine)

    assert client.post(f"/billing/setup/{sid}/payment-method/", {"use_method": theirs.pk}).status_code == 404


def test_a_key_of_another_project_is_refused(client_for, owner, mine):
    other_key, _ = make_key(make_project(owner, name="Other"))
    client = client_for(owner)
    _, sid = start(client, mine)

    response = client.post(f"/billing/setup/{sid}/project/", {"project": mine.project_id, "api_key": other_key.pk})

    assert "Choose a key of the selected project." in response.content.decode()


def test_editor_can_set_up_billing(client_for, editor, project):
    response = client_for(editor).get(f"/billing/setup/?project={project.project_id}")

    assert response.status_code == 302


def test_role_change_before_finish_is_caught(client_for, owner, editor, project):
    client = client_for(editor)
    _, sid = start(client, project)
    make_profile(editor)
    session = SetupSession.objects.get(pk=sid)
    session.country_id, session.terms_accepted = "US", True
    session.payment_method = make_card(editor.payments_profile)
    session.save()
    project.memberships.filter(user=editor).update(role=Role.VIEWER)

    response = client.post(f"/billing/setup/{sid}/finish/")

    assert response.status_code == 422
    assert "Choose a project you can manage." in response.content.decode()
    assert not BillingAccount.objects.exists()
