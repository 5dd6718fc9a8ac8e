"""The usage dashboard in a real browser: the zone comes from the browser when the person chose
none, and a filter change swaps the content with htmx and keeps a real URL."""

import re

from playwright.sync_api import expect

from tests.browser.test_billing_journey import sign_in
from tests.personas import the_world


def test_the_dashboard_follows_the_browsers_time_zone(browser, live_server):
    world = the_world("en")
    context = browser.new_context(base_url=live_server.url, locale="en-US", timezone_id="Asia/Kolkata")
    page = context.new_page()
    sign_in(page, world["people"]["owner"].email)  # the page after signing in sets the zone's cookie
    page.goto("/usage/")

    # Chromium names India's zone by its older alias, which zoneinfo knows as the same zone.
    expect(page.locator(".zone-note")).to_contain_text(
        re.compile(r"Times and days are in Asia/(Kolkata|Calcutta) \(UTC\+05:30\)\.")
    )
    context.close()


def test_a_filter_change_swaps_the_content_and_keeps_a_url(page):
    world = the_world("en")
    paid = world["paid"]
    sign_in(page, world["people"]["viewer"].email)
    page.goto(f"/usage/?project={paid.project_id}")
    page.get_by_label("Range").select_option("7d")
    page.get_by_role("button", name="Apply").click()

    expect(page).to_have_url(re.compile(rf"/usage/\?project={paid.project_id}&range=7d"))
    expect(page.get_by_label("Range")).to_have_value("7d")
    expect(page.get_by_role("heading", level=1)).to_have_count(1)  # the content swapped, not nested
    expect(page.get_by_role("img", name="Requests")).to_be_visible()
