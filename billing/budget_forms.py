"""The budget form (X3): what a budget covers, its monthly amount and its alert thresholds."""

import re
from decimal import Decimal

from django import forms
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from billing.budgets import duplicate_scope_message
from billing.forms import ProjectChoiceField
from billing.models import Budget, ThresholdBasis
from billing.models.budgets import DEFAULT_THRESHOLDS, MAX_PERCENT, MAX_THRESHOLDS
from studio.models import Project

# Commas (also the Japanese 、 and ，), spaces and percent signs separate percentages.
SEPARATORS = re.compile(r"[\s,、，%％]+")


class PercentagesField(forms.CharField):
    """Whole percentages typed as a list ("50, 90, 100"): a sorted list of distinct ints."""

    default_error_messages = {
        "invalid": _("Enter whole percentages from 1 to %(max)d, separated by commas."),
        "too_many": _("Enter at most %(max)d percentages."),
    }

    def to_python(self, value) -> list[int]:
        value = super().to_python(value)
        percents = set()
        for part in SEPARATORS.split(value):
            if not part:
                continue
            try:
                percent = int(part)  # also full-width digits
            except ValueError:
                raise ValidationError(self.error_messages["invalid"], "invalid", {"max": MAX_PERCENT}) from None
            if not 1 <= percent <= MAX_PERCENT:
                raise ValidationError(self.error_messages["invalid"], "invalid", {"max": MAX_PERCENT})
            percents.add(percent)
        if len(percents) > MAX_THRESHOLDS:
            raise ValidationError(self.error_messages["too_many"], "too_many", {"max": MAX_THRESHOLDS})
        return sorted(percents)

    def prepare_value(self, value):
        return ", ".join(str(percent) for percent in value) if isinstance(value, list) else value


class BudgetForm(forms.Form):
    project = ProjectChoiceField(
        Project.objects.none(),
        label=_("Applies to"),
        required=False,
        to_field_name="project_id",
        empty_label=_("The whole billing account"),
    )
    amount = forms.DecimalField(
        label=_("Monthly amount (USD)"), min_value=Decimal("0.01"), max_digits=12, decimal_places=2
    )
    actual = PercentagesField(label=_("Alert at these percentages of actual spend"), required=False)
    forecast = PercentagesField(label=_("Alert at these percentages of forecast spend"), required=False)

    def __init__(self, *args, account, budget: Budget | None = None, **kwargs):
        """Projects: those linked to `account` (and the budget's own, should it have moved since)."""
        super().__init__(*args, **kwargs)
        self.account, self.budget = account, budget
        linked = Q(billing__account=account)
        if budget is not None and budget.project_id:
            linked |= Q(pk=budget.project_id)
        self.fields["project"].queryset = Project.objects.filter(linked).order_by("name")
        pairs = budget.thresholds if budget is not None else DEFAULT_THRESHOLDS
        self.initial.setdefault("actual", sorted(p for p, basis in pairs if basis == ThresholdBasis.ACTUAL))
        self.initial.setdefault("forecast", sorted(p for p, basis in pairs if basis == ThresholdBasis.FORECAST))
        if budget is not None:
            self.initial.setdefault("project", budget.project.project_id if budget.project_id else None)
            self.initial.setdefault("amount", budget.amount)

    def clean_project(self):
        project = self.cleaned_data["project"]
        others = Budget.objects.filter(account=self.account, project=project)
        if self.budget is not None:
            others = others.exclude(pk=self.budget.pk)
        if others.exists():
            raise ValidationError(duplicate_scope_message(project))
        return project

    def clean(self):
        cleaned = super().clean()
        valid = not self.has_error("actual") and not self.has_error("forecast")
        if valid and not cleaned.get("actual") and not cleaned.get("forecast"):
            self.add_error("actual", _("Choose at least one alert threshold."))
        return cleaned

    @property
    def thresholds(self) -> list[list]:
        """The cleaned thresholds as the model keeps them: [percent, basis] pairs."""
        return [[p, str(ThresholdBasis.ACTUAL)] for p in self.cleaned_data["actual"]] + [
            [p, str(ThresholdBasis.FORECAST)] for p in self.cleaned_data["forecast"]
        ]
