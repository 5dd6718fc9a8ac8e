"""The demo's budgets (billing.demo.seed_budgets): one with thresholds already crossed and e-mailed."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from io import StringIO

import time_machine
from django.core.management import call_command

from billing.budgets import statuses
from billing.models import Budget, BudgetAlert
from studio.models import OutboundEmail

SEEDED_AT = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)  # as in tests/studio/test_seed_demo.py


def test_demo_has_a_budget_with_thresholds_crossed_and_emailed_once(db):
    with time_machine.travel(SEEDED_AT, tick=False):
        call_command("seed_demo", "--allow-without-debug", stdout=StringIO())
    with time_machine.travel(SEEDED_AT + timedelta(hours=1), tick=False):
        call_command("seed_demo", "--allow-without-debug", stdout=StringIO())

    budgets = list(Budget.objects.select_related("account", "project").order_by("pk"))
    found = statuses(budgets, now=SEEDED_AT)
    assert [
        (
            b.account.display_name,
            b.project and b.project.project_id,
            b.amount,
            found[b.pk].spend,
            found[b.pk].forecast,
            [(s.threshold.percent, s.threshold.basis) for s in found[b.pk].crossed],
        )
        for b in budgets
    ] == [
        ("Main billing account", None, D("60.00"), D("37.184155"), D("70.934895"), [(50, "actual"), (100, "forecast")]),
        ("Main billing account", "gen-lang-client-0100000002", D("200.00"), D("21.130481"), D("44.059628"), []),
    ]
    assert [(a.month, a.percent, a.basis, a.sent_at) for a in BudgetAlert.objects.order_by("pk")] == [
        (date(2026, 11, 1), 50, "actual", SEEDED_AT),
        (date(2026, 11, 1), 100, "forecast", SEEDED_AT),
    ]
    (email,) = OutboundEmail.objects.filter(subject__startswith="Budget alert")
    assert (email.to, email.subject) == (
        ["dev@example.com"],
        "Budget alert: Main billing account has reached 50% of its monthly budget",
    )
