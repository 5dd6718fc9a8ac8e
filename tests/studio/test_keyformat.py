import hashlib
import hmac

import pytest

from studio import keyformat


def test_generate_has_prefix_length_and_valid_checksum():
    raw = keyformat.generate()

    assert raw.startswith("stc_")
    assert len(raw) == 42
    assert keyformat.is_well_formed(raw)


def test_generate_gives_distinct_keys():
    assert len({keyformat.generate() for _ in range(200)}) == 200


@pytest.mark.parametrize("position", [4, 20, 35, 41])
def test_is_well_formed_rejects_a_single_typo(position):
    raw = keyformat.generate()
    replacement = "A" if raw[position] != "A" else "B"
    typo = raw[:position] + replacement + raw[position + 1 :]

    assert not keyformat.is_well_formed(typo)


@pytest.mark.parametrize(
    "raw",
    ["", "stc_", "sk_" + "a" * 39, "stc_" + "a" * 37, "stc_" + "a" * 39, "stc_" + "-" * 38, None, 42],
)
def test_is_well_formed_rejects_wrong_shapes(raw):
    assert not keyformat.is_well_formed(raw)


def test_hash_key_is_hmac_sha256_with_the_pepper(settings):
    settings.API_KEY_PEPPER = "pepper-one"
    raw = keyformat.generate()

    expected = hmac.new(b"pepper-one", raw.encode(), hashlib.sha256).hexdigest()
    assert keyformat.hash_key(raw) == expected
    settings.API_KEY_PEPPER = "pepper-two"
    assert keyformat.hash_key(raw) != expected


def test_visible_parts():
    raw = "stc_" + "Abcdefgh" + "x" * 24 + "123456"

    assert keyformat.visible_prefix(raw) == "stc_Abcdefgh"
    assert keyformat.last_four(raw) == "3456"
