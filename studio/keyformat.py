"""The API key format: a recognisable prefix, a random body and a checksum.

    stc_<32 base62 chars of randomness><6 base62 chars of CRC32 over prefix+body>

The prefix lets secret scanners and support recognise a leaked key; the checksum rejects a
mistyped or made-up key without a database query. Only a keyed hash of the whole key is stored
(HMAC-SHA256 with settings.API_KEY_PEPPER), so a copy of the database reveals no usable key.
"""

import hashlib
import hmac
import secrets
import zlib

from django.conf import settings

PREFIX = "stc_"
BODY_LENGTH = 32
CHECKSUM_LENGTH = 6
KEY_LENGTH = len(PREFIX) + BODY_LENGTH + CHECKSUM_LENGTH
# What the console shows of a key: the prefix plus the first characters of the body.
VISIBLE_PREFIX_LENGTH = len(PREFIX) + 8
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, remainder = divmod(number, 62)
        chars.append(ALPHABET[remainder])
    return "".join(reversed(chars))


def _checksum(text: str) -> str:
    return _base62(zlib.crc32(text.encode("ascii")), CHECKSUM_LENGTH)


def generate() -> str:
    body = "".join(secrets.choice(ALPHABET) for _ in range(BODY_LENGTH))
    return PREFIX + body + _checksum(PREFIX + body)


def is_well_formed(raw: str) -> bool:
    """True when `raw` has our shape and a valid checksum: cheap, no database."""
    if not isinstance(raw, str) or len(raw) != KEY_LENGTH or not raw.startswith(PREFIX):
        return False
    if any(char not in ALPHABET for char in raw[len(PREFIX) :]):
        return False
    head, checksum = raw[:-CHECKSUM_LENGTH], raw[-CHECKSUM_LENGTH:]
    return hmac.compare_digest(_checksum(head), checksum)


def hash_key(raw: str) -> str:
    return hmac.new(settings.API_KEY_PEPPER.encode(), raw.encode(), hashlib.sha256).hexdigest()


def visible_prefix(raw: str) -> str:
    return raw[:VISIBLE_PREFIX_LENGTH]


def last_four(raw: str) -> str:
    return raw[-4:]
