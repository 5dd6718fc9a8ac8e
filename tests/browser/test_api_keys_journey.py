import re

from playwright.sync_api import expect

from studio.models import ApiKey, User
from tests.factories import deliver_mail

PASSWORD = "a-long-pass-phrase"


def sign_up(page, email):
    """Sign up as a new person: ask, follow the e-mailed link, choose a password; ends on the welcome page."""
    page.goto("/accounts/signup/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("I accept the Terms of Service").check()
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    # The live server runs in this process: its outbox delivers to the test mailbox.
    (message,) = [m for m in deliver_mail() if m.to == [email]]
    page.goto(re.search(r"https?://[^/\s]+(/accounts/signup/confirm/\S+/)", message.body).group(1))
    page.get_by_label("New password", exact=True).fill(PASSWORD)
    page.get_by_label("New password confirmation").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()


def key_rows(page):
    return page.locator("#keys-table tbody tr")


def test_sign_up_create_and_revoke_a_key(page):
    sign_up(page, "journey@example.com")

    # The default key is shown once, then listed (masked) on the API keys page.
    default_secret = page.locator("#new-key-secret").input_value()
    assert re.fullmatch(r"stc_[0-9A-Za-z]{38}", default_secret)
    page.get_by_role("link", name="Go to API keys").click()
    expect(key_rows(page)).to_have_count(1)
    expect(key_rows(page).first).to_contain_text("Default API key")
    expect(key_rows(page).first).to_contain_text("Set up billing")
    assert default_secret not in page.content()

    # Create a key in a new project through the dialog.
    page.get_by_role("link", name="Create API key").click()
    dialog = page.locator("#modal")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Key name").fill("Journey key")
    dialog.get_by_label("Project", exact=True).select_option("new")
    dialog.get_by_label("New project name").fill("Journey project")
    dialog.get_by_role("button", name="Create API key").click()
    secret = dialog.locator("#new-key-secret").input_value()
    assert ApiKey.objects.authenticate(secret).name == "Journey key"
    dialog.get_by_role("button", name="Copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    dialog.get_by_role("link", name="Done").click()
    expect(dialog).to_be_hidden()
    expect(key_rows(page)).to_have_count(2)
    assert secret not in page.content()  # shown once: gone once the dialog closes

    # Revoke it with confirmation: it leaves the list and stops working.
    row = key_rows(page).filter(has_text="Journey key")
    row.get_by_role("link", name="Revoke").click()
    expect(dialog).to_contain_text("This cannot be undone.")
    dialog.get_by_role("button", name="Revoke key").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#messages")).to_contain_text("revoked")
    expect(key_rows(page)).to_have_count(1)
    assert ApiKey.objects.authenticate(secret) is None


def test_create_dialog_keeps_input_on_error(page):
    sign_up(page, "errors@example.com")
    page.goto("/api-keys/")

    page.get_by_role("link", name="Create API key").click()
    dialog = page.locator("#modal")
    dialog.get_by_label("Key name").fill("Needs a project")
    dialog.get_by_label("Project", exact=True).select_option("new")
    dialog.get_by_role("button", name="Create API key").click()

    expect(dialog).to_contain_text("Enter a name for the new project.")
    expect(dialog.get_by_label("Key name")).to_have_value("Needs a project")
    assert not ApiKey.objects.filter(name="Needs a project").exists()


def test_sort_and_rename_without_full_reload(page):
    sign_up(page, "sorter@example.com")
    page.goto("/api-keys/")
    page.evaluate("window.marker = 'still here'")

    page.get_by_role("link", name="Name", exact=True).click()
    expect(page).to_have_url(re.compile(r"sort=name"))
    key_rows(page).first.get_by_role("link", name="Rename").click()
    page.locator("#modal").get_by_label("Key name").fill("Renamed in place")
    page.locator("#modal").get_by_role("button", name="Save").click()

    expect(key_rows(page).first).to_contain_text("Renamed in place")
    assert page.evaluate("window.marker") == "still here"  # no full page load happened


def test_api_keys_page_in_japanese(page):
    sign_up(page, "nihongo@example.com")
    page.goto("/api-keys/")

    page.get_by_role("button", name="日本語").click()

    expect(page.locator("h1")).to_have_text("API キー")
    expect(page.locator("html")).to_have_attribute("lang", "ja")
    expect(page.get_by_role("link", name="API キーを作成")).to_be_visible()
    expect(key_rows(page).first).to_contain_text("課金を設定")
    assert User.objects.get(email="nihongo@example.com").language == "ja"


def test_pages_work_without_javascript(browser, live_server):
    context = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    page = context.new_page()
    sign_up(page, "nojs@example.com")
    page.goto("/api-keys/")

    page.get_by_role("link", name="Create API key").click()
    expect(page).to_have_url(re.compile(r"/api-keys/create/$"))
    page.get_by_label("Key name").fill("Plain form")
    page.get_by_role("button", name="Create API key").click()
    assert re.fullmatch(r"stc_[0-9A-Za-z]{38}", page.locator("#new-key-secret").input_value())
    page.get_by_role("link", name="Done").click()
    expect(key_rows(page)).to_have_count(2)

    key_rows(page).filter(has_text="Plain form").get_by_role("link", name="Revoke").click()
    page.get_by_role("button", name="Revoke key").click()
    expect(page).to_have_url(re.compile(r"/api-keys/$"))
    expect(key_rows(page)).to_have_count(1)
    context.close()
