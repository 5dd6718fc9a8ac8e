"""Forms of the staff console's promotional codes (staff.views.promotions)."""

from datetime import datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django import forms
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from billing.models import PromoCode
from billing.promotions import CODE_PATTERN, PromoState, normalize
from staff.finance_forms import MAX_DAYS_AHEAD, check_within_reach

# "Redeemable until" is a day; it ends at midnight Pacific time, like the product's other days.
PACIFIC = ZoneInfo("America/Los_Angeles")
MAX_REDEMPTIONS = 1_000_000


def end_of_day(day) -> datetime:
    """The moment `day` ends in Pacific time (midnight at the start of the next day)."""
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=PACIFIC)


class PromoCodeForm(forms.Form):
    code = forms.CharField(
        label=_("Code"),
        max_length=32,
        required=False,
        help_text=_("Letters, digits and dashes. Leave it blank for a random readable code."),
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    amount = forms.DecimalField(
        label=_("Credit amount (USD)"), max_digits=12, decimal_places=2, min_value=Decimal("0.01")
    )
    redeem_by = forms.DateField(
        label=_("Redeemable until"),
        help_text=_("Through the end of this day, Pacific time."),
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    credit_valid_days = forms.IntegerField(
        label=_("Credit valid for (days)"),
        min_value=1,
        max_value=MAX_DAYS_AHEAD,
        help_text=_("Counted from each redemption."),
    )
    max_redemptions = forms.IntegerField(
        label=_("Redemptions allowed"), min_value=1, max_value=MAX_REDEMPTIONS, help_text=_("One per billing account.")
    )
    description = forms.CharField(label=_("Description"), max_length=200, required=False)

    def clean_code(self) -> str:
        code = normalize(self.cleaned_data["code"])
        if code and not CODE_PATTERN.match(code):
            raise forms.ValidationError(_("Use 3 to 32 letters, digits and dashes, starting with a letter or digit."))
        if code and PromoCode.objects.filter(code=code).exists():
            raise forms.ValidationError(_("This code already exists."))
        return code

    def clean_redeem_by(self):
        day = self.cleaned_data["redeem_by"]
        check_within_reach(day, timezone.now().astimezone(PACIFIC).date())  # before end_of_day: 9999-12-31 overflows
        if end_of_day(day) <= timezone.now():
            raise forms.ValidationError(_("Choose today or a later day."))
        return end_of_day(day)


class DeactivateForm(forms.Form):
    reason = forms.CharField(label=_("Reason"), widget=forms.Textarea(attrs={"rows": 2}), max_length=1000)


class ApproveForm(forms.Form):
    note = forms.CharField(
        label=_("Note (why, for the audit log)"), widget=forms.Textarea(attrs={"rows": 2}), max_length=1000
    )


class PromoFilterForm(forms.Form):
    state = forms.ChoiceField(label=_("State"), required=False, choices=[("", _("All states")), *PromoState.choices])
