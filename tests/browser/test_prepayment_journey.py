from datetime import timedelta
from decimal import Decimal

from django.utils import timezone
from playwright.sync_api import expect

from billing import ledger, tiers
from billing.models import TestProcessorCharge
from tests.browser.test_api_keys_journey import key_rows
from tests.browser.test_billing_journey import sign_in
from tests.factories import make_account, make_key, make_project, make_user


def prepayment_due(email):
    user = make_user(email)
    project = make_project(user, name="Prepaid app")
    make_key(project, name="Prepaid key")
    make_account(user, country="IN", prepayment_due=True, projects=[project])
    return user


def test_action_required_pay_with_a_card_moves_the_project_to_tier_1(page):
    user = prepayment_due("prepay@example.com")
    sign_in(page, user.email)
    expect(page.locator("#prepayment-notice")).to_contain_text("Action required: one-time prepayment")

    key_rows(page).first.get_by_role("link", name="Action required").click()
    dialog = page.locator("#modal")
    expect(dialog).to_contain_text("Pay at least USD 10.00")
    dialog.get_by_role("button", name="Pay").click()

    expect(dialog).to_contain_text("Payment of USD 10.00 received.")
    # Without a reload, every part of the page that depended on the payment has changed.
    expect(page.locator("#prepayment-notice")).to_have_count(0)
    expect(page.locator("#terms-status")).to_contain_text("At least one of your projects has billing enabled")
    dialog.get_by_role("link", name="Done").click()
    expect(key_rows(page).first).to_contain_text("Tier 1")
    expect(key_rows(page).first).to_contain_text("Paid")
    page.reload()
    expect(page.locator("#prepayment-notice")).to_have_count(0)
    assert TestProcessorCharge.objects.count() == 1


def test_declined_card_shows_the_reason_charges_nothing_and_a_retry_succeeds(page):
    user = prepayment_due("decline@example.com")
    sign_in(page, user.email)

    key_rows(page).first.get_by_role("link", name="Action required").click()
    dialog = page.locator("#modal")
    dialog.get_by_label("A new card").check()
    dialog.get_by_label("Card number").fill("4000 0000 0000 0002")
    dialog.get_by_label("Expiry month").select_option("12")
    dialog.get_by_label("Expiry year").select_option("2030")
    dialog.get_by_label("Security code (CVC)").fill("123")
    dialog.get_by_role("button", name="Pay").click()

    expect(dialog).to_contain_text("Your card was declined. Try another card or contact your bank.")
    assert TestProcessorCharge.objects.count() == 0
    dialog.get_by_label("Card number").fill("4242 4242 4242 4242")
    dialog.get_by_label("Security code (CVC)").fill("123")
    dialog.get_by_role("button", name="Pay").click()

    expect(dialog).to_contain_text("Payment of USD 10.00 received.")
    assert TestProcessorCharge.objects.count() == 1


def test_upgrade_from_tier_1_to_tier_2(page):
    user = make_user("upgrader@example.com")
    project = make_project(user, name="Growing app")
    make_key(project)
    account = make_account(user, projects=[project])
    long_ago = timezone.now() - timedelta(days=40)
    ledger.record_usage_charge(account, amount=Decimal("260"), description="u", idempotency_key="g1", at=long_ago)
    ledger.record_payment(account, amount=Decimal("260"), description="p", idempotency_key="g2", at=long_ago)
    tiers.refresh_upgrade_flags(account)
    sign_in(page, user.email)

    key_rows(page).first.get_by_role("link", name="Upgrade").click()
    dialog = page.locator("#modal")
    expect(dialog).to_contain_text("Next: Tier 2")
    dialog.get_by_role("button", name="Upgrade now").click()

    expect(page.locator("#messages")).to_contain_text("Growing app is now on Tier 2.")
    expect(key_rows(page).first).to_contain_text("Tier 2")
    expect(key_rows(page).first.get_by_role("link", name="Upgrade")).to_have_count(0)
