"""Budget alerts under concurrency (PostgreSQL): runners at the same moment send each e-mail once."""

from datetime import datetime
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pytest

from billing import ledger
from billing.budgets import check_budgets
from billing.models import Budget, BudgetAlert
from studio.models import OutboundEmail
from tests.concurrency import at_once
from tests.factories import make_account, make_project, make_user

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

LA = ZoneInfo("America/Los_Angeles")
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=LA)
ACCOUNTS = 10
RUNNERS = 4


def spent(account, project, amount):
    occurred = datetime(2026, 6, 1, 9, 0, tzinfo=LA)
    line = ledger.UsageLineIn(
        project_id=project.pk,
        model_id="gemini-2.5-flash",
        price_id=1,
        sku="input",
        batch=False,
        long_prompt=False,
        quantity=D("1"),
        events=1,
        amount=D(amount),
        first_occurred_at=occurred,
        last_occurred_at=occurred,
    )
    ledger.record_usage(account, month=occurred.date().replace(day=1), lines=[line], at=occurred)


def test_concurrent_runners_claim_each_threshold_once_and_send_one_email_per_crossing():
    for index in range(ACCOUNTS):
        owner = make_user(f"admin{index}@example.com")
        project = make_project(owner)
        account = make_account(owner, projects=[project])
        Budget.objects.create(account=account, amount=D("100"), created_by=owner)
        spent(account, project, "95")  # 50 % and 90 % of actual spend

    results, errors = at_once(lambda _: check_budgets(now=NOW), RUNNERS)

    assert errors == []
    claimed = sorted((alert.budget_id, alert.percent, alert.basis) for result in results for alert in result)
    expected = sorted(
        (budget_id, percent, "actual")
        for budget_id in Budget.objects.values_list("pk", flat=True)
        for percent in (50, 90)
    )
    assert claimed == expected  # every threshold claimed by exactly one runner
    assert BudgetAlert.objects.count() == 2 * ACCOUNTS
    assert sorted(OutboundEmail.objects.values_list("to", flat=True)) == sorted(
        [[f"admin{index}@example.com"] for index in range(ACCOUNTS)]
    )
    assert check_budgets(now=NOW) == []
    assert OutboundEmail.objects.count() == ACCOUNTS
