"""`{{ amount|usd }}`: every amount of money in a template, in one format.

Studio is the lowest layer, so billing and usage templates load it too (`{% load money %}`).
"""

from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation

from django import template
from django.utils.formats import number_format
from django.utils.translation import pgettext

register = template.Library()

CENTS = Decimal("0.01")
# Room for any amount to the cent (the default context keeps 28 digits).
_WIDE = Context(prec=60)


@register.filter(is_safe=False)
def usd(amount) -> str:
    """An amount in US dollars as the console shows it, e.g. "USD 1,234.57" or "USD -0.50".

    Rounded half-up to the cent once, here (the ledger keeps micro-dollars; `billing.money`),
    with the language's separators and a translatable pattern: English and Japanese both say
    "USD 1,234.57" (the Japanese catalogue writes USD before the amount everywhere). A negative
    amount keeps its sign on the number; one that rounds to zero has none. None and values that
    are not numbers show nothing, as template filters do.
    """
    if amount is None or isinstance(amount, bool):
        return ""
    try:
        cents = Decimal(str(amount)).quantize(CENTS, rounding=ROUND_HALF_UP, context=_WIDE)
    except (InvalidOperation, ValueError):
        return ""
    if not cents.is_finite():
        return ""
    if cents.is_zero():
        cents = abs(cents)  # no "-0.00"
    digits = number_format(cents, decimal_pos=2, use_l10n=True, force_grouping=True)
    return pgettext("an amount in US dollars", "USD %(amount)s") % {"amount": digits}
