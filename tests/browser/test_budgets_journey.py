"""X3 in a real browser: a budget is created in the modal (with a field error first), shown on the
billing page with its spend and thresholds, and deleted; every state passes axe and reflows at 320 px."""

from datetime import timedelta
from decimal import Decimal

from django.utils import timezone
from playwright.sync_api import expect

from billing import ledger
from billing.budgets import PACIFIC
from billing.models import Budget
from tests.browser.accessibility import axe_violations, horizontal_overflow
from tests.browser.test_billing_journey import sign_in
from tests.factories import make_account, make_project, make_user


def test_create_see_and_delete_a_budget(page):
    owner = make_user("budgeter@example.com")
    project = make_project(owner, name="Checkout")
    account = make_account(owner, name="Main", projects=[project])
    used = timezone.now() - timedelta(minutes=5)
    line = ledger.UsageLineIn(
        project_id=project.pk,
        model_id="gemini-2.5-flash",
        price_id=1,
        sku="output",
        batch=False,
        long_prompt=False,
        quantity=Decimal("1000"),
        events=1,
        amount=Decimal("60"),
        first_occurred_at=used,
        last_occurred_at=used,
    )
    ledger.record_usage(account, month=used.astimezone(PACIFIC).date().replace(day=1), lines=[line], at=used)
    sign_in(page, owner.email)
    page.goto("/billing/")
    expect(page.locator("main")).to_contain_text("No budgets.")
    found = []

    page.get_by_role("link", name="Create budget").click()
    dialog = page.locator("#modal")
    expect(dialog.get_by_role("heading", name="Create budget")).to_be_visible()
    expect(dialog.get_by_label("Alert at these percentages of actual spend")).to_have_value("50, 90, 100")
    dialog.get_by_label("Alert at these percentages of actual spend").fill("50, lots")
    dialog.get_by_role("button", name="Create budget").click()
    expect(dialog).to_contain_text("This field is required.")
    expect(dialog).to_contain_text("Enter whole percentages from 1 to 1000, separated by commas.")
    expect(dialog.get_by_label("Alert at these percentages of actual spend")).to_have_value("50, lots")
    found += [f"dialog with errors: {v}" for v in axe_violations(page)]

    dialog.get_by_label("Monthly amount (USD)").fill("100")
    dialog.get_by_label("Alert at these percentages of actual spend").fill("50, 90")
    dialog.get_by_role("button", name="Create budget").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#messages")).to_contain_text("Budget created.")
    row = page.locator("table.budgets tbody tr")
    expect(row).to_contain_text("The whole billing account")
    expect(row).to_contain_text("USD 60.00")
    expect(row).to_contain_text("60% of the budget")
    expect(row).to_contain_text("50% of actual spend · reached")
    expect(row).to_contain_text("90% of actual spend · not reached")
    found += [f"billing page with a budget: {v}" for v in axe_violations(page)]
    page.set_viewport_size({"width": 320, "height": 640})
    if (overflow := horizontal_overflow(page)) > 0:
        found.append(f"billing page with a budget: {overflow}px wider than a 320px viewport")
    page.set_viewport_size({"width": 1280, "height": 800})

    row.get_by_role("link", name="Delete").click()
    expect(dialog.get_by_role("heading", name="Delete budget")).to_be_visible()
    dialog.get_by_role("button", name="Delete budget").click()
    expect(page.locator("#messages")).to_contain_text("Budget deleted.")
    expect(page.locator("main")).to_contain_text("No budgets.")

    assert not Budget.objects.exists()
    assert not found, "\n".join(found)
