"""Budgets (X3, SPEC §9): spend and forecast in Pacific months, alerts once per threshold per month,
the budget dialogs on the billing page and who may use them."""

import re
from datetime import UTC, date, datetime
from decimal import Decimal as D
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing import ledger
from billing.budget_forms import BudgetForm
from billing.budgets import check_budgets, month_at, statuses
from billing.models import BillingAdministrator, Budget, BudgetAlert
from studio.models import AuditEvent, OutboundEmail, Role
from tests.factories import add_member, deliver_mail, make_account, make_project, make_user

LA = ZoneInfo("America/Los_Angeles")
DEFAULTS = [[50, "actual"], [90, "actual"], [100, "actual"], [100, "forecast"]]


def pacific(*args) -> datetime:
    return datetime(*args, tzinfo=LA)


def charge(account, project, amount: str, occurred_at: datetime):
    """A usage charge of one line, as the charge run writes it: in the Pacific month of its usage."""
    month = occurred_at.astimezone(LA).date().replace(day=1)
    line = ledger.UsageLineIn(
        project_id=project.pk,
        model_id="gemini-2.5-flash",
        price_id=1,
        sku="output",
        batch=False,
        long_prompt=False,
        quantity=D("1000"),
        events=1,
        amount=D(amount),
        first_occurred_at=occurred_at,
        last_occurred_at=occurred_at,
    )
    ledger.record_usage(account, month=month, lines=[line], at=occurred_at)


def budget_on(account, amount="100", *, project=None, thresholds=None):
    return Budget.objects.create(
        account=account,
        project=project,
        amount=D(amount),
        thresholds=thresholds or DEFAULTS,
        created_by=account.created_by,
    )


def status_of(budget, now):
    return statuses([budget], now=now)[budget.pk]


def crossed(status) -> list[tuple[int, str]]:
    return [(s.threshold.percent, s.threshold.basis) for s in status.thresholds if s.crossed]


@pytest.fixture
def account(owner, project):
    return make_account(owner, name="Main", projects=[project])


# The month, the 7 days and the days left, in Pacific time


def test_month_mid_month_counts_wall_clock_days():
    month = month_at(pacific(2026, 6, 15, 12, 0))

    assert month.start == date(2026, 6, 1)
    assert month.window_start == datetime(2026, 6, 8, 19, 0, tzinfo=UTC)
    assert month.days_left == D("15.5")


def test_month_boundary_is_midnight_in_los_angeles_not_utc():
    # 23:30 on 30 June in Los Angeles is already 1 July in UTC.
    assert month_at(pacific(2026, 6, 30, 23, 30)).start == date(2026, 6, 1)
    assert month_at(pacific(2026, 6, 30, 23, 30)).micros_left == 30 * 60 * 10**6
    assert month_at(pacific(2026, 7, 1, 0, 0)).start == date(2026, 7, 1)
    assert month_at(pacific(2026, 7, 1, 0, 0)).days_left == 31


def test_days_left_are_calendar_days_when_the_clocks_change_before_the_months_end():
    # DST starts on 8 March 2026: the month's real time left is an hour short of 30.5 days.
    assert month_at(pacific(2026, 3, 1, 12, 0)).days_left == D("30.5")
    # DST ends at 02:00 on 1 November 2026: from midnight, 30 calendar days and 30 days + 1 hour of real time.
    assert month_at(pacific(2026, 11, 1, 0, 0)).days_left == 30


def test_the_7_days_start_at_the_same_wall_clock_time_across_a_dst_change():
    # Fall back (1 Nov 2026): 169 hours. Spring forward (8 Mar 2026): 167 hours, and 02:30 a week
    # before does not exist on the day the clocks went forward: read as standard time (10:30 UTC).
    assert month_at(pacific(2026, 11, 5, 12, 0)).window_start == datetime(2026, 10, 29, 19, 0, tzinfo=UTC)
    assert month_at(pacific(2026, 3, 15, 2, 30)).window_start == datetime(2026, 3, 8, 10, 30, tzinfo=UTC)


# Spend and forecast


def test_forecast_is_spend_plus_the_7_day_daily_average_times_the_days_left(account, project):
    charge(account, project, "40", pacific(2026, 5, 31, 23, 0))  # May: neither
    charge(account, project, "40", pacific(2026, 6, 1, 8, 0))  # spend only
    charge(account, project, "5", pacific(2026, 6, 8, 11, 59))  # spend only: a minute before the 7 days
    charge(account, project, "30", pacific(2026, 6, 8, 12, 0))  # both
    charge(account, project, "40", pacific(2026, 6, 15, 11, 0))  # both

    status = status_of(budget_on(account, "500"), pacific(2026, 6, 15, 12, 0))

    assert (status.month, status.spend, status.forecast) == (date(2026, 6, 1), D("115"), D("270.000000"))


def test_forecast_on_the_first_day_averages_the_end_of_last_month(account, project):
    charge(account, project, "100", pacific(2026, 6, 24, 5, 59))  # before the 7 days
    charge(account, project, "7", pacific(2026, 6, 24, 6, 0))
    charge(account, project, "14", pacific(2026, 6, 30, 23, 30))  # 1 July 06:30 UTC, still June in Los Angeles
    charge(account, project, "3", pacific(2026, 7, 1, 0, 30))

    status = status_of(budget_on(account, "500"), pacific(2026, 7, 1, 6, 0))

    # 3 + 24 / 7 × 30.75 = 108.428571 428…, rounded half-up to the micro-dollar once.
    assert (status.month, status.spend, status.forecast) == (date(2026, 7, 1), D("3"), D("108.428571"))


def test_at_midnight_on_the_first_the_month_is_all_forecast(account, project):
    charge(account, project, "14", pacific(2026, 7, 31, 23, 59))

    status = status_of(budget_on(account, "500"), pacific(2026, 8, 1, 0, 0))

    assert (status.month, status.spend, status.forecast) == (date(2026, 8, 1), D("0"), D("62.000000"))


def test_forecast_across_the_end_of_daylight_saving_time(account, project):
    charge(account, project, "50", datetime(2026, 10, 29, 18, 59, tzinfo=UTC))  # 11:59 PDT: before the 7 days
    charge(account, project, "21", datetime(2026, 10, 29, 19, 0, tzinfo=UTC))  # 12:00 PDT, 7 days before 12:00 PST
    charge(account, project, "7", pacific(2026, 11, 2, 9, 0))

    status = status_of(budget_on(account, "500"), pacific(2026, 11, 5, 12, 0))

    # 7 + 28 / 7 × 25.5
    assert (status.spend, status.forecast) == (D("7"), D("109.000000"))


def test_a_project_budget_counts_only_that_projects_usage_on_that_account(owner, project, account):
    other = make_project(owner, name="Other")
    elsewhere = make_account(owner, name="Elsewhere", projects=[make_project(owner)])
    charge(account, project, "10", pacific(2026, 6, 10, 9, 0))
    charge(account, other, "20", pacific(2026, 6, 10, 9, 0))
    charge(elsewhere, project, "40", pacific(2026, 6, 10, 9, 0))  # the project paid by another account then
    whole, own = budget_on(account), budget_on(account, project=project)

    found = statuses([whole, own], now=pacific(2026, 6, 15, 12, 0))

    assert (found[whole.pk].spend, found[own.pk].spend) == (D("30"), D("10"))
    assert (found[whole.pk].forecast, found[own.pk].forecast) == (D("96.428571"), D("32.142857"))


def test_a_threshold_is_crossed_when_spend_reaches_it(account, project):
    charge(account, project, "45", pacific(2026, 6, 1, 9, 0))
    budget = budget_on(account)
    now = pacific(2026, 6, 15, 12, 0)
    assert crossed(status_of(budget, now)) == []

    charge(account, project, "5", pacific(2026, 6, 2, 9, 0))

    status = status_of(budget, now)
    assert crossed(status) == [(50, "actual")]
    assert (status.percent_spent, status.meter_percent) == (50, 50)


def test_a_forecast_threshold_is_crossed_before_spend_reaches_it(account, project):
    charge(account, project, "35", pacific(2026, 6, 14, 9, 0))  # 5 a day for the 15.5 days left

    status = status_of(budget_on(account), pacific(2026, 6, 15, 12, 0))

    assert (status.spend, status.forecast) == (D("35"), D("112.500000"))
    assert crossed(status) == [(100, "forecast")]


# The job: once per threshold per month


def test_check_budgets_emails_each_threshold_once_a_month(owner, account, project):
    colleague = make_user("kaori@example.com", language="ja")
    BillingAdministrator.objects.create(account=account, user=colleague)
    budget_on(account)
    charge(account, project, "95", pacific(2026, 6, 1, 9, 0))
    june = pacific(2026, 6, 15, 12, 0)

    first = check_budgets(now=june)
    again = check_budgets(now=june)

    assert [(a.month, a.percent, a.basis, a.spend, a.forecast) for a in first] == [
        (date(2026, 6, 1), 50, "actual", D("95"), D("95")),
        (date(2026, 6, 1), 90, "actual", D("95"), D("95")),
    ]
    assert again == []
    mails = deliver_mail()
    assert [m.to for m in mails] == [["owner@example.com"], ["kaori@example.com"]]  # each in their language
    assert mails[0].subject == "Budget alert: Main has reached 90% of its monthly budget"
    assert mails[0].body.startswith(
        f"The monthly budget of USD 100.00 for billing account Main ({account.account_id}) crossed these alert "
        "thresholds in June 2026:\n\n- 50% of actual spend\n- 90% of actual spend\n\n"
        "Spend so far this month: USD 95.00. Forecast for the whole month: USD 95.00.\n"
    )

    charge(account, project, "10", pacific(2026, 6, 15, 11, 0))
    later = check_budgets(now=june)

    assert [(a.percent, a.basis) for a in later] == [(100, "actual"), (100, "forecast")]
    assert [m.to for m in deliver_mail()[2:]] == [["owner@example.com"], ["kaori@example.com"]]
    assert deliver_mail()[2].subject == "Budget alert: Main has reached 100% of its monthly budget"
    assert check_budgets(now=pacific(2026, 6, 30, 23, 59)) == []

    # A new month: the thresholds are crossed again and e-mailed again.
    charge(account, project, "60", pacific(2026, 7, 2, 9, 0))
    july = check_budgets(now=pacific(2026, 7, 3, 12, 0))

    assert [(a.month, a.percent, a.basis) for a in july] == [
        (date(2026, 7, 1), 50, "actual"),
        (date(2026, 7, 1), 100, "forecast"),
    ]
    assert BudgetAlert.objects.count() == 6
    assert len(deliver_mail()) == 6


def test_a_forecast_alert_names_the_forecast_and_the_project(owner, account, project):
    budget_on(account, project=project, thresholds=[[100, "forecast"]])
    charge(account, project, "70", pacific(2026, 6, 14, 9, 0))

    check_budgets(now=pacific(2026, 6, 15, 12, 0))

    (mail,) = deliver_mail()
    assert mail.subject == "Budget alert: Team project is forecast to reach 100% of its monthly budget"
    assert mail.body.startswith(
        f"The monthly budget of USD 100.00 for the project Team project ({project.project_id}) on billing account "
        f"Main ({account.account_id}) crossed these alert thresholds in June 2026:\n\n- 100% of forecast spend\n\n"
        "Spend so far this month: USD 70.00. Forecast for the whole month: USD 225.00.\n"
    )


def test_check_budgets_command_logs_each_alert_and_a_summary(account, project):
    budget_on(account)
    charge(account, project, "95", pacific(2026, 6, 1, 9, 0))
    out = StringIO()

    with time_machine.travel(pacific(2026, 6, 15, 12, 0), tick=False):
        call_command("check_budgets", stdout=out)
        call_command("check_budgets", stdout=out)

    assert out.getvalue().splitlines() == [
        f"{account.account_id} account 2026-06: 50% actual, 90% actual "
        "(spend USD 95.000000, forecast USD 95.000000, budget USD 100.00)",
        "Sent 2 budget alert(s).",
        "Sent 0 budget alert(s).",
    ]
    assert OutboundEmail.objects.count() == 1


def test_the_job_runs_every_ten_minutes():
    from billing.jobs import check_budgets as job

    due = job.task_class().validate_datetime
    assert [due(datetime(2026, 6, 15, 12, minute)) for minute in (0, 5, 10, 50)] == [
        True,
        False,
        True,
        True,
    ]


# The dialogs


def budget_url(account, budget=None, action=""):
    base = f"/billing/accounts/{account.account_id}/budgets/"
    return f"{base}new/" if budget is None else f"{base}{budget.pk}/{action}"


def errors(response) -> dict[str, list[str]]:
    found = re.findall(r'<p class="field-error" id="id_(\w+)_error">([^<]*)</p>', response.content.decode())
    result = {}
    for field, message in found:
        result.setdefault(field, []).append(message)
    return result


def test_create_budget_offers_the_defaults_and_the_accounts_projects(client_for, owner, account, project):
    make_account(owner, name="Other", projects=[make_project(owner, name="Not here")])

    html = client_for(owner).get(budget_url(account)).content.decode()

    assert re.findall(r'<option value="([^"]*)"[^>]*>([^<]*)</option>', html) == [
        ("", "The whole billing account"),
        (project.project_id, f"Team project ({project.project_id})"),
    ]
    assert 'name="actual" value="50, 90, 100"' in html
    assert 'name="forecast" value="100"' in html


def test_create_an_account_budget_without_js(client_for, owner, account):
    response = client_for(owner).post(
        budget_url(account), {"project": "", "amount": "150", "actual": "90, 50%", "forecast": "100"}
    )

    assert response["Location"] == "/billing/"
    budget = Budget.objects.get()
    assert (budget.account, budget.project, budget.amount) == (account, None, D("150.00"))
    assert budget.thresholds == [[50, "actual"], [90, "actual"], [100, "forecast"]]
    event = AuditEvent.objects.get(action="budget.create")
    assert (event.actor, event.object_id, event.after) == (
        owner,
        str(budget.pk),
        {"project": None, "amount": "150.00", "thresholds": [[50, "actual"], [90, "actual"], [100, "forecast"]]},
    )


def test_create_a_project_budget_in_the_modal(client_for, owner, account, project):
    response = client_for(owner).post(
        budget_url(account),
        {"project": project.project_id, "amount": "20.5", "actual": "", "forecast": "80, 100"},
        headers={"HX-Request": "true"},
    )

    assert response.status_code == 200
    assert response["HX-Trigger"] == '{"billing-changed": {}, "close-modal": {}}'
    assert "Budget created." in response.content.decode()
    budget = Budget.objects.get()
    assert (budget.project, budget.amount, budget.thresholds) == (
        project,
        D("20.50"),
        [[80, "forecast"], [100, "forecast"]],
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"amount": ""}, {"amount": ["This field is required."]}),
        ({"amount": "0"}, {"amount": ["Ensure this value is greater than or equal to 0.01."]}),
        ({"amount": "-5"}, {"amount": ["Ensure this value is greater than or equal to 0.01."]}),
        ({"amount": "12.345"}, {"amount": ["Ensure that there are no more than 2 decimal places."]}),
        ({"amount": "ten"}, {"amount": ["Enter a number."]}),
        ({"actual": "50, abc"}, {"actual": ["Enter whole percentages from 1 to 1000, separated by commas."]}),
        ({"actual": "0"}, {"actual": ["Enter whole percentages from 1 to 1000, separated by commas."]}),
        ({"forecast": "1001"}, {"forecast": ["Enter whole percentages from 1 to 1000, separated by commas."]}),
        ({"forecast": "12.5"}, {"forecast": ["Enter whole percentages from 1 to 1000, separated by commas."]}),
        ({"actual": ",".join(str(p) for p in range(10, 120, 10))}, {"actual": ["Enter at most 10 percentages."]}),
        ({"actual": "", "forecast": " "}, {"actual": ["Choose at least one alert threshold."]}),
        (
            {"project": "gen-lang-client-9999999999"},
            {"project": ["Select a valid choice. That choice is not one of the available choices."]},
        ),
    ],
)
def test_budget_form_errors_are_shown_by_field_and_keep_what_was_typed(client_for, owner, account, data, expected):
    data = {"project": "", "amount": "100", "actual": "50, 90, 100", "forecast": "100", **data}

    response = client_for(owner).post(budget_url(account), data, headers={"HX-Request": "true"})

    assert response.status_code == 422
    assert errors(response) == expected
    html = response.content.decode()
    assert f'name="actual" value="{data["actual"].strip()}"' in html or not data["actual"].strip()
    assert not Budget.objects.exists()


def test_percentages_accept_japanese_separators_and_full_width_digits(account):
    form = BudgetForm(
        {"project": "", "amount": "100", "actual": "９０％、５０, 50", "forecast": "１００"}, account=account
    )

    assert form.is_valid(), form.errors
    assert form.thresholds == [[50, "actual"], [90, "actual"], [100, "forecast"]]


def test_one_budget_per_scope(client_for, owner, account, project):
    budget_on(account)
    budget_on(account, project=project)
    client = client_for(owner)

    whole = client.post(budget_url(account), {"project": "", "amount": "5", "actual": "50"})
    own = client.post(budget_url(account), {"project": project.project_id, "amount": "5", "actual": "50"})

    assert errors(whole) == {"project": ["This billing account already has a budget for the whole account."]}
    assert errors(own) == {"project": ["This billing account already has a budget for Team project."]}
    assert Budget.objects.count() == 2


def test_change_a_budget(client_for, owner, account, project):
    budget = budget_on(account)
    client = client_for(owner)
    html = client.get(budget_url(account, budget)).content.decode()
    assert 'name="amount" value="100.00"' in html and 'name="actual" value="50, 90, 100"' in html

    response = client.post(
        budget_url(account, budget), {"project": project.project_id, "amount": "250", "actual": "75", "forecast": ""}
    )

    assert response["Location"] == "/billing/"
    budget.refresh_from_db()
    assert (budget.project, budget.amount, budget.thresholds) == (project, D("250.00"), [[75, "actual"]])
    event = AuditEvent.objects.get(action="budget.update")
    assert (event.before["amount"], event.after["amount"], event.after["project"]) == (
        "100.00",
        "250.00",
        project.project_id,
    )


def test_delete_a_budget_after_confirming(client_for, owner, account):
    budget = budget_on(account, "80")
    client = client_for(owner)

    html = client.get(budget_url(account, budget, "delete/")).content.decode()
    assert "Delete the monthly budget of USD 80.00 for Main? Its alerts stop; usage is not affected." in html
    response = client.post(budget_url(account, budget, "delete/"))

    assert response["Location"] == "/billing/"
    assert not Budget.objects.exists()
    assert AuditEvent.objects.get(action="budget.delete").before["amount"] == "80.00"


# Who may: the account's billing administrators only


def test_budgets_of_someone_elses_account_are_404(client_for, owner, outsider, editor, account, project):
    budget = budget_on(account)
    theirs = make_account(outsider, name="Theirs")
    theirs_budget = budget_on(theirs)
    data = {"project": "", "amount": "1", "actual": "50"}
    # The outsider, and the project's Editor who is no administrator of the account that pays for it.
    for user in (outsider, editor):
        client = client_for(user)
        assert client.get(budget_url(account)).status_code == 404
        assert client.post(budget_url(account), data).status_code == 404
        assert client.get(budget_url(account, budget)).status_code == 404
        assert client.post(budget_url(account, budget), data).status_code == 404
        assert client.post(budget_url(account, budget, "delete/")).status_code == 404
    # An administrator of one account cannot reach another account's budget through their own.
    client = client_for(owner)
    assert client.post(budget_url(account, theirs_budget), data).status_code == 404
    assert client.post(budget_url(account, theirs_budget, "delete/")).status_code == 404

    assert [(b.account, b.amount) for b in Budget.objects.order_by("pk")] == [(account, D("100")), (theirs, D("100"))]
    assert "budget" not in client_for(editor).get("/billing/").content.decode().lower()


def test_an_owner_who_administers_the_account_may_budget_a_project_they_only_view(client_for, owner, account):
    viewed = make_project(make_user(), name="Viewed")
    add_member(viewed, owner, Role.VIEWER)
    from billing.models import ProjectBilling

    ProjectBilling.objects.create(project=viewed, account=account, linked_by=account.created_by)

    response = client_for(owner).post(
        budget_url(account), {"project": viewed.project_id, "amount": "10", "actual": "50"}
    )

    assert response["Location"] == "/billing/"
    assert Budget.objects.get().project == viewed


# The billing page


def test_billing_page_shows_each_budget_with_spend_forecast_and_thresholds(client_for, owner, account, project):
    budget = budget_on(account)
    budget_on(account, "1000", project=project, thresholds=[[50, "actual"]])
    charge(account, project, "95", pacific(2026, 6, 1, 9, 0))
    check_budgets(now=pacific(2026, 6, 10, 9, 0))

    with time_machine.travel(pacific(2026, 6, 15, 12, 0), tick=False):
        html = client_for(owner).get("/billing/").content.decode()

    table = html[html.index('<table class="table budgets"') : html.index("</table>", html.index("table budgets"))]
    rows = re.findall(r"<tr>\s*<td>(.*?)</td>\s*<td class=\"num\">(USD [0-9.,]+)</td>", table, re.S)
    assert [(re.sub(r"<[^>]+>", " ", scope).split(), amount) for scope, amount in rows] == [
        (["The", "whole", "billing", "account"], "USD 100.00"),
        (["Team", "project", project.project_id], "USD 1,000.00"),
    ]
    assert '<span class="num">USD 95.00</span> <small>95% of the budget</small>' in html
    assert 'value="95" aria-label="95% of the budget">95%</meter>' in html
    assert '<span class="num">USD 95.00</span> <small>9% of the budget</small>' in html
    assert re.findall(r"<li>([^<]+?)\s+·\s*<span class=\"(?:badge warning|muted)\">([^<]+)</span>", html) == [
        ("50% of actual spend", "reached"),
        ("90% of actual spend", "reached"),
        ("100% of actual spend", "not reached"),
        ("100% of forecast spend", "not reached"),
        ("50% of actual spend", "not reached"),
    ]
    assert html.count("e-mailed 06/10/2026 4 p.m.") == 2
    assert f'href="{budget_url(account, budget)}"' in html
    assert f'href="{budget_url(account, budget, "delete/")}"' in html
    assert f'href="{budget_url(account)}"' in html


def test_budgets_in_japanese_page_and_email(client_for, owner, account, project):
    """X11: the page and the alert in the reader's language (the catalogue's budget entries)."""
    owner.language = "ja"
    owner.save()
    budget_on(account, "1234.5")
    charge(account, project, "700", pacific(2026, 6, 1, 9, 0))
    check_budgets(now=pacific(2026, 6, 10, 9, 0))

    with time_machine.travel(pacific(2026, 6, 15, 12, 0), tick=False):
        html = client_for(owner).get("/billing/").content.decode()

    assert '<html lang="ja"' in html
    table = html[html.index('<table class="table budgets"') : html.index("</table>", html.index("table budgets"))]
    assert re.findall(r"<th>([^<]+)</th>", table) == [
        "対象",
        "月間予算",
        "今月の費用",
        "予測",
        "アラートのしきい値",
        "操作",
    ]
    assert "<td>請求先アカウント全体</td>" in table and '<td class="num">USD 1,234.50</td>' in table
    assert '<span class="num">USD 700.00</span> <small>予算の 56%</small>' in table
    assert [" ".join(item.split()) for item in re.findall(r"<li>(.*?)</li>", table, re.S)] == [
        '実際の費用の 50% · <span class="badge warning">到達</span> <small>2026/06/10 16:00 にメールで通知</small>',
        '実際の費用の 90% · <span class="muted">未到達</span>',
        '実際の費用の 100% · <span class="muted">未到達</span>',
        '予測費用の 100% · <span class="muted">未到達</span>',
    ]
    (mail,) = deliver_mail()
    assert mail.subject == "予算アラート: Main が月間予算の 50% に達しました"
    assert mail.body.startswith(
        f"請求先アカウント Main（{account.account_id}）の月間予算 USD 1,234.50 について、2026年6月 に"
        "次のアラートのしきい値に達しました。\n\n- 実際の費用の 50%\n\n"
        "今月のこれまでの費用: USD 700.00。今月全体の予測: USD 700.00。\n"
    )


def test_billing_page_query_count_does_not_grow_with_budgets(client_for, owner):
    client = client_for(owner)

    def add_account():
        project = make_project(owner)
        account = make_account(owner, projects=[project])
        budget_on(account)
        budget_on(account, project=project)
        charge(account, project, "60", pacific(2026, 6, 1, 9, 0))
        check_budgets(now=pacific(2026, 6, 15, 12, 0))

    def count_queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/billing/").status_code == 200
        return len(captured)

    with time_machine.travel(pacific(2026, 6, 15, 12, 0), tick=False):
        add_account()
        one = count_queries()
        add_account()
        add_account()
        three = count_queries()

    assert one == three
