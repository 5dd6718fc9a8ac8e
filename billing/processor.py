"""The payment-processor interface and the built-in test processor (SPEC §8).

Card numbers reach `tokenize_card` and go no further: the console keeps only the returned token,
brand, last 4 and expiry. Another processor is plugged in with settings.PAYMENT_PROCESSOR.
"""

import secrets
from dataclasses import dataclass
from functools import cache

from django.conf import settings
from django.utils.module_loading import import_string
from django.utils.translation import gettext_lazy as _


@dataclass(frozen=True)
class CardToken:
    token: str
    brand: str
    last4: str


class PaymentError(Exception):
    """The processor refused; `reason` is translated and safe to show, `code` is stable."""

    def __init__(self, code: str, reason):
        super().__init__(code)
        self.code = code
        self.reason = reason


DECLINES = {
    "4000000000000002": ("card_declined", _("Your card was declined. Try another card or contact your bank.")),
    "4000000000009995": ("insufficient_funds", _("Your card was declined for insufficient funds.")),
    "4000000000000119": ("processing_error", _("The card could not be processed. Try again in a few minutes.")),
}


class TestProcessor:
    """Deterministic by card number, like a card processor's test mode.

    4242 4242 4242 4242 succeeds; the numbers in DECLINES fail as named. Verification (at
    tokenisation) applies the same rules, so a declined card cannot be added.
    """

    def tokenize_card(self, *, number: str, exp_month: int, exp_year: int, cvc: str, brand: str) -> CardToken:
        if number in DECLINES:
            raise PaymentError(*DECLINES[number])
        # A token derived from the number would let it be recovered; a random one cannot.
        return CardToken(token=f"tok_test_{secrets.token_hex(12)}", brand=brand, last4=number[-4:])


@cache
def get_processor():
    return import_string(settings.PAYMENT_PROCESSOR)()
