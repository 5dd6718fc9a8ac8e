"""Budgets (X3): a monthly amount per billing account or per project, with alert thresholds.

A budget is configuration, not money: it changes nothing in the ledger. What it is compared with
(spend and forecast) is read from the ledger's usage lines by `billing.budgets`.
"""

from dataclasses import dataclass

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from billing.models.accounts import BillingAccount


class ThresholdBasis(models.TextChoices):
    ACTUAL = "actual", _("actual spend")
    FORECAST = "forecast", _("forecast spend")


@dataclass(frozen=True, order=True)
class Threshold:
    """A percentage of the budget, of actual or of forecast spend (forecast ones sort last)."""

    basis_rank: int
    percent: int
    basis: str

    @classmethod
    def of(cls, percent: int, basis: str) -> "Threshold":
        return cls(0 if basis == ThresholdBasis.ACTUAL else 1, percent, basis)

    @property
    def label(self) -> str:
        """E.g. "50% of actual spend", in the active language."""
        if self.basis == ThresholdBasis.ACTUAL:
            return gettext("%(percent)s%% of actual spend") % {"percent": self.percent}
        return gettext("%(percent)s%% of forecast spend") % {"percent": self.percent}


# SPEC §9: 50 %, 90 % and 100 % of actual spend, and 100 % of forecast spend.
DEFAULT_THRESHOLDS = ((50, ThresholdBasis.ACTUAL), (90, ThresholdBasis.ACTUAL), (100, ThresholdBasis.ACTUAL),
                      (100, ThresholdBasis.FORECAST))  # fmt: skip
MAX_PERCENT = 1000
MAX_THRESHOLDS = 10  # of each basis


def default_thresholds() -> list[list]:
    return [[percent, str(basis)] for percent, basis in DEFAULT_THRESHOLDS]


class BudgetQuerySet(models.QuerySet):
    def administered_by(self, user):
        return self.filter(account__administrators__user=user)


class Budget(models.Model):
    """A monthly amount (USD) for a billing account's whole spend, or for one of its projects'.

    Months are Pacific calendar months, like statements. `thresholds` is a list of
    [percent, basis] pairs (see `Threshold`); each e-mails the account's billing administrators
    once a month when crossed (`BudgetAlert`).
    """

    account = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, related_name="budgets")
    # None: the whole account. A project: only that project's usage billed to this account.
    project = models.ForeignKey(
        "studio.Project", on_delete=models.CASCADE, null=True, blank=True, related_name="+", verbose_name=_("project")
    )
    amount = models.DecimalField(_("monthly amount (USD)"), max_digits=12, decimal_places=2)
    thresholds = models.JSONField(_("alert thresholds"), default=default_thresholds)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects = BudgetQuerySet.as_manager()

    class Meta:
        verbose_name = _("budget")
        verbose_name_plural = _("budgets")
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="budget_amount_positive"),
            # One budget per scope: the account's own, and one per project.
            models.UniqueConstraint(
                fields=["account"], condition=Q(project__isnull=True), name="one_account_budget_per_account"
            ),
            models.UniqueConstraint(
                fields=["account", "project"], condition=Q(project__isnull=False), name="one_budget_per_project"
            ),
        ]

    def __str__(self):
        scope = f"project {self.project_id}" if self.project_id else "account"
        return f"{self.account.account_id} {scope}: USD {self.amount}"

    @property
    def threshold_list(self) -> list[Threshold]:
        return sorted(Threshold.of(int(percent), basis) for percent, basis in self.thresholds)


class BudgetAlert(models.Model):
    """One threshold of a budget crossed in one Pacific month, and its e-mail.

    The row is the claim: it is inserted in the transaction that queues the e-mail, and the unique
    key (budget, month, percent, basis) lets only one runner insert it, so each threshold e-mails
    once a month however many runners check at once.
    """

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="alerts")
    month = models.DateField(_("month"))
    percent = models.PositiveSmallIntegerField(_("percent"))
    basis = models.CharField(_("of"), max_length=10, choices=ThresholdBasis.choices)
    amount = models.DecimalField(_("budget (USD)"), max_digits=12, decimal_places=2)
    spend = models.DecimalField(_("spend (USD)"), max_digits=18, decimal_places=6)
    forecast = models.DecimalField(_("forecast (USD)"), max_digits=18, decimal_places=6)
    sent_at = models.DateTimeField(_("sent at"), default=timezone.now)

    class Meta:
        verbose_name = _("budget alert")
        verbose_name_plural = _("budget alerts")
        constraints = [
            models.UniqueConstraint(
                fields=["budget", "month", "percent", "basis"], name="one_alert_per_threshold_per_month"
            )
        ]

    def __str__(self):
        return f"{self.budget_id} {self.month:%Y-%m} {self.percent}% {self.basis}"

    @property
    def threshold(self) -> Threshold:
        return Threshold.of(self.percent, self.basis)
