"""Money: Decimal only, USD, round half up.

- Rating (one usage event, usage/rating.py): each token class of an event is rounded half-up to the
  nano-dollar (a single output token can cost USD 0.0000004); the event's cost is the sum of its
  rounded classes, so the breakdown always adds up. Rating does this in integer nano-dollars, not
  Decimal (ingestion rates every event), and gives the same amounts as `round_rating` would.
- Ledger lines keep 6 decimal places: `round_money` rounds to the micro-dollar, once per line.
- Amounts shown to people are rounded to cents by `to_cents`, for display only.
"""

from decimal import ROUND_HALF_UP, Decimal

CURRENCY = "USD"
PLACES = Decimal("0.000001")
RATING_PLACES = Decimal("0.000000001")
CENTS = Decimal("0.01")
ZERO = Decimal("0")


def round_money(amount) -> Decimal:
    return Decimal(amount).quantize(PLACES, rounding=ROUND_HALF_UP)


def round_rating(amount) -> Decimal:
    return Decimal(amount).quantize(RATING_PLACES, rounding=ROUND_HALF_UP)


def to_cents(amount) -> Decimal:
    return Decimal(amount).quantize(CENTS, rounding=ROUND_HALF_UP)
