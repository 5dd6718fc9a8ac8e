"""Forms of the Support decisions on quotas and tiers (staff.views.quotas): the queue's filter, the decision on a
quota increase request, and a tier override."""

from django import forms
from django.utils.translation import gettext_lazy as _

from studio.models import Tier
from usage.models import QuotaMetric, QuotaRequestStatus

APPROVE, DECLINE = "approve", "decline"
KEEP, EVALUATE = "keep", "evaluate"
ALL = "all"


def _reason_field(label=None):
    return forms.CharField(label=label or _("Reason"), widget=forms.Textarea(attrs={"rows": 3}), max_length=1000)


class QuotaRequestFilter(forms.Form):
    """Every field optional; the empty form (pending requests, oldest first) is what the navigation counts."""

    status = forms.ChoiceField(
        label=_("Status"), required=False, choices=[("", _("Waiting for review")), *QuotaRequestStatus.choices[1:]]
    )
    model = forms.ChoiceField(label=_("Model"), required=False)
    metric = forms.ChoiceField(label=_("Limit"), required=False, choices=[("", _("Any limit")), *QuotaMetric.choices])

    def __init__(self, *args, models, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["status"].choices = [*self.fields["status"].choices, (ALL, _("All"))]
        self.fields["model"].choices = [("", _("Any model")), *[(m.model_id, m.display_name) for m in models]]

    def apply(self, rows):
        data = self.cleaned_data if self.is_valid() else {}
        status = data.get("status") or QuotaRequestStatus.PENDING
        if status != ALL:
            rows = rows.filter(status=status)
        if data.get("model"):
            rows = rows.filter(model_id=data["model"])
        if data.get("metric"):
            rows = rows.filter(metric=data["metric"])
        return rows


class QuotaDecisionForm(forms.Form):
    decision = forms.ChoiceField(
        label=_("Decision"),
        choices=[(APPROVE, _("Approve this figure")), (DECLINE, _("Decline"))],
        widget=forms.RadioSelect,
        initial=APPROVE,
    )
    value = forms.IntegerField(label=_("Approved limit"), required=False, min_value=1)
    reason = _reason_field(_("Reason (the requester reads it)"))

    def clean(self):
        data = super().clean()
        if data.get("decision") == APPROVE and data.get("value") is None and "value" not in self.errors:
            self.add_error("value", _("Enter the figure to approve."))
        return data


class TierOverrideForm(forms.Form):
    tier = forms.ChoiceField(label=_("Tier"), choices=Tier.choices)
    keep = forms.ChoiceField(
        label=_("Afterwards"),
        choices=[
            (KEEP, _("Keep this tier: automatic evaluation and the owner's upgrade may not change it")),
            (EVALUATE, _("Automatic evaluation may change it later")),
        ],
        widget=forms.RadioSelect,
        initial=KEEP,
    )
    reason = _reason_field()
