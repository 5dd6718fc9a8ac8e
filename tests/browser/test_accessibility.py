"""X12: every page and dialog state a persona reaches passes axe-core (WCAG 2.2 AA) with no
violation, in English and Japanese, and no page scrolls sideways at 320 CSS px (WCAG 1.4.10)."""

import pytest
from django.utils import translation
from playwright.sync_api import expect

from studio.models import Role
from tests.browser.accessibility import axe_violations, horizontal_overflow
from tests.browser.test_billing_journey import sign_in
from tests.personas import the_world

LANGUAGES = ["en", "ja"]


class Walk:
    """Visits states and collects every violation with where it was found, so one run shows all."""

    def __init__(self, page):
        self.page, self.found = page, []

    def check(self, label: str):
        self.page.wait_for_load_state()
        self.found += [f"{label}: {v}" for v in axe_violations(self.page)]

    def visit(self, path: str):
        self.page.goto(path)
        self.check(path)
        # Reflow: the same page at 320 CSS px does not scroll sideways.
        size = self.page.viewport_size
        self.page.set_viewport_size({"width": 320, "height": 640})
        if (overflow := horizontal_overflow(self.page)) > 0:
            self.found.append(f"{path}: {overflow}px wider than a 320px viewport")
        self.page.set_viewport_size(size)

    def dialog(self, path: str, link_name: str, *, within=None):
        """Open a dialog from a link on `path` (htmx), check it, close it with Escape."""
        self.page.goto(path)
        scope = self.page.locator(within) if within else self.page
        scope.get_by_role("link", name=link_name).first.click()
        expect(self.page.locator("#modal")).to_be_visible()
        self.check(f"{path} → dialog {link_name!r}")
        self.page.keyboard.press("Escape")


def labels(language):
    """Link texts the walk clicks, as each language shows them."""
    en = {
        "create": "Create API key",
        "import": "Import project",
        "rename": "Rename",
        "revoke": "Revoke",
        "pay": "Pay now",
    }
    ja = {
        "create": "API キーを作成",
        "import": "プロジェクトをインポート",
        "rename": "名前を変更",
        "revoke": "無効にする",
        "pay": "今すぐ支払う",
    }
    return en if language == "en" else ja


@pytest.mark.parametrize("language", LANGUAGES)
def test_signed_out_pages_have_no_axe_violations(browser, live_server, language):
    context = browser.new_context(base_url=live_server.url, locale="ja-JP" if language == "ja" else "en-US")
    walk = Walk(context.new_page())
    for path in ("/accounts/login/", "/accounts/signup/", "/accounts/password-reset/"):
        walk.visit(path)
    # A form with errors: the failed sign-in.
    walk.page.goto("/accounts/login/")
    walk.page.locator("#id_username").fill("nobody@example.com")
    walk.page.locator("#id_password").fill("wrong-password-1")
    walk.page.locator("main form button[type=submit]").click()
    walk.check("sign-in with an error")
    context.close()

    assert not walk.found, "\n".join(walk.found)


@pytest.mark.parametrize("language", LANGUAGES)
def test_owner_pages_and_dialogs_have_no_axe_violations(page, language):
    world = the_world(language)
    text = labels(language)
    key = world["paid"].api_keys.get()
    sign_in(page, world["people"]["owner"].email)
    walk = Walk(page)

    for path in (
        "/api-keys/",
        f"/api-keys/{key.pk}/",
        "/api-keys/create/",
        f"/api-keys/{key.pk}/rename/",
        f"/api-keys/{key.pk}/revoke/",
        "/projects/import/",
        "/billing/",
        "/billing/payment-methods/add/",
        f"/billing/projects/{world['paid'].project_id}/tier/",
        "/settings/",
        f"/usage/?project={world['paid'].project_id}",
        f"/usage/?project={world['paid'].project_id}&range=24h&key={key.pk}",
        f"/usage/limits/?project={world['paid'].project_id}",
        f"/usage/?project={world['paid'].project_id}&range=custom&start=2026-01-02&end=2026-01-01",  # field errors
    ):
        walk.visit(path)
    for link in ("create", "import", "rename", "revoke"):
        walk.dialog("/api-keys/", text[link])
    walk.dialog("/api-keys/", text["pay"], within="#prepayment-notice")
    # A dialog with a field error, as htmx swaps it in.
    walk.dialog("/api-keys/", text["create"])
    page.get_by_role("link", name=text["create"]).first.click()
    page.locator("#modal form button[type=submit]").last.click()
    walk.check("create dialog with an error")
    # The set-up wizard for the free project.
    page.goto(f"/billing/setup/?project={world['free'].project_id}")
    walk.check("set-up: project step")

    assert not walk.found, "\n".join(walk.found)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("persona", [Role.EDITOR, Role.VIEWER])
def test_member_pages_have_no_axe_violations(page, language, persona):
    world = the_world(language)
    key = world["paid"].api_keys.get()
    sign_in(page, world["people"][persona].email)
    walk = Walk(page)

    for path in (
        "/api-keys/",
        f"/api-keys/{key.pk}/",
        "/billing/",
        "/settings/",
        f"/usage/?project={world['paid'].project_id}",
        f"/usage/limits/?project={world['paid'].project_id}",
    ):
        walk.visit(path)

    assert not walk.found, "\n".join(walk.found)


@pytest.mark.parametrize("language", LANGUAGES)
def test_staff_pages_have_no_axe_violations(page, language):
    world = the_world(language)
    sign_in(page, world["people"]["staff"].email)
    walk = Walk(page)

    for path in ("/api-keys/", "/billing/", "/settings/"):
        walk.visit(path)
    # The staff console (a superuser sees every part of it); its dialogs opened as pages, as without JS.
    owner, project = world["people"]["owner"], world["paid"]
    account_id = project.billing.account.account_id
    for path in (
        "/staff/",
        f"/staff/customers/?q={owner.email}",
        f"/staff/customers/{owner.pk}/",
        f"/staff/accounts/{account_id}/",
        f"/staff/projects/{project.project_id}/",
        "/staff/refunds/",
        "/staff/transfers/",
        "/staff/quota-requests/",
        "/staff/past-due/",
        "/staff/goodwill/",
        "/staff/audit/",
        "/staff/promotions/",
        "/staff/promotions/new/",
        f"/staff/accounts/{account_id}/goodwill/",
        f"/staff/accounts/{account_id}/status/",
    ):
        walk.visit(path)
    # The account page's dialogs as htmx opens them, and one with field errors (the goodwill form sent empty).
    with translation.override(language):
        suspend, goodwill = translation.gettext("Suspend"), translation.gettext("Grant goodwill credit")
    for link in (suspend, goodwill):
        walk.dialog(f"/staff/accounts/{account_id}/", link, within="main .page-header")
    page.get_by_role("link", name=goodwill).click()
    page.locator("#modal form button[type=submit]").click()
    expect(page.locator("#modal .field-error").first).to_be_visible()
    walk.check("goodwill dialog with errors")

    assert not walk.found, "\n".join(walk.found)
