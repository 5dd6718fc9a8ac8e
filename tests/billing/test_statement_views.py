"""The statement pages (R19, issue 12): the list on the billing page, a statement's page, its CSV and
PDF, the running month's estimate; only the billing account's administrators see them."""

from datetime import datetime
from decimal import Decimal as D
from io import BytesIO
from zoneinfo import ZoneInfo

import pytest
import time_machine
from pypdf import PdfReader

from billing import ledger
from billing.models import CreditKind, Statement, StatementStatus
from billing.statements import issue_statement
from tests.factories import make_account

LA = ZoneInfo("America/Los_Angeles")
OCTOBER = datetime(2026, 10, 1).date()


def line(project, sku, amount, *, quantity, events=1, **fields):
    moment = datetime(2026, 10, 10, 12, tzinfo=LA)
    return ledger.UsageLineIn(
        project_id=project.pk,
        model_id="gemini-2.5-flash",
        price_id=1,
        sku=sku,
        batch=fields.get("batch", False),
        long_prompt=False,
        quantity=D(quantity),
        events=events,
        amount=D(amount),
        first_occurred_at=moment,
        last_occurred_at=moment,
    )


@pytest.fixture
def statement(owner, project):
    """October 2026: two lines of flash, USD 12.345678 of usage, a USD 2 promotional credit."""
    account = make_account(owner, name="Main", projects=[project])
    with time_machine.travel(datetime(2026, 10, 1, tzinfo=LA), tick=False):
        ledger.grant_credit(account, kind=CreditKind.PROMOTIONAL, amount=D("2"))
    with time_machine.travel(datetime(2026, 10, 20, tzinfo=LA), tick=False):
        ledger.record_usage(
            account,
            month=OCTOBER,
            lines=[
                line(project, "input", "0.345678", quantity="1152260", events=40),
                line(project, "output", "12", quantity="4800000", events=40, batch=True),
            ],
        )
    with time_machine.travel(datetime(2026, 11, 1, 0, 5, tzinfo=LA), tick=False):
        issued, _ = issue_statement(account, OCTOBER)
    return issued


URLS = [
    "/billing/accounts/{}/statements/2026-10/",
    "/billing/accounts/{}/statements/2026-10/csv/",
    "/billing/accounts/{}/statements/2026-10/pdf/",
]


def test_statement_amounts(statement):
    assert (statement.usage_total, statement.credits_total, statement.amount_due, statement.status) == (
        D("12.35"),
        D("-2.00"),
        D("10.35"),
        StatementStatus.ISSUED,
    )
    assert ledger.balances(statement.account).amount_due == D("10.35")


@pytest.mark.parametrize("who", ["owner", "editor", "viewer", "outsider"])
def test_only_the_accounts_administrators_see_its_statements(client_for, statement, who, request):
    client = client_for(request.getfixturevalue(who))
    expected = 200 if who == "owner" else 404  # project members who do not administer the account: 404

    assert [client.get(url.format(statement.account.account_id)).status_code for url in URLS] == [expected] * 3


def test_signed_out_visitors_are_sent_to_sign_in(client, statement):
    response = client.get(URLS[0].format(statement.account.account_id))
    assert (response.status_code, response["Location"].split("?")[0]) == (302, "/accounts/login/")


def test_unknown_months_are_not_found(client_for, owner, statement):
    client = client_for(owner)
    account_id = statement.account.account_id
    assert [
        client.get(f"/billing/accounts/{account_id}/statements/{month}/").status_code
        for month in ("2026-09", "2026-13", "october", "2026-1")
    ] == [404, 404, 404, 404]


def test_the_statement_page_shows_lines_credits_and_the_amount_due(client_for, owner, statement):
    html = client_for(owner).get(URLS[0].format(statement.account.account_id)).content.decode()

    assert "Statement for October 2026" in html
    assert "<dt>Usage total</dt><dd>USD 12.35</dd>" in html
    assert "<dt>Credits applied</dt><dd>USD -2.00</dd>" in html
    assert "<dt>Amount due</dt><dd><strong>USD 10.35</strong></dd>" in html
    assert '<td colspan="5">Promotional credit</td><td class="num">USD -2.00</td>' in html
    assert "Output · batch" in html


def test_the_csv_is_the_statement_line_by_line(client_for, owner, project, statement):
    response = client_for(owner).get(URLS[1].format(statement.account.account_id))

    assert response["Content-Disposition"] == (
        f'attachment; filename="statement-{statement.account.account_id}-2026-10.csv"'
    )
    pid, name = project.project_id, project.name
    assert response.content.decode().splitlines() == [
        "Line,Kind,Usage month,Project ID,Project,Model,SKU,Price version,Batch,Long prompt,Quantity,Events,"
        "Exact amount (USD),Amount (USD)",
        f"1,Usage,2026-10,{pid},{name},gemini-2.5-flash,Input,1,,,1152260,40,0.345678000,0.35",
        f"2,Usage,2026-10,{pid},{name},gemini-2.5-flash,Output,1,yes,,4800000,40,12.000000000,12.00",
        "3,Promotional credit,,,,,,,,,,,-2.000000000,-2.00",
        "",
        "Usage total,,,,,,,,,,,,,12.35",
        "Credits applied,,,,,,,,,,,,,-2.00",
        "Amount due,,,,,,,,,,,,,10.35",
    ]


def test_the_pdf_opens_and_says_what_the_page_says(client_for, owner, statement):
    response = client_for(owner).get(URLS[2].format(statement.account.account_id))

    assert response["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-")
    text = PdfReader(BytesIO(response.content)).pages[0].extract_text()
    for expected in ("Statement for October 2026", "Main", "USD 12.35", "USD -2.00", "USD 10.35", "Promotional credit"):
        assert expected in text


def test_the_pdf_is_in_the_readers_language_with_a_built_in_japanese_font(client_for, owner, statement):
    owner.language = "ja"
    owner.save()
    response = client_for(owner).get(URLS[2].format(statement.account.account_id))

    assert response.content.startswith(b"%PDF-")
    assert b"/HeiseiKakuGo-W5" in response.content  # a CID font the viewer supplies: no font file
    reader = PdfReader(BytesIO(response.content))
    assert reader.metadata.title == "2026年10月 の明細書"


def test_the_japanese_page_names_the_month_in_japanese(client_for, owner, statement):
    owner.language = "ja"
    owner.save()
    html = client_for(owner).get(URLS[0].format(statement.account.account_id)).content.decode()

    assert '<html lang="ja"' in html
    assert "2026年10月" in html
    assert "USD 10.35" in html


def test_the_billing_page_lists_statements_and_the_running_month(client_for, owner, statement):
    with time_machine.travel(datetime(2026, 11, 15, 12, tzinfo=LA), tick=False):
        html = client_for(owner).get("/billing/").content.decode()
    account_id = statement.account.account_id

    assert f'<a href="/billing/accounts/{account_id}/statements/2026-11/">November 2026</a>' in html
    assert f'<a href="/billing/accounts/{account_id}/statements/2026-10/">October 2026</a></td><td>Issued</td>' in html


def test_the_running_month_is_an_estimate_live_from_the_ledger(client_for, owner, project, statement):
    account = statement.account
    with time_machine.travel(datetime(2026, 11, 15, 12, tzinfo=LA), tick=False):
        ledger.record_usage(
            account,
            month=datetime(2026, 11, 1).date(),
            lines=[line(project, "input", "3.004", quantity="10013333")],
        )
        html = client_for(owner).get(f"/billing/accounts/{account.account_id}/statements/2026-11/").content.decode()

    assert "November 2026 so far (estimate)" in html
    assert "<dt>Usage total</dt><dd>USD 3.00</dd>" in html
    assert "Download PDF" not in html
    assert Statement.objects.count() == 1  # nothing issued by looking


def test_the_statement_page_query_count_does_not_grow_with_lines(
    client_for, owner, project, statement, django_assert_max_num_queries
):
    client = client_for(owner)
    url = URLS[0].format(statement.account.account_id)
    with django_assert_max_num_queries(12) as few:
        client.get(url)
    other = make_account(owner, name="Other", projects=[])
    with time_machine.travel(datetime(2026, 10, 20, tzinfo=LA), tick=False):
        ledger.record_usage(
            other,
            month=OCTOBER,
            lines=[line(project, sku, "1", quantity="1") for sku in ("input", "output", "cached_input")],
        )
    with time_machine.travel(datetime(2026, 11, 1, 0, 5, tzinfo=LA), tick=False):
        issue_statement(other, OCTOBER)
    with django_assert_max_num_queries(len(few.captured_queries)):
        client.get(f"/billing/accounts/{other.account_id}/statements/2026-10/")
