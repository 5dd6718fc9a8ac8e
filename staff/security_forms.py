"""Forms of the staff second factor (staff.views.security): a code from the authenticator app or a recovery code."""

from django import forms
from django.utils.translation import gettext_lazy as _

from staff.two_factor import RECOVERY_CODE, TOTP_CODE


def _normalise(value: str) -> str:
    # Codes are read off a phone or a printout: "123 456", "ABCD-EFGH" and "abcdefgh " are all fine.
    return "".join(value.split()).replace("-", "").lower()


class VerifyForm(forms.Form):
    code = forms.CharField(
        label=_("Code"),
        max_length=20,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "spellcheck": "false", "autofocus": True}),
    )
    next = forms.CharField(required=False, widget=forms.HiddenInput)

    def clean_code(self) -> str:
        code = _normalise(self.cleaned_data["code"])
        if not (TOTP_CODE.fullmatch(code) or RECOVERY_CODE.fullmatch(code)):
            raise forms.ValidationError(
                _("Enter the 6-digit code from your authenticator app, or one of your recovery codes.")
            )
        return code


class EnrolForm(forms.Form):
    code = forms.CharField(
        label=_("6-digit code from the app"),
        max_length=20,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "spellcheck": "false"}),
    )
    next = forms.CharField(required=False, widget=forms.HiddenInput)

    def clean_code(self) -> str:
        code = _normalise(self.cleaned_data["code"])
        if not TOTP_CODE.fullmatch(code):
            raise forms.ValidationError(_("Enter the 6-digit code your authenticator app shows."))
        return code
