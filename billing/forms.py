from datetime import date
from decimal import Decimal

from django import forms
from django.core.validators import MinValueValidator
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from billing import cards
from billing.models import BillingAccount, Country, PaymentsProfile, ProfileType
from studio.models import ApiKey, Project

NEW_ACCOUNT = "new"


def country_choices():
    countries = sorted(Country.objects.billable(), key=lambda c: c.name)
    return [("", _("Select a country")), *[(c.code, f"{c.flag} {c.name}") for c in countries]]


class ProjectChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj):
        return f"{obj.name} ({obj.project_id})"


class KeyChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj):
        return f"{obj.name} ({obj.masked})"


class ProjectStepForm(forms.Form):
    project = ProjectChoiceField(
        Project.objects.none(), label=_("Project"), to_field_name="project_id", empty_label=None
    )
    api_key = KeyChoiceField(ApiKey.objects.none(), label=_("API key"), required=False, empty_label=_("No key"))

    def __init__(self, *args, projects, keys, **kwargs):
        """`projects` and `keys`: querysets of what the person may choose (anything else is refused)."""
        super().__init__(*args, **kwargs)
        self.fields["project"].queryset = projects
        self.fields["api_key"].queryset = keys

    def clean(self):
        cleaned = super().clean()
        project, key = cleaned.get("project"), cleaned.get("api_key")
        if project is not None and key is not None and key.project_id != project.pk:
            self.add_error("api_key", _("Choose a key of the selected project."))
        return cleaned


class CountryTermsForm(forms.Form):
    country = forms.ChoiceField(label=_("Country"))
    accept_terms = forms.BooleanField(
        label=_("I agree to the Cloud Billing terms of service"),
        error_messages={"required": _("Accept the terms of service to continue.")},
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["country"].choices = country_choices()

    def clean_country(self):
        return Country.objects.billable().get(code=self.cleaned_data["country"])


class SelectAccountForm(forms.Form):
    account = forms.ChoiceField(label=_("Select billing account"))

    def __init__(self, *args, accounts: list[BillingAccount], **kwargs):
        super().__init__(*args, **kwargs)
        self.accounts = {a.account_id: a for a in accounts}
        self.fields["account"].choices = [
            *[(a.account_id, f"{a.display_name} ({a.account_id})") for a in accounts],
            (NEW_ACCOUNT, _("Add new billing account")),
        ]
        if len(accounts) == 1 and "account" not in self.initial:
            self.initial["account"] = accounts[0].account_id  # R9: exactly one account is selected automatically

    def clean_account(self):
        value = self.cleaned_data["account"]
        return None if value == NEW_ACCOUNT else self.accounts[value]


class ContactForm(forms.ModelForm):
    country = forms.ChoiceField(label=_("Country"))

    class Meta:
        model = PaymentsProfile
        fields = [
            "profile_type",
            "name",
            "organization",
            "address_line1",
            "address_line2",
            "city",
            "postal_code",
            "country",
            "email",
            "phone",
        ]
        widgets = {"profile_type": forms.RadioSelect}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["country"].choices = country_choices()
        # A required choice: no pre-checked "---------" placeholder among the radios.
        self.fields["profile_type"].choices = ProfileType.choices
        if self.instance.pk:
            self.initial["country"] = self.instance.country_id

    def clean_country(self):
        return Country.objects.billable().get(code=self.cleaned_data["country"])

    def clean_phone(self):
        phone = self.cleaned_data["phone"].strip()
        digits = [c for c in phone if c.isdigit()]
        if len(digits) < 6 or any(c not in "0123456789+-() ." for c in phone):
            raise forms.ValidationError(_("Enter a phone number, for example +1 650 555 0100."))
        return phone

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("profile_type") == "business" and not cleaned.get("organization", "").strip():
            self.add_error("organization", _("Enter the organization's name for a business profile."))
        return cleaned


def _month_choices():
    return [("", _("Month")), *[(str(m), f"{m:02d}") for m in range(1, 13)]]


def _year_choices():
    this_year = timezone.now().year
    return [("", _("Year")), *[(str(y), str(y)) for y in range(this_year, this_year + 21)]]


class UnechoedTextInput(forms.TextInput):
    """A visible input whose value is never written back into a page (card numbers)."""

    def format_value(self, value):
        return None


class CardForm(forms.Form):
    """Card details. The number and CVC are never re-displayed, stored or logged."""

    number = forms.CharField(
        label=_("Card number"),
        max_length=23,
        widget=UnechoedTextInput(attrs={"autocomplete": "cc-number", "inputmode": "numeric"}),
    )
    exp_month = forms.TypedChoiceField(label=_("Expiry month"), coerce=int)
    exp_year = forms.TypedChoiceField(label=_("Expiry year"), coerce=int)
    cvc = forms.CharField(
        label=_("Security code (CVC)"),
        max_length=4,
        # A text input: autocomplete="cc-csc" is not valid on a password input. Never re-displayed.
        widget=UnechoedTextInput(attrs={"autocomplete": "cc-csc", "inputmode": "numeric"}),
    )

    def __init__(self, *args, today: date | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.today = today or timezone.localdate()
        self.fields["exp_month"].choices = _month_choices()
        self.fields["exp_year"].choices = _year_choices()

    def clean_number(self):
        number = cards.digits_only(self.cleaned_data["number"])
        if not number.isdigit():
            raise forms.ValidationError(_("A card number has only digits."))
        if not cards.luhn_valid(number):
            raise forms.ValidationError(_("This card number is not valid. Check it and try again."))
        if cards.brand_of(number) is None:
            raise forms.ValidationError(
                _("We accept Visa, Mastercard, American Express, JCB, Discover and Diners Club.")
            )
        return number

    def clean(self):
        cleaned = super().clean()
        month, year = cleaned.get("exp_month"), cleaned.get("exp_year")
        if month and year and not cards.expiry_in_future(month, year, self.today):
            self.add_error("exp_month", _("This card has expired."))
        number, cvc = cleaned.get("number"), cleaned.get("cvc", "")
        if number:
            brand, cvc_length = cards.brand_of(number)
            cleaned["brand"] = brand
            if cvc and (not cvc.isdigit() or len(cvc) != cvc_length):
                self.add_error(
                    "cvc", _("Enter the %(length)d-digit security code from your card.") % {"length": cvc_length}
                )
        return cleaned

    def add_to(self, profile, *, by):
        """Verify the card with the processor and keep it on `profile` (raises PaymentError)."""
        from billing.services import add_card

        data = self.cleaned_data
        return add_card(
            profile,
            number=data["number"],
            exp_month=data["exp_month"],
            exp_year=data["exp_year"],
            cvc=data["cvc"],
            brand=data["brand"],
            by=by,
        )


class AccountChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj):
        return f"{obj.display_name} ({obj.account_id})"


class MoveProjectForm(forms.Form):
    account = AccountChoiceField(
        BillingAccount.objects.none(), label=_("Billing account"), to_field_name="account_id", empty_label=None
    )

    def __init__(self, *args, accounts, **kwargs):
        """`accounts`: a queryset of the accounts the project may move to."""
        super().__init__(*args, **kwargs)
        self.fields["account"].queryset = accounts


BANK_TRANSFER = "bank_transfer"
NEW_CARD = "new_card"


class PrepaymentForm(forms.Form):
    attempt = forms.UUIDField(widget=forms.HiddenInput)
    amount = forms.DecimalField(label=_("Amount (USD)"), max_digits=10, decimal_places=2)
    method = forms.ChoiceField(label=_("Pay with"), widget=forms.RadioSelect)

    def __init__(self, *args, account, methods, **kwargs):
        super().__init__(*args, **kwargs)
        self.account = account
        self.methods = {str(m.pk): m for m in methods}
        self.fields["amount"].validators.append(MinValueValidator(account.prepayment_amount))
        self.fields["amount"].widget.attrs["min"] = account.prepayment_amount
        self.fields["method"].choices = [
            *[(str(m.pk), str(m)) for m in methods],
            (NEW_CARD, _("A new card")),
            (BANK_TRANSFER, _("Bank transfer (pending until the money arrives)")),
        ]
        if account.primary_payment_method_id and str(account.primary_payment_method_id) in self.methods:
            self.fields["method"].initial = str(account.primary_payment_method_id)

    def clean_method(self):
        value = self.cleaned_data["method"]
        return value if value in (BANK_TRANSFER, NEW_CARD) else self.methods[value]


class RefundForm(forms.Form):
    amount = forms.DecimalField(label=_("Amount (USD)"), max_digits=10, decimal_places=2, min_value=Decimal("0.01"))
    reason = forms.CharField(
        label=_("Reason"), widget=forms.Textarea(attrs={"rows": 3}), max_length=1000, required=False
    )


class StatementPaymentForm(forms.Form):
    """Pay a past-due statement (dunning): one of the payer's cards or a new one (`CardForm`)."""

    attempt = forms.UUIDField(widget=forms.HiddenInput)
    method = forms.ChoiceField(label=_("Pay with"), widget=forms.RadioSelect)
    make_primary = forms.BooleanField(
        label=_("If the payment succeeds, make this card the account's primary payment method"),
        required=False,
        initial=True,
    )

    def __init__(self, *args, methods, **kwargs):
        super().__init__(*args, **kwargs)
        self.methods = {str(m.pk): m for m in methods}
        self.fields["method"].choices = [*[(str(m.pk), str(m)) for m in methods], (NEW_CARD, _("A new card"))]
        self.fields["method"].initial = NEW_CARD

    def clean_method(self):
        value = self.cleaned_data["method"]
        return value if value == NEW_CARD else self.methods[value]


class RedeemCodeForm(forms.Form):
    """A promotional code as the person typed it (billing.promotions.normalize makes it the stored form)."""

    code = forms.CharField(
        label=_("Promotional code"),
        max_length=64,
        widget=forms.TextInput(attrs={"autocomplete": "off", "autocapitalize": "characters", "spellcheck": "false"}),
    )
