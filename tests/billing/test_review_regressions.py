"""Regressions for defects found in review: each test failed before its fix."""

import uuid
from datetime import timedelta
from decimal import Decimal as D

from django.core.management import call_command
from django.utils import timezone

from billing import ledger, tiers
from billing.models import AccountStatus, BillingAdministrator, PaymentMethod, PrepaymentStatus
from billing.services import require_prepayment, set_account_status, unlink_project
from studio.models import BillingState, Role, Tier, User
from tests.factories import add_member, deliver_mail, make_account, make_key, make_project, make_user


def qualifying_account(owner, projects):
    account = make_account(owner, projects=projects)
    long_ago = timezone.now() - timedelta(days=40)
    ledger.record_usage_charge(account, amount=D("300"), description="u", idempotency_key=f"q{account.pk}", at=long_ago)
    ledger.record_payment(account, amount=D("300"), description="p", idempotency_key=f"p{account.pk}", at=long_ago)
    return account


def test_a_stale_decision_never_puts_an_unlinked_project_on_a_paid_tier(owner):
    project = make_project(owner)
    account = qualifying_account(owner, [project])
    stale = type(project).objects.get(pk=project.pk)
    unlink_project(project, by=owner)

    changed = tiers.set_project_tier(
        stale, Tier.TIER_2, BillingState.ACTIVE, reason="test", linked_to=account, from_states=(BillingState.ACTIVE,)
    )

    project.refresh_from_db()
    assert changed is False
    assert (project.tier, project.billing_state) == (Tier.FREE, BillingState.NONE)


def test_suspension_stops_paid_usage_and_reinstatement_restores_it(client_for, owner):
    project = make_project(owner)
    make_key(project)
    account = make_account(owner, projects=[project])
    staff = make_user("support@example.com", is_staff=True)

    set_account_status(account, AccountStatus.SUSPENDED, by=staff, reason="chargeback")

    project.refresh_from_db()
    assert (project.tier, project.billing_state, project.quota_state) == (Tier.FREE, "suspended", "billing_suspended")
    assert (
        '<span class="badge warning">Billing suspended</span>' in client_for(owner).get("/api-keys/").content.decode()
    )
    call_command("evaluate_tiers")  # must not fail on suspended accounts

    set_account_status(account, AccountStatus.ACTIVE, by=staff, reason="resolved")
    project.refresh_from_db()
    assert (project.tier, project.billing_state) == (Tier.TIER_1, BillingState.ACTIVE)


def test_a_suspended_account_cannot_be_linked_or_chosen(client_for, owner):
    account = make_account(owner, name="Suspended one")
    set_account_status(account, AccountStatus.SUSPENDED, by=None, reason="test")
    project = make_project(owner)
    client = client_for(owner)
    sid = client.get(f"/billing/setup/?project={project.project_id}")["Location"].split("/")[3]

    page = client.get(f"/billing/setup/{sid}/account/").content.decode()
    response = client.post(f"/billing/setup/{sid}/account/", {"account": account.account_id})

    assert account.account_id not in page
    assert response.status_code == 422
    project.refresh_from_db()
    assert project.billing_state == BillingState.NONE


def test_staff_flag_makes_the_prepayment_due_at_once(owner, django_capture_on_commit_callbacks):
    from django.core import mail

    project = make_project(owner)
    account = make_account(owner, projects=[project])

    with django_capture_on_commit_callbacks(execute=True):
        require_prepayment(account, by=make_user(is_staff=True), reason="risk review")

    account.refresh_from_db()
    project.refresh_from_db()
    assert (account.prepayment_status, account.prepayment_amount) == (PrepaymentStatus.REQUIRED, D("10.00"))
    assert (project.tier, project.billing_state) == (Tier.FREE, BillingState.PREPAYMENT_DUE)
    deliver_mail()
    assert [m.to for m in mail.outbox] == [[owner.email]]


def test_a_viewer_cannot_link_a_paid_key_to_their_studio(client_for, owner, viewer):
    paid = make_project(owner, tier=Tier.TIER_1)
    add_member(paid, viewer, Role.VIEWER)
    key, _ = make_key(paid)

    response = client_for(viewer).post("/settings/", {"full_name": "", "language": "en", "studio_api_key": key.pk})

    assert response.status_code == 422
    assert User.objects.get(pk=viewer.pk).studio_api_key is None


def test_a_co_administrator_without_a_profile_cannot_put_a_card_on_the_owners_profile(client_for, owner):
    account = make_account(owner, prepayment_due=True, projects=[make_project(owner)])
    co_admin = make_user("co-admin@example.com")
    BillingAdministrator.objects.create(account=account, user=co_admin)
    cards_before = PaymentMethod.objects.count()

    response = client_for(co_admin).post(
        f"/billing/accounts/{account.account_id}/prepayment/",
        {
            "attempt": str(uuid.uuid4()),
            "amount": "10",
            "method": "new_card",
            "number": "4242424242424242",
            "exp_month": "1",
            "exp_year": str(timezone.now().year + 1),
            "cvc": "123",
        },
    )

    assert "Add your contact information on the billing page before adding a card." in response.content.decode()
    assert PaymentMethod.objects.count() == cards_before


def test_add_new_account_without_a_profile_goes_to_the_details_step(client_for, owner):
    account = make_account(owner)
    co_admin = make_user("second@example.com")
    BillingAdministrator.objects.create(account=account, user=co_admin)
    project = make_project(co_admin)
    client = client_for(co_admin)
    sid = client.get(f"/billing/setup/?project={project.project_id}")["Location"].split("/")[3]

    response = client.post(f"/billing/setup/{sid}/account/", {"account": "new"})

    assert response["Location"] == f"/billing/setup/{sid}/details/"
    assert 'aria-label="Add contact information">+</a>' in client.get(response["Location"]).content.decode()


def test_refund_dialog_prefills_an_amount_it_accepts(client_for, owner):
    account = make_account(owner)
    ledger.grant_credit(account, kind="prepayment", amount=D("10"))
    ledger.record_usage_charge(account, amount=D("0.123456"), description="u", idempotency_key="r")

    html = client_for(owner).get(f"/billing/accounts/{account.account_id}/refund/").content.decode()

    assert 'name="amount" value="9.87"' in html


def test_dismissing_the_notice_never_redirects_off_site(client_for, owner):
    account = make_account(owner, prepayment_due=True)

    for target in ("//evil.example/phish", "/\\evil.example", "https://evil.example/"):
        response = client_for(owner).post(f"/billing/accounts/{account.account_id}/notice/dismiss/", {"next": target})
        assert response["Location"] == "/api-keys/"
