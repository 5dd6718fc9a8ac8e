"""Money: Decimal only, USD, one rounding rule.

Ledger amounts keep 6 decimal places (a single request can cost a fraction of a cent); the rule
is round-half-up to the micro-dollar, applied once per charge line by `round_money`. Amounts
shown to people are rounded to cents by `to_cents` for display only.
"""

from decimal import ROUND_HALF_UP, Decimal

CURRENCY = "USD"
PLACES = Decimal("0.000001")
CENTS = Decimal("0.01")
ZERO = Decimal("0")


def round_money(amount) -> Decimal:
    return Decimal(amount).quantize(PLACES, rounding=ROUND_HALF_UP)


def to_cents(amount) -> Decimal:
    return Decimal(amount).quantize(CENTS, rounding=ROUND_HALF_UP)
