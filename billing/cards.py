"""Card input checks that need no processor: Luhn checksum, brand, expiry, CVC."""

import re
from datetime import date

BRANDS = [
    # (brand, prefix pattern, allowed lengths, CVC length)
    ("amex", r"3[47]", (15,), 4),
    ("visa", r"4", (13, 16, 19), 3),
    ("mastercard", r"5[1-5]|2(2[2-9][1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)", (16,), 3),
    ("jcb", r"35(2[89]|[3-8]\d)", (16, 17, 18, 19), 3),
    ("discover", r"6011|65|64[4-9]", (16, 19), 3),
    ("diners", r"3(0[0-5]|[689])", (14, 16, 19), 3),
]
BRAND_NAMES = {
    "amex": "American Express",
    "visa": "Visa",
    "mastercard": "Mastercard",
    "jcb": "JCB",
    "discover": "Discover",
    "diners": "Diners Club",
}


def digits_only(number: str) -> str:
    return re.sub(r"[\s-]", "", number or "")


def luhn_valid(number: str) -> bool:
    if not number.isdigit() or not 12 <= len(number) <= 19:
        return False
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = int(char)
        if index % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def brand_of(number: str):
    """(brand, cvc length) for a card number, or None for an unknown or wrong-length number."""
    for brand, pattern, lengths, cvc_length in BRANDS:
        if re.match(pattern, number) and len(number) in lengths:
            return brand, cvc_length
    return None


def expiry_in_future(month: int, year: int, today: date) -> bool:
    """A card is valid through the last day of its expiry month."""
    return (year, month) >= (today.year, today.month)
