"""Budgets (X3, SPEC §9): spend and forecast of each budget, its thresholds, and the alerts job.

- **Spend** is what the ledger charged for usage that occurred in the Pacific month (the month of a
  statement): the `UsageLine` rows of the month on the budget's account, for a project budget only
  that project's. It is what usage cost, whoever paid (credits do not reduce it), like "Total
  spend" and the tier rules. Usage not yet charged does not count: charging runs every
  CHARGE_INTERVAL_SECONDS, so spend lags the fleet's reports by less than a minute.
- **Forecast** = spend + the last 7 days' daily average × the days left in the month. Days are
  Pacific calendar days on the wall clock: the 7 days end now and start at the same wall-clock time
  a week earlier (168 hours, or 167 or 169 across a DST change), and the days left run from now to
  midnight Pacific at the month's end (a 25-hour day still counts as one day). The 7 days may
  reach into the previous month: on the 2nd the average still covers a whole week. A line counts
  in those 7 days if its last usage occurred in them (charging every minute keeps a line's usage
  within a minute or so). Rounded half-up to the micro-dollar once, like a ledger line.
- **Alerts**: each threshold crossed (spend, or the forecast, at or above its percentage of the
  amount) e-mails the account's billing administrators once per Pacific month. `check_budgets`
  claims a `BudgetAlert` row (unique per budget × month × threshold) in the transaction that
  writes the e-mail to the outbox, so a second runner, at the same time or later, sends nothing.
"""

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, localcontext
from zoneinfo import ZoneInfo

from django.db import IntegrityError, transaction
from django.db.models import Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext as _

from billing import emails
from billing.models import Budget, BudgetAlert, ThresholdBasis, UsageLine
from billing.models.budgets import Threshold
from billing.money import CENTS, ZERO, round_money
from billing.services import BillingError
from studio.models import AuditEvent

log = logging.getLogger(__name__)

PACIFIC = ZoneInfo("America/Los_Angeles")  # statement months are Pacific months
FORECAST_DAYS = 7
MICROS_PER_DAY = 86_400_000_000
BATCH = 500  # budgets checked per query


@dataclass(frozen=True)
class Month:
    """The Pacific month a moment is in, and the forecast's two spans: the 7 days before the moment
    and the rest of the month (wall-clock days)."""

    start: date  # its first day: `UsageLine.month`
    window_start: datetime  # FORECAST_DAYS Pacific days before now (in UTC)
    micros_left: int  # from now to the month's end, in wall-clock microseconds

    @property
    def days_left(self) -> Decimal:
        with localcontext() as exact:
            exact.prec = 40
            return Decimal(self.micros_left) / MICROS_PER_DAY

    @property
    def window_month(self) -> date:
        return self.window_start.astimezone(PACIFIC).date().replace(day=1)


def month_at(now: datetime) -> Month:
    local = now.astimezone(PACIFIC)
    wall = local.replace(tzinfo=None)
    start = wall.date().replace(day=1)
    next_start = (start + timedelta(days=32)).replace(day=1)
    left = datetime.combine(next_start, time()) - wall
    # A wall-clock time a week ago, read in Pacific time (in a DST gap, as the time before the change).
    window_start = (wall - timedelta(days=FORECAST_DAYS)).replace(tzinfo=PACIFIC).astimezone(UTC)
    return Month(start=start, window_start=window_start, micros_left=left // timedelta(microseconds=1))


def forecast(spend: Decimal, recent: Decimal, month: Month) -> Decimal:
    """Spend + the daily average of `recent` (the last FORECAST_DAYS days' spend) × the days left."""
    with localcontext() as exact:
        exact.prec = 60
        return round_money(spend + recent * month.micros_left / (FORECAST_DAYS * MICROS_PER_DAY))


@dataclass(frozen=True)
class ThresholdState:
    threshold: Threshold
    target: Decimal  # the budget's amount × the percentage
    crossed: bool
    alerted_at: datetime | None  # when its e-mail went out this month, if it did

    @property
    def label(self) -> str:
        return self.threshold.label


@dataclass(frozen=True)
class BudgetStatus:
    budget: Budget
    month: date
    spend: Decimal
    forecast: Decimal
    thresholds: list[ThresholdState]

    @property
    def percent_spent(self) -> int:
        """Whole percent of the amount spent, rounded down (99.99 % is not yet 100 %)."""
        return int(self.spend * 100 // self.budget.amount)

    @property
    def meter_percent(self) -> int:
        return min(self.percent_spent, 100)

    @property
    def crossed(self) -> list[ThresholdState]:
        return [state for state in self.thresholds if state.crossed]

    @property
    def due(self) -> list[ThresholdState]:
        """Crossed and not yet e-mailed this month."""
        return [state for state in self.thresholds if state.crossed and state.alerted_at is None]


def statuses(budgets: list[Budget], *, now: datetime | None = None) -> dict[int, BudgetStatus]:
    """Spend, forecast and thresholds of each budget this Pacific month, by budget pk.

    Two queries whatever the number of budgets: the usage lines summed by account × project
    (this month's, and the last 7 days'), and this month's alerts.
    """
    if not budgets:
        return {}
    month = month_at(now or timezone.now())
    lines = (
        UsageLine.objects.filter(account_id__in={b.account_id for b in budgets}, month__gte=month.window_month)
        .values("account_id", "project_id")
        .annotate(
            spend=Coalesce(Sum("amount", filter=Q(month=month.start)), ZERO),
            recent=Coalesce(Sum("amount", filter=Q(last_occurred_at__gte=month.window_start)), ZERO),
        )
        .order_by()
    )
    by_account = defaultdict(list)
    for row in lines:
        by_account[row["account_id"]].append(row)
    alerted = {
        (alert.budget_id, alert.percent, alert.basis): alert.sent_at
        for alert in BudgetAlert.objects.filter(budget__in=budgets, month=month.start)
    }
    result = {}
    for budget in budgets:
        rows = [row for row in by_account[budget.account_id] if budget.project_id in (None, row["project_id"])]
        # SQLite sums decimals as floats; PostgreSQL is exact. Both agree to the micro-dollar.
        spend = round_money(sum((Decimal(row["spend"]) for row in rows), ZERO))
        recent = round_money(sum((Decimal(row["recent"]) for row in rows), ZERO))
        predicted = forecast(spend, recent, month)
        states = []
        for threshold in budget.threshold_list:
            target = budget.amount * threshold.percent / 100
            reached = spend if threshold.basis == ThresholdBasis.ACTUAL else predicted
            when = alerted.get((budget.pk, threshold.percent, threshold.basis))
            states.append(ThresholdState(threshold, target, reached >= target, when))
        result[budget.pk] = BudgetStatus(budget, month.start, spend, predicted, states)
    return result


def statuses_by_account(accounts, *, now: datetime | None = None) -> dict[int, list[BudgetStatus]]:
    """The budgets of several accounts with their status (the billing page), account-wide first,
    then by project name; three queries at most, one when no account has a budget."""
    budgets = list(
        Budget.objects.filter(account__in=accounts)
        .select_related("project")
        .order_by("account_id", "project__name", "pk")
    )
    budgets.sort(key=lambda b: (b.account_id, b.project_id is not None))  # stable: names stay sorted
    found = statuses(budgets, now=now)
    result = defaultdict(list)
    for budget in budgets:
        result[budget.account_id].append(found[budget.pk])
    return dict(result)


# Changes (from the billing page)


def _snapshot(budget: Budget) -> dict:
    project = budget.project.project_id if budget.project_id else None
    return {"project": project, "amount": str(budget.amount), "thresholds": budget.thresholds}


def save_budget(account, *, budget: Budget | None, project, amount: Decimal, thresholds: list, by) -> Budget:
    """Create a budget on `account` (budget None) or change one; audited.

    Raises BillingError if the account already has a budget for that scope (one per scope: a
    second tab or a double click that got past the form's check is refused by the database).
    """
    before = _snapshot(budget) if budget else None
    budget = budget or Budget(account=account, created_by=by)
    # Kept to the cent, as the column is (the form refuses more decimal places).
    budget.project, budget.amount, budget.thresholds = project, amount.quantize(CENTS), thresholds
    try:
        with transaction.atomic():
            budget.save()
            action = "budget.update" if before else "budget.create"
            AuditEvent.record(actor=by, action=action, obj=budget, before=before, after=_snapshot(budget))
    except IntegrityError:
        raise BillingError(duplicate_scope_message(project)) from None
    return budget


def duplicate_scope_message(project) -> str:
    if project is None:
        return _("This billing account already has a budget for the whole account.")
    return _("This billing account already has a budget for %(project)s.") % {"project": project.name}


def delete_budget(budget: Budget, *, by) -> None:
    with transaction.atomic():
        AuditEvent.record(actor=by, action="budget.delete", obj=budget, before=_snapshot(budget))
        budget.delete()


# The job


def check_budgets(
    *, now: datetime | None = None, report: Callable[[BudgetStatus, list[BudgetAlert]], None] | None = None
) -> list[BudgetAlert]:
    """E-mail the billing administrators about every threshold crossed and not yet e-mailed this
    Pacific month (the `check_budgets` job). Returns the alerts this run sent.

    Effects, per budget with new crossings, in one transaction: a BudgetAlert row per threshold
    (inserted first: a runner that finds the row there, or inserted by a runner at the same time,
    skips that threshold) and one e-mail per administrator naming them all (outbox rows).
    Safe to run twice or concurrently. `report(status, alerts)` is called after each commit.
    """
    now = now or timezone.now()
    sent, after = [], 0
    while True:
        batch = list(Budget.objects.filter(pk__gt=after).select_related("account", "project").order_by("pk")[:BATCH])
        if not batch:
            return sent
        after = batch[-1].pk
        for status in statuses(batch, now=now).values():
            if status.due:
                claimed = _alert(status, now=now)
                if claimed and report is not None:
                    report(status, claimed)
                sent += claimed


def _alert(status: BudgetStatus, *, now: datetime) -> list[BudgetAlert]:
    budget, claimed = status.budget, []
    with transaction.atomic():
        for state in status.due:
            try:
                with transaction.atomic():
                    claimed.append(
                        BudgetAlert.objects.create(
                            budget=budget,
                            month=status.month,
                            percent=state.threshold.percent,
                            basis=state.threshold.basis,
                            amount=budget.amount,
                            spend=status.spend,
                            forecast=status.forecast,
                            sent_at=now,
                        )
                    )
            except IntegrityError:
                # Claimed by another runner (its e-mail names it), or the budget was just deleted.
                log.info(
                    "budget %s: %s%% of %s spend already claimed",
                    budget.pk,
                    state.threshold.percent,
                    state.threshold.basis,
                )
                continue
        if claimed:
            emails.budget_alert(status, claimed)
            AuditEvent.record(
                actor=None,
                action="budget.alert",
                obj=budget,
                after={
                    "month": str(status.month),
                    "thresholds": [f"{alert.percent}% {alert.basis}" for alert in claimed],
                    "spend": str(status.spend),
                    "forecast": str(status.forecast),
                },
            )
    return claimed
