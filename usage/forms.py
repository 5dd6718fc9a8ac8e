"""The dashboard's filters (R20): a range and, on the Usage tab, a model and an API key. They are
read from the URL (a GET form), so that every view of the dashboard is a link."""

from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django import forms
from django.utils.translation import gettext_lazy as _

from usage.models import QuotaMetric
from usage.queries import Window

RANGES = [
    ("1h", _("Last hour")),
    ("24h", _("Last 24 hours")),
    ("7d", _("Last 7 days")),
    ("28d", _("Last 28 days")),
    ("90d", _("Last 90 days")),
    ("custom", _("Custom dates")),
]
CENTS = Decimal("0.01")
DEFAULT_RANGE = "28d"
DAYS = {"7d": 7, "28d": 28, "90d": 90}  # today and the days before it
MAX_DAYS = 90  # custom dates: the longest range the 90-day view covers


class DateInput(forms.DateInput):
    input_type = "date"

    def __init__(self):
        super().__init__(format="%Y-%m-%d")  # what <input type="date"> reads and sends, in every language


class RangeForm(forms.Form):
    """The range, as both tabs read it. A day is the reader's calendar day (`today` is theirs)."""

    range = forms.ChoiceField(label=_("Range"), choices=RANGES)
    start = forms.DateField(label=_("First day"), required=False, widget=DateInput())
    end = forms.DateField(label=_("Last day"), required=False, widget=DateInput())

    def __init__(self, query, *, today: date):
        data = {"range": DEFAULT_RANGE, **dict(query.items())}
        # Without a custom range, the date fields show the days the range covers: a starting point
        # for choosing custom dates (they are read only with "Custom dates").
        if data["range"] != "custom":
            first = today - timedelta(days=DAYS.get(data["range"], 1) - 1)
            data.update(start=first.isoformat(), end=today.isoformat())
        super().__init__(data)
        self.today = today
        for name in ("start", "end"):
            self.fields[name].widget.attrs["max"] = today.isoformat()

    def clean(self):
        data = super().clean()
        if data.get("range") != "custom":
            return data
        start, end = data.get("start"), data.get("end")
        for name, value, missing in (
            ("start", start, _("Enter the first day of the range.")),
            ("end", end, _("Enter the last day of the range.")),
        ):
            if value is None and name not in self.errors:
                self.add_error(name, missing)
            elif value is not None and value > self.today:
                self.add_error(name, _("Choose a day that is not in the future."))
        if start and end and "end" not in self.errors:
            if end < start:
                self.add_error("end", _("The last day cannot be before the first day."))
            elif (end - start).days + 1 > MAX_DAYS:
                self.add_error("end", _("Choose at most %(days)d days.") % {"days": MAX_DAYS})
        return data

    def window(self, now: datetime, tz: ZoneInfo) -> Window:
        """The valid form's range as buckets: minutes for the last hour, hours for 24 hours, days otherwise."""
        choice = self.cleaned_data["range"]
        if choice == "1h":
            return Window.minutes(now, 60, tz)
        if choice == "24h":
            return Window.hours(now, 24, tz)
        if choice == "custom":
            return Window.days(self.cleaned_data["start"], self.cleaned_data["end"], tz)
        return Window.days(self.today - timedelta(days=DAYS[choice] - 1), self.today, tz)

    def range_query(self) -> dict[str, str]:
        """The valid range as URL parameters (the dates only for custom dates)."""
        query = {"range": self.cleaned_data["range"]}
        if query["range"] == "custom":
            query.update(start=self.cleaned_data["start"].isoformat(), end=self.cleaned_data["end"].isoformat())
        return query


class UsageFilterForm(RangeForm):
    """The Usage tab's filters: the range, and a model and an API key of the project."""

    model = forms.ChoiceField(label=_("Model"), required=False)
    key = forms.TypedChoiceField(label=_("API key"), required=False, coerce=int, empty_value=None)

    def __init__(self, query, *, today: date, models, keys):
        super().__init__(query, today=today)
        self.fields["model"].choices = [("", _("All models"))] + [(m.model_id, m.display_name) for m in models]
        self.fields["key"].choices = [("", _("All keys"))] + [(k.pk, key_label(k)) for k in keys]

    def filter_query(self) -> dict[str, str]:
        """The valid filters as URL parameters (those chosen only)."""
        query = {}
        if self.cleaned_data["model"]:
            query["model"] = self.cleaned_data["model"]
        if self.cleaned_data["key"] is not None:
            query["key"] = str(self.cleaned_data["key"])
        return query


def key_label(key) -> str:
    """A key as the filter and the per-key table name it: its name and masked secret."""
    label = f"{key.name} ({key.masked})"
    return _("%(key)s, revoked") % {"key": label} if key.is_revoked else label


class SpendCapForm(forms.Form):
    """X4: the project's monthly spend cap, in USD (cents at most)."""

    amount = forms.DecimalField(
        label=_("Monthly spend cap (USD)"),
        min_value=Decimal("0.01"),
        max_digits=12,
        decimal_places=2,
        error_messages={"required": _("Enter the most this project may spend in a month, in USD.")},
    )

    def clean_amount(self) -> Decimal:
        return self.cleaned_data["amount"].quantize(CENTS)


class QuotaRequestForm(forms.Form):
    """SPEC §10: ask Support for a higher RPM, TPM or RPD on one model the project's tier can use."""

    model = forms.ChoiceField(label=_("Model"))
    metric = forms.ChoiceField(label=_("Limit"), choices=QuotaMetric.choices)
    value = forms.IntegerField(
        label=_("Limit you need"),
        min_value=1,
        max_value=10**15,
        error_messages={"required": _("Enter the figure this project needs.")},
    )
    reason = forms.CharField(
        label=_("Why this project needs it"),
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 4}),
        error_messages={"required": _("Say why this project needs a higher limit.")},
    )

    def __init__(self, *args, models, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = [(m.model_id, m.display_name) for m in models]
