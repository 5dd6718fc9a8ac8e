"""Issue 12 in a real browser: a billing administrator reads a statement from the billing page, pays a past-due
statement with another card in the dialog (a wrong number first), and a project's Owner sets its monthly spend cap on
the Limits tab (an invalid amount first); every state passes axe and the pages reflow at 320 px."""

from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import time_machine
from playwright.sync_api import expect

from billing import ledger
from billing.dunning import retry_due
from billing.models import AccountStatus, BillingAccount, Statement, StatementStatus
from billing.statements import charge_due, issue_statement
from studio.models import Project
from tests.browser.accessibility import axe_violations, horizontal_overflow
from tests.browser.test_billing_journey import sign_in
from tests.factories import make_account, make_billed_project, make_key, make_project, make_user
from tests.usage.test_dunning import card_with, statement_line

LA = ZoneInfo("America/Los_Angeles")
OCTOBER = datetime(2026, 10, 1).date()
CHARGED = datetime(2026, 11, 2, 0, 35, tzinfo=LA)  # the charge job on the 2nd
DAY = timedelta(days=1)


def october_statement(email: str, *, declined: bool) -> Statement:
    """October 2026's statement (USD 15.00 of Checkout's usage), charged on the 2nd: paid, or (`declined`) its
    card refused then and at every retry, so that the account is suspended for it."""
    owner = make_user(email)
    project = make_project(owner, name="Checkout")
    with time_machine.travel(datetime(2026, 9, 30, tzinfo=LA), tick=False):
        account = make_account(owner, name="Team billing", projects=[project])
    with time_machine.travel(datetime(2026, 10, 20, tzinfo=LA), tick=False):
        ledger.record_usage(account, month=OCTOBER, lines=[statement_line(project, "15")])
    with time_machine.travel(datetime(2026, 11, 1, 0, 5, tzinfo=LA), tick=False):
        statement, _ = issue_statement(account, OCTOBER)
    if declined:
        card_with(account, "card_declined")
    with time_machine.travel(CHARGED, tick=False):
        charge_due()
    for days in (1, 3, 7) if declined else ():
        with time_machine.travel(CHARGED + days * DAY, tick=False):
            retry_due()
    statement.refresh_from_db()
    return statement


def check_page(page, state: str) -> list[str]:
    """axe's violations and the 320 px reflow of the page as it is now, named after `state`."""
    found = [f"{state}: {v}" for v in axe_violations(page)]
    page.set_viewport_size({"width": 320, "height": 640})
    if (overflow := horizontal_overflow(page)) > 0:
        found.append(f"{state}: {overflow}px wider than a 320px viewport")
    page.set_viewport_size({"width": 1280, "height": 800})
    return found


def test_a_billing_administrator_reads_a_statement_from_the_billing_page(page):
    statement = october_statement("reader@example.com", declined=False)
    assert statement.status == StatementStatus.PAID
    account_id = statement.account.account_id
    sign_in(page, "reader@example.com")
    page.goto("/billing/")

    october = page.locator("table tr", has=page.get_by_role("link", name="October 2026", exact=True))
    expect(october).to_contain_text("Paid")
    expect(october).to_contain_text("USD 15.00")
    found = check_page(page, "billing page with a statement")

    october.get_by_role("link", name="October 2026").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Statement for October 2026")
    expect(page).to_have_url(f"{page.url.split('/billing/')[0]}/billing/accounts/{account_id}/statements/2026-10/")
    lines = page.locator("section", has=page.get_by_role("heading", name="Lines"))
    usage = lines.locator("tbody tr").first
    expect(usage).to_contain_text("Checkout")
    expect(usage).to_contain_text("gemini-2.5-flash")
    expect(usage).to_contain_text("USD 15.00")
    expect(lines.get_by_role("row", name="Usage total")).to_contain_text("USD 15.00")
    expect(lines.get_by_role("row", name="Amount due")).to_contain_text("USD 15.00")
    expect(page.locator("main")).not_to_contain_text("Past due")
    base = f"/billing/accounts/{account_id}/statements/2026-10"
    expect(page.get_by_role("link", name="Download CSV")).to_have_attribute("href", f"{base}/csv/")
    expect(page.get_by_role("link", name="Download PDF")).to_have_attribute("href", f"{base}/pdf/")
    for suffix, content_type in (("csv", "text/csv; charset=utf-8"), ("pdf", "application/pdf")):
        download = page.request.get(f"{base}/{suffix}/")  # the signed-in browser's own cookies
        assert (download.status, download.headers["content-type"]) == (200, content_type)
    found += check_page(page, "statement page")

    assert not found, "\n".join(found)


def test_a_past_due_statement_is_paid_with_another_card_in_the_dialog(page):
    statement = october_statement("latepayer@example.com", declined=True)
    assert (statement.status, statement.account.status) == (StatementStatus.PAYMENT_FAILED, AccountStatus.SUSPENDED)
    sign_in(page, "latepayer@example.com")
    page.goto(f"/billing/accounts/{statement.account.account_id}/statements/2026-10/")

    past_due = page.locator("section.past-due")
    expect(past_due.get_by_role("heading", name="Past due")).to_be_visible()
    expect(past_due).to_contain_text("USD 15.00 is past due: we could not charge it.")
    expect(past_due).to_contain_text("The billing account is suspended for this unpaid statement")
    found = check_page(page, "past-due statement page")

    past_due.get_by_role("link", name="Pay with another card").click()
    dialog = page.locator("#modal")
    expect(dialog.get_by_role("heading", name="Pay the October 2026 statement")).to_be_visible()
    assert dialog.evaluate("element => [element.tagName, element.open]") == ["DIALOG", True]
    expect(dialog.get_by_label("A new card")).to_be_checked()
    dialog.get_by_label("Card number").fill("4242 4242 4242 4241")
    dialog.get_by_label("Expiry month").select_option("12")
    dialog.get_by_label("Expiry year").select_option("2030")
    dialog.get_by_label("Security code (CVC)").fill("123")
    dialog.get_by_role("button", name="Pay USD 15.00").click()
    expect(dialog.locator("#id_number_error")).to_have_text("This card number is not valid. Check it and try again.")
    expect(dialog.get_by_label("Card number")).to_have_value("")  # never written back
    expect(dialog.get_by_label("Expiry year")).to_have_value("2030")
    found += [f"pay dialog with errors: {v}" for v in axe_violations(page)]

    dialog.get_by_label("Card number").fill("4242 4242 4242 4242")
    dialog.get_by_label("Security code (CVC)").fill("123")
    dialog.get_by_role("button", name="Pay USD 15.00").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#messages")).to_contain_text(
        "Payment of USD 15.00 received: the October 2026 statement is paid."
    )
    expect(past_due).to_have_count(0)  # the statement reloaded
    body = page.locator("#statement-body")
    expect(body.locator(".badge.paid")).to_have_text("Paid")
    expect(body.get_by_role("region", name="Payments")).to_contain_text("USD 15.00 · Visa •••• 4242")
    expect(body.get_by_role("region", name="Payments")).to_contain_text("from the statement page")
    found += check_page(page, "paid statement page")

    statement.refresh_from_db()
    assert statement.status == StatementStatus.PAID
    assert BillingAccount.objects.get(pk=statement.account_id).status == AccountStatus.ACTIVE
    assert not found, "\n".join(found)


def test_the_owner_sets_the_monthly_spend_cap_on_the_limits_tab(page):
    owner = make_user("capper@example.com")
    project = make_billed_project(owner, name="Capped")
    make_key(project)
    sign_in(page, owner.email)
    page.goto(f"/usage/limits/?project={project.project_id}")

    card = page.locator("#spend-cap")
    expect(card.get_by_role("heading", name="Monthly spend cap")).to_be_visible()
    expect(card).to_contain_text("No cap: paid requests run whatever this month's spend (USD 0.00 so far")
    found = check_page(page, "limits tab without a cap")

    card.get_by_role("link", name="Set a spend cap").click()
    dialog = page.locator("#modal")
    expect(dialog.get_by_role("heading", name="Set a monthly spend cap")).to_be_visible()
    for amount, error in (
        ("0", "Ensure this value is greater than or equal to 0.01."),
        ("12.345", "Ensure that there are no more than 2 decimal places."),
    ):
        dialog.get_by_label("Monthly spend cap (USD)").fill(amount)
        dialog.get_by_role("button", name="Save cap").click()
        expect(dialog.locator("#id_amount_error")).to_have_text(error)
        expect(dialog.get_by_label("Monthly spend cap (USD)")).to_have_value(amount)
    found += [f"spend cap dialog with errors: {v}" for v in axe_violations(page)]

    dialog.get_by_label("Monthly spend cap (USD)").fill("25")
    dialog.get_by_role("button", name="Save cap").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#messages")).to_contain_text("Spend cap saved.")
    row = card.get_by_role("row", name="Monthly spend cap (USD)")
    expect(row).to_contain_text("ProjectMonthlySpendCap")
    expect(row).to_contain_text("USD 25.00")
    expect(card.get_by_role("link", name="Change spend cap")).to_be_visible()
    found += check_page(page, "limits tab with a cap")

    assert Project.objects.get(pk=project.pk).monthly_spend_cap == Decimal("25.00")
    assert not found, "\n".join(found)
