"""Issue 13 in a real browser: the staff console's workflows, by a Support and a Finance member, each with and
without JavaScript where it matters, and in Japanese for the Support journeys; every state passes axe and reflows at
320 px. Headings and controls are found by their text in the reader's language (gettext of the English msgid)."""

import re
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone, translation
from playwright.sync_api import expect

from billing import ledger
from billing.models import (
    AccountStatus,
    BillingAccount,
    CreditKind,
    EntryKind,
    LedgerEntry,
    RefundRequest,
    RefundStatus,
)
from billing.statements import charge_due, issue_statement
from staff import roles
from studio.models import ActorKind, ApiKey, AuditEvent, Tier
from tests.browser.accessibility import axe_violations, horizontal_overflow
from tests.browser.test_billing_journey import sign_in
from tests.browser.test_money_journeys import CHARGED, LA, OCTOBER
from tests.factories import make_account, make_key, make_project, make_staff, make_user
from tests.staff.finance import audit, paid_account
from tests.usage.test_dunning import card_with, statement_line
from usage.models import QuotaIncreaseRequest, QuotaRequestStatus
from usage.quotas import limit_in_force, request_increase

STATUS = re.compile(r"the server responded with a status of (\d+)")


class Reader:
    """A browser context (JavaScript on or off) whose page collects errors: a console error is a defect, but for
    the response statuses the journey expects (422 for a form with errors, and whatever `allow` adds).

    With JavaScript off, Playwright cannot evaluate in the page, so `check` shows the page's HTML as it is to a
    second context (JavaScript on for axe, the page's own scripts blocked) at the same address."""

    def __init__(self, browser, live_server, *, js: bool):
        self.browser, self.live_server, self.js, self.mirror = browser, live_server, js, None
        self.context = browser.new_context(base_url=live_server.url, locale="en-US", java_script_enabled=js)
        self.page = self.context.new_page()
        self.page.set_default_timeout(10_000)
        self.allowed, self.errors = {422}, []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", self._console)

    def _console(self, message):
        if message.type != "error":
            return
        status = STATUS.search(message.text)
        if status is None or int(status.group(1)) not in self.allowed:
            self.errors.append(message.text)

    def check(self, state: str) -> list[str]:
        """axe's violations and the 320 px reflow of the page as it is now, named after `state`."""
        page = self.page if self.js else self._mirrored()
        found = [f"{state}: {v}" for v in axe_violations(page)]
        page.set_viewport_size({"width": 320, "height": 640})
        if (overflow := horizontal_overflow(page)) > 0:
            found.append(f"{state}: {overflow}px wider than a 320px viewport ({', '.join(overflowing(page))})")
        page.set_viewport_size({"width": 1280, "height": 800})
        if page is not self.page:
            page.close()
        return found

    def _mirrored(self):
        if self.mirror is None:
            self.mirror = self.browser.new_context(base_url=self.live_server.url, locale="en-US")
            self.mirror.route(re.compile(r"\.js(\?|$)"), lambda route: route.abort())
        html, url = self.page.content(), self.page.url
        page = self.mirror.new_page()
        page.route(
            lambda address: address == url,
            lambda route: route.fulfill(body=html, content_type="text/html; charset=utf-8"),
        )
        page.goto(url)
        return page

    def close(self):
        for context in (self.context, self.mirror):
            if context is not None:
                context.close()


@pytest.fixture
def open_browser(browser, live_server):
    """open_browser(js=...) → a Reader: a page of a new browser context; all are closed, and checked for errors,
    at the end."""
    readers = []

    def open_browser(*, js: bool = True) -> Reader:
        reader = Reader(browser, live_server, js=js)
        readers.append(reader)
        return reader

    yield open_browser
    for reader in readers:
        reader.close()
    errors = [error for reader in readers for error in reader.errors]
    assert errors == [], f"browser errors: {errors}"


def overflowing(page) -> list[str]:
    """The innermost elements (outside scrolling boxes) that reach past the viewport's right edge."""
    return page.evaluate(
        """() => {
            const clipped = e => {
                for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
                    if (getComputedStyle(a).overflowX !== 'visible') return true;
                }
                return false;
            };
            const wide = [...document.querySelectorAll('body *')]
                .filter(e => e.getBoundingClientRect().right > innerWidth + 1 && !clipped(e));
            const name = e => e.tagName.toLowerCase() + [...e.classList].map(c => '.' + c).join('');
            return wide.filter(e => !wide.some(o => o !== e && e.contains(o))).slice(0, 6).map(name);
        }"""
    )


def texts(language: str):
    """t(msgid, **values): the English msgid as `language` shows it."""

    def t(msgid: str, **values) -> str:
        with translation.override(language):
            text = translation.gettext(msgid)
        return text % values if values else text

    return t


def audit_rows(action_prefix: str) -> list[tuple]:
    """The audit rows whose action starts with `action_prefix`, oldest first: (action, actor, kind, reason)."""
    rows = AuditEvent.objects.filter(action__startswith=action_prefix).order_by("pk")
    return [(e.action, e.actor.email, e.actor_kind, e.reason) for e in rows]


# 1. Support: lookup, the customer's page, "view as customer" read-only


@pytest.mark.parametrize(("js", "language"), [(True, "en"), (False, "en"), (True, "ja")])
def test_support_finds_a_customer_and_views_their_console_read_only(open_browser, js, language):
    t = texts(language)
    customer = make_user("casey@example.com", full_name="Casey Customer", language=language)
    project = make_project(customer, name="Customer app", tier=Tier.TIER_1)
    key, _secret = make_key(project, name="Customer key")
    make_account(customer, name="Customer billing", projects=[project])
    make_staff("support@staff.example", roles.SUPPORT, full_name="Sam Support", language=language)
    reader = open_browser(js=js)
    reader.allowed.add(403)  # the refused write
    page = reader.page
    sign_in(page, "support@staff.example")

    page.goto("/staff/")
    page.get_by_role("navigation", name=t("Staff console")).get_by_role("link", name=t("Customers")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(t("Customers"))
    found = reader.check("lookup")
    search = page.get_by_label(t("E-mail, project ID, project number, billing account ID or API key prefix"))
    results = page.locator("#lookup-results")
    for query, kind, shown in (
        ("casey@example.com", t("E-mail"), "casey@example.com"),
        (key.prefix[:8], t("API key"), key.prefix),
    ):
        search.fill(query)
        page.get_by_role("button", name=t("Search"), exact=True).click()
        expect(results.locator("tbody tr")).to_have_count(1)
        expect(results.locator("tbody tr")).to_contain_text(f"{kind}: {shown}")
        found += reader.check(f"lookup by {query}")
    expect(page).to_have_url(re.compile(r"/staff/customers/\?q=stc_"))

    results.get_by_role("link", name="casey@example.com").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Casey Customer")
    found += reader.check("customer page")

    view_as = page.locator("section.view-as")
    view_as.get_by_role("button", name=t("View as customer")).click()  # no reason: refused
    expect(page.locator("#id_reason_error")).to_have_text(t("This field is required."))
    found += reader.check("view as without a reason")
    view_as.get_by_label(t("Reason (recorded in the audit log, e.g. the support case)")).fill("Case 4711")
    view_as.get_by_role("button", name=t("View as customer")).click()

    banner = page.get_by_role("region", name=re.compile("Casey Customer"))
    viewing = t(
        "You are viewing %(name)s (%(email)s)’s console, read-only.", name=customer.full_name, email=customer.email
    )
    expect(banner).to_contain_text(viewing)
    expect(page.locator("#keys-table tbody tr")).to_have_count(1)
    expect(page.locator("#keys-table")).to_contain_text("Customer key")
    found += reader.check("viewing the keys page")

    page.get_by_role("link", name=t("Create API key")).first.click()
    if js:
        page.locator("#modal").get_by_label(t("Key name")).fill("Not allowed")
        page.locator("#modal").get_by_role("button", name=t("Create API key")).click()
        message = t("This is a read-only view of the customer's console: nothing was changed.")
        expect(page.locator("#messages")).to_contain_text(message)
        expect(page.locator("#modal")).to_be_hidden()
    else:
        page.get_by_label(t("Key name")).fill("Not allowed")
        page.get_by_role("button", name=t("Create API key")).click()
        expect(page.get_by_role("heading", level=1)).to_have_text(t("This is a read-only view"))
        found += reader.check("write refused")
        page.get_by_role("link", name=t("Back to their API keys")).click()
    found += reader.check("after the refused write")
    assert list(ApiKey.objects.values_list("name", flat=True)) == ["Customer key"]

    page.get_by_role("region", name=re.compile("Casey Customer")).get_by_role("button", name=t("Stop viewing")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Casey Customer")
    stopped = t("You are no longer viewing %(customer)s's console.", customer="casey@example.com")
    expect(page.locator("#messages")).to_contain_text(stopped)
    expect(page.locator(".viewing-as")).to_have_count(0)
    found += reader.check("viewing stopped")

    assert audit_rows("staff.view_as") == [
        ("staff.view_as", "support@staff.example", ActorKind.STAFF, "Case 4711"),
        ("staff.view_as_end", "support@staff.example", ActorKind.STAFF, ""),
    ]
    assert not found, "\n".join(found)


# 2. A quota increase: asked for on the Limits tab, decided by Support, shown to the customer

FLASH = "gemini-2.5-flash"


def billed_owner(email: str, language: str):
    """An Owner (in `language`) of a Tier 1 project with a key, linked to their billing account."""
    owner = make_user(email, full_name="Olive Owner", language=language)
    project = make_project(owner, name="Launch app", tier=Tier.TIER_1)
    make_key(project, name="Launch key")
    make_account(owner, name="Launch billing", projects=[project])
    return owner, project


def flash_section(page):
    return page.locator("section", has=page.locator(f'a[href$="?model={FLASH}"]'))


@pytest.mark.parametrize("language", ["en", "ja"])
def test_an_owner_asks_for_a_higher_rpm_and_support_approves_a_lower_figure(open_browser, language):
    t = texts(language)
    owner, project = billed_owner("olive@example.com", language)
    make_staff("support@staff.example", roles.SUPPORT, language=language)
    current = limit_in_force(project, FLASH, "rpm")
    asked, approved = 2 * current, current + current // 2
    customer = open_browser()
    page = customer.page
    sign_in(page, owner.email)
    limits_url = f"/usage/limits/?project={project.project_id}"
    page.goto(limits_url)
    requests = page.locator("#quota-requests")
    expect(requests).to_contain_text(t("No quota increase requests yet."))
    found = customer.check("limits tab")

    flash_section(page).get_by_role("link", name=t("Request a higher limit")).click()
    dialog = page.locator("#modal")
    expect(dialog.get_by_role("heading", name=t("Request a higher limit"))).to_be_visible()
    expect(dialog.get_by_label(t("Model"), exact=True)).to_have_value(FLASH)
    dialog.get_by_label(t("Limit"), exact=True).select_option("rpm")
    dialog.get_by_label(t("Limit you need")).fill(str(current))  # not above the figure in force
    dialog.get_by_label(t("Why this project needs it")).fill("Launch week traffic")
    dialog.get_by_role("button", name=t("Send request")).click()
    expect(dialog.locator("#id_value_error")).to_have_text(
        t("Ask for more than the current limit, %(limit)s.", limit=f"{current:,}")
    )
    expect(dialog.get_by_label(t("Why this project needs it"))).to_have_value("Launch week traffic")
    found += customer.check("quota request dialog with an error")
    dialog.get_by_label(t("Limit you need")).fill(str(asked))
    dialog.get_by_role("button", name=t("Send request")).click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#messages")).to_contain_text(
        t("Request sent. Support will decide and e-mail you; its state shows on this page.")
    )
    pending = requests.locator("tbody tr")
    expect(pending).to_have_count(1)
    expect(pending).to_contain_text(t("Waiting for review"))
    expect(pending.locator("td.num").nth(1)).to_have_text(f"{asked:,}")
    found += customer.check("limits tab with a pending request")

    support = open_browser()
    staff_page = support.page
    sign_in(staff_page, "support@staff.example")
    staff_page.goto("/staff/")
    nav = staff_page.get_by_role("navigation", name=t("Staff console"))
    nav.get_by_role("link", name=t("Quota increases")).click()
    expect(staff_page.get_by_role("heading", level=1)).to_be_visible()
    row = staff_page.locator("#quota-requests-table tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("Launch app")
    expect(row).to_contain_text("Launch week traffic")
    found += support.check("quota queue")
    row.get_by_role("link", name=t("Decide")).click()
    decision = staff_page.locator("#modal")
    expect(decision.get_by_role("heading", name=t("Quota increase request"))).to_be_visible()
    expect(decision.get_by_label(t("Approve this figure"))).to_be_checked()
    expect(decision.get_by_label(t("Approved limit"))).to_have_value(str(asked))
    found += support.check("quota decision dialog")
    decision.get_by_label(t("Approved limit")).fill(str(approved))
    decision.get_by_label(t("Reason (the requester reads it)")).fill("Approved for the launch; ask again later")
    decision.get_by_role("button", name=t("Decide")).click()
    expect(decision).to_be_hidden()
    expect(staff_page.locator("#messages")).to_contain_text(
        t("Approved %(value)s: it applies to the project's next request.", value=f"{approved:,}")
    )
    expect(staff_page.locator("#quota-requests-table")).to_contain_text(t("No quota increase request matches."))
    found += support.check("quota queue after the decision")

    page.goto(limits_url)
    decided = requests.locator("tbody tr")
    expect(decided).to_contain_text(t("Approved"))
    expect(decided.locator("td.num").nth(2)).to_have_text(f"{approved:,}")
    expect(decided).to_contain_text("Approved for the launch; ask again later")
    rpm = flash_section(page).get_by_role("row", name=t("Requests per minute (RPM)"))
    expect(rpm.locator("td").nth(1)).to_have_text(f"{approved:,} {t('raised for this project')}")
    found += customer.check("limits tab with the decision")

    ask = QuotaIncreaseRequest.objects.get()
    assert (ask.status, ask.requested_value, ask.approved_value, ask.decided_by.email) == (
        QuotaRequestStatus.APPROVED,
        asked,
        approved,
        "support@staff.example",
    )
    assert limit_in_force(project, FLASH, "rpm") == approved
    assert not found, "\n".join(found)


def test_support_decides_a_quota_request_without_javascript(open_browser):
    owner, project = billed_owner("olive@example.com", "en")
    make_staff("support@staff.example", roles.SUPPORT)
    current = limit_in_force(project, FLASH, "rpm")
    ask = request_increase(project, model_id=FLASH, metric="rpm", value=2 * current, reason="Launch", by=owner)
    support = open_browser(js=False)
    page = support.page
    sign_in(page, "support@staff.example")
    page.goto("/staff/quota-requests/")
    page.locator("#quota-requests-table tbody tr").get_by_role("link", name="Decide").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Quota increase request")
    found = support.check("quota decision page")

    page.get_by_label("Decline").check()
    page.get_by_role("button", name="Decide").click()  # no reason
    expect(page.locator("#id_reason_error")).to_have_text("This field is required.")
    expect(page.get_by_label("Decline")).to_be_checked()
    found += support.check("quota decision page with an error")
    page.get_by_label("Reason (the requester reads it)").fill("Use a second project for batch traffic")
    page.get_by_role("button", name="Decide").click()
    expect(page).to_have_url(re.compile(r"/staff/quota-requests/$"))
    expect(page.locator("#messages")).to_have_text("Quota request declined.")
    found += support.check("quota queue after declining")

    ask.refresh_from_db()
    assert (ask.status, ask.approved_value, ask.decision_reason) == (
        QuotaRequestStatus.DECLINED,
        None,
        "Use a second project for batch traffic",
    )
    assert limit_in_force(project, FLASH, "rpm") == current
    assert not found, "\n".join(found)


# 3. A refund above the threshold: two Finance members approve it


def test_a_refund_above_the_threshold_is_approved_by_two_finance_members(open_browser):
    owner = make_user("payer@example.com", full_name="Pat Payer")
    account = paid_account(owner, "250", name="Payer billing")
    make_staff("finance@staff.example", roles.FINANCE)
    make_staff("finance2@staff.example", roles.FINANCE)
    customer = open_browser()
    page = customer.page
    sign_in(page, owner.email)
    page.goto("/billing/")
    page.get_by_role("link", name="Request a refund").click()
    dialog = page.locator("#modal")
    dialog.get_by_label("Amount (USD)").fill("150")
    dialog.get_by_label("Reason").fill("The project ended")
    dialog.get_by_role("button", name="Request refund").click()
    expect(page.locator("#messages")).to_contain_text(
        "Refund requested. Our billing team reviews it and tells you by email."
    )
    expect(page.locator("#billing-body")).to_contain_text("Refund of USD 150.00 · Waiting for review")
    found = customer.check("billing page with a refund request")
    refund = RefundRequest.objects.get()

    first = open_browser()
    staff_page = first.page
    sign_in(staff_page, "finance@staff.example")
    staff_page.goto("/staff/")
    staff_page.get_by_role("navigation", name="Staff console").get_by_role("link", name="Refund requests").click()
    row = staff_page.locator("#refunds-table tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("USD 150.00")
    expect(row).to_contain_text("The project ended")
    found += first.check("refund queue")
    row.get_by_role("link", name="Decide").click()
    decision = staff_page.locator("#modal")
    expect(decision).to_contain_text("your approval is the first of two.")
    found += first.check("refund decision dialog")
    decision.get_by_label("Approve").check()
    decision.get_by_label("Reason").fill("Prepayment unused")
    decision.get_by_role("button", name="Decide").click()
    expect(decision).to_be_hidden()
    expect(staff_page.locator("#messages")).to_contain_text(
        "First approval recorded: a second Finance member must approve this refund."
    )
    expect(row).to_contain_text("finance@staff.example")
    expect(row).to_contain_text("Waiting for a second approval")
    found += first.check("refund queue after the first approval")

    second = open_browser(js=False)
    other = second.page
    sign_in(other, "finance2@staff.example")
    other.goto("/staff/refunds/")
    other.locator("#refunds-table tbody tr").get_by_role("link", name="Decide").click()
    expect(other.get_by_role("heading", level=1)).to_have_text("Refund request")
    expect(other.locator("main")).to_contain_text(
        "First approved by finance@staff.example (Prepayment unused). A second approval by another Finance member"
        " refunds it."
    )
    found += second.check("refund decision page, second approval")
    other.get_by_label("Approve").check()
    other.get_by_label("Reason").fill("Agreed")
    other.get_by_role("button", name="Decide").click()
    expect(other).to_have_url(re.compile(r"/staff/refunds/$"))
    expect(other.locator("#messages")).to_have_text("Refunded USD 150.00.")
    expect(other.locator("#refunds-table")).to_contain_text("No refund request matches.")
    found += second.check("refund queue after the refund")

    page.goto("/billing/")
    expect(page.locator("#billing-body")).to_contain_text("Refund of USD 150.00 · Refunded")
    transactions = page.locator("#billing-body table").last
    expect(transactions.get_by_role("row", name=re.compile("Refund")).first).to_contain_text("USD -150.00")
    found += customer.check("billing page after the refund")

    refund.refresh_from_db()
    assert (refund.status, refund.first_approved_by.email, refund.reviewed_by.email, refund.review_note) == (
        RefundStatus.REFUNDED,
        "finance@staff.example",
        "finance2@staff.example",
        "Agreed",
    )
    assert list(
        LedgerEntry.objects.filter(account=account, kind=EntryKind.REFUND).values_list("amount", flat=True)
    ) == [Decimal("-150")]
    assert ledger.balances(account).credit_remaining == Decimal("100")
    assert not found, "\n".join(found)


# 4. A promotional code: made by Finance, redeemed by a billing administrator


@pytest.mark.parametrize("js", [True, False])
def test_finance_makes_a_promotional_code_and_a_billing_administrator_redeems_it(open_browser, js):
    owner = make_user("redeemer@example.com")
    account = make_account(owner, name="Promo billing", projects=[make_project(owner, tier=Tier.TIER_1)])
    make_staff("finance@staff.example", roles.FINANCE)
    finance = open_browser(js=js)
    page = finance.page
    sign_in(page, "finance@staff.example")
    page.goto("/staff/")
    page.get_by_role("navigation", name="Staff console").get_by_role("link", name="Promotional codes").click()
    found = finance.check("promotional codes")
    page.get_by_role("link", name="New code").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("New promotional code")
    page.get_by_label("Code", exact=True).fill("spring-25")
    page.get_by_label("Credit amount (USD)").fill("25")
    page.get_by_label("Redeemable until").fill((timezone.localdate() + timedelta(days=30)).isoformat())
    page.get_by_label("Credit valid for (days)").fill("30")
    page.get_by_label("Redemptions allowed").fill("2")
    page.get_by_label("Description").fill("Spring campaign")
    found += finance.check("new promotional code form")
    page.get_by_role("button", name="Create code").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("SPRING-25")
    expect(page.locator("#messages")).to_have_text("Promotional code SPRING-25 created.")
    found += finance.check("promotional code page")

    administrator = open_browser(js=js)
    billing = administrator.page
    sign_in(billing, owner.email)
    billing.goto("/billing/")
    billing.get_by_role("link", name="Redeem a promotional code").click()
    scope = billing.locator("#modal") if js else billing
    expect(scope.get_by_role("heading", name="Redeem a promotional code")).to_be_visible()
    scope.get_by_label("Promotional code", exact=True).fill("SPRING-52")
    scope.get_by_role("button", name="Redeem").click()
    expect(scope.locator("#id_code_error")).to_have_text(
        "There is no promotional code like this. Check the code and try again."
    )
    found += administrator.check("redeem dialog with a wrong code")
    scope.get_by_label("Promotional code", exact=True).fill("spring-25")
    scope.get_by_role("button", name="Redeem").click()
    expect(billing.locator("#messages")).to_have_text(
        "A promotional credit of USD 25.00 was added to Promo billing. It pays for usage for 30 days."
    )
    facts = billing.locator(".billing-account .facts")
    expect(facts).to_contain_text("Credit remainingUSD 25.00")
    found += administrator.check("billing page with the promotional credit")

    assert [(c.kind, c.original_amount) for c in ledger.credits_with_remaining(account)] == [
        (CreditKind.PROMOTIONAL, Decimal("25"))
    ]
    assert not found, "\n".join(found)


# 5. Suspension from the past-due queue, and reinstatement


def past_due_account(email: str) -> BillingAccount:
    """An account whose October statement's charge was declined on the 2nd (no retry yet): past due, still active."""
    owner = make_user(email)
    project = make_project(owner, name="Checkout")
    with time_machine.travel(datetime(2026, 9, 30, tzinfo=LA), tick=False):
        account = make_account(owner, name="Late billing", projects=[project])
    with time_machine.travel(datetime(2026, 10, 20, tzinfo=LA), tick=False):
        ledger.record_usage(account, month=OCTOBER, lines=[statement_line(project, "15")])
    with time_machine.travel(datetime(2026, 11, 1, 0, 5, tzinfo=LA), tick=False):
        issue_statement(account, OCTOBER)
    card_with(account, "card_declined")
    with time_machine.travel(CHARGED, tick=False):
        charge_due()
    account.refresh_from_db()
    return account


def test_finance_suspends_a_past_due_account_and_reinstates_it(open_browser):
    account = past_due_account("late@example.com")
    assert account.status == AccountStatus.ACTIVE
    make_staff("finance@staff.example", roles.FINANCE)
    finance = open_browser()
    page = finance.page
    sign_in(page, "finance@staff.example")
    page.goto("/staff/")
    page.get_by_role("navigation", name="Staff console").get_by_role("link", name="Past-due accounts").click()
    row = page.locator("#past-due-table tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("Late billing")
    expect(row).to_contain_text("USD 15.00")
    found = finance.check("past-due queue")

    # Suspended from the queue...
    row.get_by_role("link", name="Suspend").click()
    dialog = page.locator("#modal")
    expect(dialog.get_by_role("heading", name="Suspend or reinstate")).to_be_visible()
    expect(dialog.get_by_label("Suspend (paid requests are refused at once)")).to_be_checked()
    found += finance.check("suspend dialog")
    dialog.get_by_role("button", name="Save").click()  # no reason
    expect(dialog.locator("#id_reason_error")).to_have_text("This field is required.")
    found += finance.check("suspend dialog with an error")
    dialog.get_by_label("Reason").fill("Card declined")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#messages")).to_contain_text("Billing account suspended.")
    expect(row).to_contain_text("Suspended")
    expect(row.get_by_role("link", name="Reinstate")).to_be_visible()
    found += finance.check("past-due queue after suspending")

    # ... and reinstated from the account's page, which reloads with its new status.
    row.get_by_role("link", name="Late billing").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Late billing")
    status = page.locator("#account-body .facts .badge")
    expect(status).to_have_text("Suspended")
    page.locator("#account-body .page-header").get_by_role("link", name="Reinstate").click()
    expect(dialog.get_by_label("Reinstate")).to_be_checked()
    dialog.get_by_label("Reason").fill("Customer paid by phone")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#messages")).to_contain_text("Billing account reinstated.")
    expect(status).to_have_text("Active")
    expect(page.locator("#account-body .page-header").get_by_role("link", name="Suspend")).to_be_visible()
    found += finance.check("account page after reinstating")

    assert BillingAccount.objects.get(pk=account.pk).status == AccountStatus.ACTIVE
    assert [row for row in audit(account) if row[0] == "billing_account.status"] == [
        (
            "billing_account.status",
            "finance@staff.example",
            ActorKind.STAFF,
            {"status": "active", "suspension_reason": ""},
            {"status": "suspended", "suspension_reason": "staff"},
            "Card declined",
        ),
        (
            "billing_account.status",
            "finance@staff.example",
            ActorKind.STAFF,
            {"status": "suspended", "suspension_reason": "staff"},
            {"status": "active", "suspension_reason": ""},
            "Customer paid by phone",
        ),
    ]
    assert not found, "\n".join(found)


# 6. The second factor's enrolment page, where production sends staff first


def test_staff_enrol_an_authenticator_when_two_factor_sign_in_is_required(open_browser, settings):
    settings.STAFF_REQUIRE_2FA = True
    member = make_staff("support@staff.example", roles.SUPPORT)
    reader = open_browser()
    page = reader.page
    sign_in(page, member.email)
    page.goto("/staff/customers/")
    expect(page).to_have_url(re.compile(r"/staff/2fa/setup/\?next=%2Fstaff%2Fcustomers%2F$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Set up two-factor sign-in")
    qr = page.get_by_role(
        "img", name="QR code for your authenticator app. If you cannot scan it, enter the setup key shown below."
    )
    expect(qr).to_be_visible()
    assert qr.evaluate("image => image.complete && image.naturalWidth > 0")
    expect(page.get_by_role("navigation", name="Staff console")).to_have_count(0)  # no queue counts before it
    found = reader.check("two-factor set-up")
    page.get_by_label("6-digit code from the app").fill("000000" if totp_now(member) != "000000" else "111111")
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator("#id_code_error")).to_have_text(
        "That code is not right. Check that your phone's clock is correct and try again."
    )
    found += reader.check("two-factor set-up with a wrong code")
    page.wait_for_timeout(1100)  # django-otp's back-off after a wrong code: a second
    page.get_by_label("6-digit code from the app").fill(totp_now(member))
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Recovery codes")
    expect(page.locator(".recovery-codes li")).to_have_count(10)
    found += reader.check("recovery codes")

    assert not found, "\n".join(found)


def totp_now(user) -> str:
    """The code the member's authenticator app would show now."""
    from django_otp.oath import TOTP
    from django_otp.plugins.otp_totp.models import TOTPDevice

    device = TOTPDevice.objects.get(user=user)
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    return f"{totp.token():0{device.digits}d}"
