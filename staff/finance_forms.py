"""Forms of the Finance queues (staff.views.finance): list filters and one decision form per kind of item."""

from datetime import datetime, time, timedelta
from decimal import Decimal

from django import forms
from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from billing.models import AccountStatus, Country, GoodwillReason, GoodwillStatus, RefundStatus

APPROVE, REJECT = "approve", "reject"
RECEIVED, NOT_RECEIVED = "received", "not_received"
SUSPEND, REINSTATE = "suspend", "reinstate"
# A day chosen in a form is at most this many days (about ten years) ahead: further is a typo, and the end of the
# year 9999 would overflow the datetime it becomes.
MAX_DAYS_AHEAD = 3650


def check_within_reach(day, today) -> None:
    """Refuse a `day` more than MAX_DAYS_AHEAD after `today` (a field error)."""
    if day > today + timedelta(days=MAX_DAYS_AHEAD):
        raise forms.ValidationError(_("Choose a day within the next 10 years."))


def _reason_field(label=None):
    return forms.CharField(label=label or _("Reason"), widget=forms.Textarea(attrs={"rows": 3}), max_length=1000)


# List filters: every field optional; an empty form is the default view that the navigation counts.


class RefundFilter(forms.Form):
    REVIEW, SECOND, DECIDED = "review", "second", "decided"
    status = forms.ChoiceField(
        label=_("Status"),
        required=False,
        choices=[
            ("", _("Waiting (all)")),
            (REVIEW, _("Waiting for review")),
            (SECOND, _("Waiting for a second approval")),
            (DECIDED, _("Decided")),
        ],
    )
    above_threshold = forms.BooleanField(label=_("Above the two-person threshold only"), required=False)

    def apply(self, rows):
        data = self.cleaned_data if self.is_valid() else {}
        status = data.get("status")
        if status == self.DECIDED:
            rows = rows.exclude(status=RefundStatus.PENDING)
        else:
            rows = rows.filter(status=RefundStatus.PENDING)
            if status == self.REVIEW:
                rows = rows.filter(first_approved_by=None)
            elif status == self.SECOND:
                rows = rows.exclude(first_approved_by=None)
        if data.get("above_threshold"):
            rows = rows.filter(amount__gt=settings.STAFF_APPROVAL_THRESHOLD)
        return rows


class TransferFilter(forms.Form):
    age = forms.TypedChoiceField(
        label=_("Waiting"),
        required=False,
        coerce=int,
        empty_value=None,
        choices=[("", _("Any time")), (3, _("More than 3 days")), (7, _("More than 7 days"))],
    )
    country = forms.ChoiceField(label=_("Country"), required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        countries = sorted(Country.objects.all(), key=lambda c: str(c.name))
        self.fields["country"].choices = [("", _("Any country")), *[(c.code, str(c.name)) for c in countries]]

    def apply(self, rows):
        data = self.cleaned_data if self.is_valid() else {}
        if data.get("age"):
            rows = rows.filter(created_at__lt=timezone.now() - timedelta(days=data["age"]))
        if data.get("country"):
            rows = rows.filter(account__country=data["country"])
        return rows


class PastDueFilter(forms.Form):
    suspended = forms.ChoiceField(
        label=_("Account"),
        required=False,
        choices=[("", _("All")), ("yes", _("Suspended")), ("no", _("Not suspended"))],
    )

    def apply(self, rows):
        choice = (self.cleaned_data if self.is_valid() else {}).get("suspended")
        if choice == "yes":
            rows = rows.filter(status=AccountStatus.SUSPENDED)
        elif choice == "no":
            rows = rows.exclude(status=AccountStatus.SUSPENDED)
        return rows


class GoodwillFilter(forms.Form):
    ALL = "all"
    status = forms.ChoiceField(
        label=_("Status"),
        required=False,
        choices=[
            ("", GoodwillStatus.PENDING.label),
            (GoodwillStatus.GRANTED, GoodwillStatus.GRANTED.label),
            (GoodwillStatus.REJECTED, GoodwillStatus.REJECTED.label),
            (ALL, _("All")),
        ],
    )

    def apply(self, rows):
        status = (self.cleaned_data if self.is_valid() else {}).get("status") or GoodwillStatus.PENDING
        return rows if status == self.ALL else rows.filter(status=status)


# Decisions: each carries a reason, which goes to the audit log.


class ApproveRejectForm(forms.Form):
    decision = forms.ChoiceField(
        label=_("Decision"),
        widget=forms.RadioSelect,
        choices=[(APPROVE, _("Approve")), (REJECT, _("Reject"))],
    )
    reason = _reason_field()


class TransferDecisionForm(forms.Form):
    decision = forms.ChoiceField(
        label=_("Decision"),
        widget=forms.RadioSelect,
        choices=[(RECEIVED, _("The money arrived: confirm")), (NOT_RECEIVED, _("The money did not arrive: fail it"))],
    )
    reason = _reason_field()


class AccountStatusForm(forms.Form):
    decision = forms.ChoiceField(
        label=_("Decision"),
        widget=forms.RadioSelect,
        choices=[(SUSPEND, _("Suspend (paid requests are refused at once)")), (REINSTATE, _("Reinstate"))],
    )
    reason = _reason_field()


class GoodwillForm(forms.Form):
    """The credit's expiry is a day in the staff member's zone: the credit pays until the end of that day there."""

    amount = forms.DecimalField(label=_("Amount (USD)"), max_digits=12, decimal_places=2, min_value=Decimal("0.01"))
    reason_code = forms.ChoiceField(label=_("Reason code"), choices=GoodwillReason.choices)
    note = _reason_field(_("Note (why, for the audit log)"))
    expires_on = forms.DateField(
        label=_("Credit expires after"), widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
    )

    def __init__(self, *args, zone, **kwargs):
        super().__init__(*args, **kwargs)
        self.zone = zone

    def clean_expires_on(self):
        day, today = self.cleaned_data["expires_on"], timezone.now().astimezone(self.zone).date()
        if day < today:
            raise forms.ValidationError(_("Choose today or a later day."))
        check_within_reach(day, today)
        return day

    @property
    def expires_at(self) -> datetime:
        """The end of the chosen day in the staff member's zone (the next day's midnight there)."""
        return datetime.combine(self.cleaned_data["expires_on"] + timedelta(days=1), time.min, tzinfo=self.zone)
