from playwright.sync_api import expect

from billing.models import BillingAccount, Credit
from tests.browser.test_api_keys_journey import key_rows, sign_up
from tests.factories import PASSWORD, make_account, make_key, make_project, make_user


def sign_in(page, email):
    page.goto("/accounts/login/")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def test_new_billing_user_sets_up_billing_from_the_api_keys_page(page):
    sign_up(page, "newpayer@example.com")
    page.goto("/api-keys/")

    key_rows(page).first.get_by_role("link", name="Set up billing").click()
    expect(page.get_by_role("heading", name="Set up your Cloud Billing account")).to_be_visible()
    page.get_by_label("Country").select_option("US")
    page.get_by_label("I agree to the Cloud Billing terms of service").check()
    page.get_by_role("button", name="Continue").click()

    expect(page.get_by_role("heading", name="Add your billing account details")).to_be_visible()
    page.get_by_role("link", name="Add contact information").click()
    dialog = page.locator("#modal")
    dialog.get_by_label("Individual").check()
    dialog.get_by_label("Name", exact=True).fill("New Payer")
    dialog.get_by_label("Address line 1").fill("1 Main Street")
    dialog.get_by_label("City").fill("Springfield")
    dialog.get_by_label("Postal code").fill("12345")
    dialog.get_by_label("Country").select_option("US")
    dialog.get_by_label("Email").fill("payer@example.com")
    dialog.get_by_label("Phone").fill("+1 650 555 0100")
    dialog.get_by_role("button", name="Save").click()
    expect(page.locator("#contact-block")).to_contain_text("New Payer")

    page.get_by_role("link", name="Add payment method").click()
    dialog.get_by_label("Card number").fill("4000 0000 0000 0002")
    dialog.get_by_label("Expiry month").select_option("12")
    dialog.get_by_label("Expiry year").select_option("2030")
    dialog.get_by_label("Security code (CVC)").fill("123")
    dialog.get_by_role("button", name="Save card").click()
    expect(dialog).to_contain_text("Your card was declined.")
    expect(dialog.get_by_label("Expiry year")).to_have_value("2030")
    dialog.get_by_label("Card number").fill("4242 4242 4242 4242")
    dialog.get_by_label("Security code (CVC)").fill("123")
    dialog.get_by_role("button", name="Save card").click()
    expect(page.locator("#payment-block")).to_contain_text("Visa •••• 4242")

    page.get_by_role("button", name="Finish account setup").click()
    expect(page.get_by_role("heading", name="Billing status")).to_be_visible()
    expect(page.locator("main")).to_contain_text("Billing is set up.")
    expect(page.locator("main")).to_contain_text("USD 300.00, valid until")

    page.get_by_role("link", name="Back to API keys").click()
    expect(key_rows(page).first).to_contain_text("Tier 1")
    expect(key_rows(page).first).to_contain_text("Paid")
    assert BillingAccount.objects.count() == 1


def test_existing_billing_user_with_two_accounts_picks_one(page):
    user = make_user("payer2@example.com")
    project = make_project(user, name="Second app")
    make_key(project, name="Second key")
    make_account(user, name="Team A")
    team_b = make_account(user, name="Team B")
    sign_in(page, user.email)

    key_rows(page).first.get_by_role("link", name="Set up billing").click()
    page.get_by_label("Select billing account").select_option(team_b.account_id)
    page.get_by_role("button", name="Finish setup").click()

    expect(page.locator("main")).to_contain_text("Second app is now on Tier 1")
    page.goto("/billing/")
    expect(page.locator(f"#account-{team_b.account_id}").locator("..").locator("..")).to_contain_text("Second app")
    assert not Credit.objects.exists()


def test_billing_pages_in_japanese(page):
    user = make_user("nihon@example.com", language="ja")
    make_key(make_project(user, name="日本のアプリ"))
    sign_in(page, user.email)

    key_rows(page).first.get_by_role("link", name="課金を設定").click()

    expect(page.locator("h1")).to_have_text("課金を設定")
    expect(page.get_by_label("国")).to_be_visible()
    expect(page.locator("option[value=JP]")).to_have_text("🇯🇵 日本")
