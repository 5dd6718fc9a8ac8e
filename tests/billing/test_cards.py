from datetime import date

import pytest

from billing import cards
from billing.forms import CardForm


@pytest.mark.parametrize(
    ("number", "brand"),
    [
        ("4242424242424242", "visa"),
        ("5555555555554444", "mastercard"),
        ("2223003122003222", "mastercard"),
        ("378282246310005", "amex"),
        ("3530111333300000", "jcb"),
        ("6011111111111117", "discover"),
        ("36227206271667", "diners"),
    ],
)
def test_test_card_numbers_pass_luhn_and_have_their_brand(number, brand):
    assert cards.luhn_valid(number)
    assert cards.brand_of(number)[0] == brand


@pytest.mark.parametrize("number", ["4242424242424241", "1234567812345678", "42424242", "abcd"])
def test_luhn_rejects_wrong_numbers(number):
    assert not cards.luhn_valid(number)


def test_expiry_is_valid_through_the_end_of_its_month():
    today = date(2026, 11, 28)

    assert cards.expiry_in_future(11, 2026, today)
    assert not cards.expiry_in_future(10, 2026, today)
    assert cards.expiry_in_future(1, 2027, today)


def card_form(**overrides):
    data = {"number": "4242 4242 4242 4242", "exp_month": "12", "exp_year": "2030", "cvc": "123", **overrides}
    return CardForm(data, today=date(2026, 11, 28))


def test_card_form_accepts_a_valid_card_with_spaces():
    form = card_form()

    assert form.is_valid(), form.errors
    assert (form.cleaned_data["number"], form.cleaned_data["brand"]) == ("4242424242424242", "visa")


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"number": "4242 4242 4242 4241"}, "number", "This card number is not valid. Check it and try again."),
        ({"number": "4242-abcd"}, "number", "A card number has only digits."),
        ({"exp_month": "10", "exp_year": "2026"}, "exp_month", "This card has expired."),
        ({"cvc": "12"}, "cvc", "Enter the 3-digit security code from your card."),
        ({"number": "378282246310005", "cvc": "123"}, "cvc", "Enter the 4-digit security code from your card."),
        ({"cvc": ""}, "cvc", "This field is required."),
        ({"exp_year": "1999"}, "exp_year", "Select a valid choice. 1999 is not one of the available choices."),
    ],
)
def test_card_form_errors_are_per_field(overrides, field, message):
    form = card_form(**overrides)

    assert not form.is_valid()
    assert form.errors[field] == [message]


def test_card_form_never_redisplays_the_number_or_cvc():
    form = card_form(exp_month="1", exp_year="2026")
    form.is_valid()

    # A text input: autocomplete="cc-csc" is only valid there (X12), and it is never re-displayed.
    assert 'type="text"' in str(form["cvc"])
    assert 'autocomplete="cc-csc"' in str(form["cvc"])
    assert "value=" not in str(form["cvc"])
    assert "value=" not in str(form["number"])
    assert '<option value="1" selected>' in str(form["exp_month"])
