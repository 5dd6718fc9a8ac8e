"""Costs for cases taken from facts.md, exact to the nano-dollar."""

import math
from decimal import Decimal as D
from fractions import Fraction

import pytest
from django.core.exceptions import ValidationError
from hypothesis import given, settings
from hypothesis import strategies as st

from usage.catalog_data import AUDIO, MODELS
from usage.models import CatalogModel, Price
from usage.rating import micro_usd, rate


class Model:
    def __init__(self, model_id):
        self.long_prompt_threshold = MODELS[model_id][3]
        self.batch_price_factor = D("0.5")


class PriceRow:
    def __init__(self, model_id):
        names = ["input", "output", "cached_input", "cache_storage", "long_input", "long_output", "long_cached_input"]
        for name, value in zip(names, MODELS[model_id][4], strict=True):
            setattr(self, name, value)
        self.audio_input, self.cached_audio_input = AUDIO.get(model_id, (None, None))
        self.long_audio_input = self.long_cached_audio_input = None


def cost(
    model_id, *, kind="generate", status=200, inp=0, out=0, cached=0, hours="0", paid=True, studio=False, linked=False
):
    rated = rate(
        kind=kind,
        status_code=status,
        input_tokens=inp,
        output_tokens=out,
        cached_tokens=cached,
        cache_token_hours=D(hours),
        price=PriceRow(model_id),
        model=Model(model_id),
        paid_project=paid,
        studio=studio,
        studio_key_linked=linked,
    )
    return rated


@pytest.mark.parametrize(
    ("model_id", "inp", "out", "expected"),
    [
        ("gemini-2.5-pro", 200_000, 1_000_000, D("10.25")),  # at the 200k threshold: 1.25 and 10.00 per 1M
        ("gemini-2.5-pro", 1_000_000, 1_000_000, D("17.50")),  # above it: 2.50 and 15.00 per 1M
        ("gemini-2.5-flash", 1_000_000, 1_000_000, D("2.80")),
        ("gemini-2.5-flash-lite", 1_000_000, 1_000_000, D("0.50")),
        ("gemini-2.0-flash", 1_000_000, 1_000_000, D("0.50")),
        ("gemini-2.0-flash-lite", 1_000_000, 1_000_000, D("0.375")),
        ("gemini-embedding-001", 1_000_000, 0, D("0.15")),
    ],
)
def test_list_prices(model_id, inp, out, expected):
    assert cost(model_id, inp=inp, out=out).cost == expected


def test_long_prompt_prices_the_whole_request_above_200k():
    at_threshold = cost("gemini-2.5-pro", inp=200_000, out=1_000)
    above = cost("gemini-2.5-pro", inp=200_001, out=1_000)

    assert (at_threshold.cost_input, at_threshold.cost_output) == (D("0.25"), D("0.01"))
    assert (above.cost_input, above.cost_output) == (D("0.5000025"), D("0.015"))


def test_batch_is_half_price_on_input_and_output():
    standard = cost("gemini-2.5-flash", inp=10_000, out=2_000)
    batch = cost("gemini-2.5-flash", kind="batch", inp=10_000, out=2_000)

    assert (standard.cost_input, standard.cost_output) == (D("0.003"), D("0.005"))
    assert (batch.cost_input, batch.cost_output) == (D("0.0015"), D("0.0025"))


def test_cached_tokens_are_part_of_the_input_and_have_their_own_price():
    rated = cost("gemini-2.5-flash", inp=10_000, cached=4_000)

    assert (rated.cost_input, rated.cost_cached) == (D("0.0018"), D("0.00012"))
    assert rated.cost == D("0.00192")


def test_long_prompt_cached_price_on_pro():
    rated = cost("gemini-2.5-pro", inp=300_000, cached=100_000)

    assert (rated.cost_input, rated.cost_cached) == (D("0.5"), D("0.025"))


def test_cache_storage_is_priced_per_million_token_hours():
    assert cost("gemini-2.5-pro", hours="2000000").cost_storage == D("9.00")
    assert cost("gemini-2.5-flash", hours="0.5").cost_storage == D("0.0000005")


def test_each_class_is_rounded_half_up_to_the_nano_dollar():
    one_output_token = cost("gemini-2.0-flash-lite", out=1)  # 0.30 / 1M = 0.0000003
    odd = cost("gemini-2.0-flash-lite", inp=1, out=0)  # 0.075 / 1M = 0.000000075
    half = cost("gemini-2.5-flash-lite", inp=0, cached=0, hours="0.0000005")  # 5e-13 -> 0

    assert one_output_token.cost == D("0.000000300")
    assert odd.cost == D("0.000000075")
    assert half.cost == D("0")


@pytest.mark.parametrize("status", [400, 404, 429, 500, 503])
def test_failed_requests_cost_nothing_but_count(status):
    rated = cost("gemini-2.5-pro", status=status, inp=1_000, out=1_000)

    assert (rated.billable, rated.counts_against_quota, rated.cost) == (False, True, D("0"))


def test_count_tokens_is_free_and_not_counted():
    rated = cost("gemini-2.5-pro", kind="count_tokens", inp=50_000)

    assert (rated.billable, rated.counts_against_quota, rated.cost) == (False, False, D("0"))


def test_cache_storage_is_billed_per_token_hour_but_never_counts_against_quota():
    paid = cost("gemini-2.5-pro", kind="cache_storage", hours="2000000")
    free = cost("gemini-2.5-pro", kind="cache_storage", hours="2000000", paid=False)
    studio_unlinked = cost("gemini-2.5-flash", kind="cache_storage", hours="3", studio=True)

    assert (paid.billable, paid.counts_against_quota, paid.cost_storage, paid.cost) == (True, False, D("9"), D("9"))
    assert (free.billable, free.counts_against_quota, free.cost) == (False, False, D("0"))
    assert (studio_unlinked.billable, studio_unlinked.counts_against_quota) == (False, False)


def test_free_tier_projects_are_not_billed():
    rated = cost("gemini-2.5-flash", inp=1_000, out=1_000, paid=False)

    assert (rated.billable, rated.counts_against_quota, rated.cost) == (False, True, D("0"))


def test_studio_usage_is_free_unless_a_paid_key_is_linked():
    free = cost("gemini-2.5-flash", inp=1_000, studio=True, linked=False)
    billed = cost("gemini-2.5-flash", inp=1_000, studio=True, linked=True)

    assert (free.billable, free.cost) == (False, D("0"))
    assert (billed.billable, billed.cost) == (True, D("0.0003"))


def audio_cost(model_id, *, price=None, model=None, kind="generate", inp=0, cached=0, audio=0, cached_audio=0, out=0):
    return rate(
        kind=kind,
        status_code=200,
        input_tokens=inp,
        output_tokens=out,
        cached_tokens=cached,
        cache_token_hours=D(0),
        audio_input_tokens=audio,
        cached_audio_tokens=cached_audio,
        price=price or PriceRow(model_id),
        model=model or Model(model_id),
        paid_project=True,
        studio=False,
        studio_key_linked=False,
    )


@pytest.mark.parametrize(
    ("model_id", "text", "audio"),
    [
        # 6,000 text and 4,000 audio tokens of a 10,000-token prompt, at facts.md's prices per 1M
        ("gemini-2.5-flash", D("0.0018"), D("0.004")),  # 0.30 text, 1.00 audio
        ("gemini-2.5-flash-lite", D("0.0006"), D("0.0012")),  # 0.10 text, 0.30 audio
        ("gemini-2.0-flash", D("0.0006"), D("0.0028")),  # 0.10 text, 0.70 audio
    ],
)
def test_audio_is_part_of_the_input_and_priced_at_the_audio_rate(model_id, text, audio):
    rated = audio_cost(model_id, inp=10_000, audio=4_000)

    assert (rated.cost_input, rated.cost_audio, rated.cost_cached, rated.cost_cached_audio) == (text, audio, 0, 0)
    assert rated.cost == text + audio


@pytest.mark.parametrize(
    ("model_id", "one_audio_token", "one_cached_audio_token"),
    [
        ("gemini-2.5-flash", D("0.000001000"), D("0.000000100")),
        ("gemini-2.5-flash-lite", D("0.000000300"), D("0.000000030")),
        ("gemini-2.0-flash", D("0.000000700"), D("0.000000175")),
    ],
)
def test_one_audio_token_is_exact_to_the_nano_dollar(model_id, one_audio_token, one_cached_audio_token):
    audio = audio_cost(model_id, inp=1, audio=1)
    cached = audio_cost(model_id, inp=1, cached=1, audio=1, cached_audio=1)

    assert (audio.cost_input, audio.cost_audio, audio.cost) == (0, one_audio_token, one_audio_token)
    assert (cached.cost_cached, cached.cost_cached_audio, cached.cost) == (
        0,
        one_cached_audio_token,
        one_cached_audio_token,
    )


@pytest.mark.parametrize(
    ("model_id", "classes", "total"),
    [
        # 10,000 input: 4,000 cached (1,000 of them audio), 5,000 audio (4,000 not cached), so 2,000
        # uncached text, 4,000 uncached audio, 3,000 cached text and 1,000 cached audio tokens
        ("gemini-2.5-flash", (D("0.0006"), D("0.004"), D("0.00009"), D("0.0001")), D("0.00479")),
        ("gemini-2.5-flash-lite", (D("0.0002"), D("0.0012"), D("0.00003"), D("0.00003")), D("0.00146")),
        ("gemini-2.0-flash", (D("0.0002"), D("0.0028"), D("0.000075"), D("0.000175")), D("0.00325")),
    ],
)
def test_cached_audio_has_its_own_price(model_id, classes, total):
    rated = audio_cost(model_id, inp=10_000, cached=4_000, audio=5_000, cached_audio=1_000)

    assert (rated.cost_input, rated.cost_audio, rated.cost_cached, rated.cost_cached_audio) == classes
    assert rated.cost == total


def test_batch_halves_audio_input_like_text_input_but_not_cached_tokens():
    rated = audio_cost(
        "gemini-2.5-flash", kind="batch", inp=10_000, cached=2_000, audio=4_000, cached_audio=1_000, out=2_000
    )

    assert (rated.cost_input, rated.cost_audio, rated.cost_cached, rated.cost_cached_audio, rated.cost_output) == (
        D("0.00075"),  # 5,000 text × 0.30 × 50 %
        D("0.0015"),  # 3,000 audio × 1.00 × 50 %
        D("0.00003"),  # 1,000 cached text × 0.03
        D("0.0001"),  # 1,000 cached audio × 0.10
        D("0.0025"),  # 2,000 output × 2.50 × 50 %
    )
    assert rated.cost == D("0.00488")


def test_a_long_prompt_prices_audio_at_the_long_audio_rates_for_the_whole_request():
    model = Model("gemini-2.5-flash")
    model.long_prompt_threshold = 200_000  # no model of facts.md has both: a made-up catalog row
    price = PriceRow("gemini-2.5-flash")
    price.long_input, price.long_cached_input = D("0.60"), D("0.06")
    price.long_audio_input, price.long_cached_audio_input = D("2.00"), D("0.20")

    at = audio_cost("gemini-2.5-flash", price=price, model=model, inp=200_000, audio=100_000)
    above = audio_cost(
        "gemini-2.5-flash", price=price, model=model, inp=200_001, cached=20_000, audio=100_000, cached_audio=10_000
    )
    price.long_audio_input = price.long_cached_audio_input = None
    no_long_audio_price = audio_cost("gemini-2.5-flash", price=price, model=model, inp=200_001, audio=100_000)

    assert (at.cost_input, at.cost_audio) == (D("0.03"), D("0.1"))
    assert (above.cost_input, above.cost_audio, above.cost_cached, above.cost_cached_audio) == (
        D("0.0540006"),  # 90,001 text × 0.60
        D("0.18"),  # 90,000 audio × 2.00
        D("0.0006"),  # 10,000 cached text × 0.06
        D("0.002"),  # 10,000 cached audio × 0.20
    )
    # like text: without a long-prompt price the standard one applies
    assert (no_long_audio_price.cost_input, no_long_audio_price.cost_audio) == (D("0.0600006"), D("0.1"))


def test_free_tier_and_failed_audio_requests_cost_nothing():
    common = {
        "kind": "generate",
        "input_tokens": 10_000,
        "output_tokens": 0,
        "cached_tokens": 0,
        "cache_token_hours": D(0),
        "audio_input_tokens": 10_000,
        "cached_audio_tokens": 0,
        "price": PriceRow("gemini-2.5-flash"),
        "model": Model("gemini-2.5-flash"),
        "studio": False,
        "studio_key_linked": False,
    }
    free = rate(**common, status_code=200, paid_project=False)
    failed = rate(**common, status_code=500, paid_project=True)

    assert (free.billable, free.counts_against_quota, free.cost) == (False, True, 0)
    assert (failed.billable, failed.counts_against_quota, failed.cost) == (False, True, 0)


# Whole nano-dollars (usage.rating): each class must equal the exact rational product rounded half-up: the integer
# arithmetic rounds nothing on the way.
def exact_nanos(units, per_million, factor=1) -> int:
    value = Fraction(units) * Fraction(per_million or 0) * Fraction(factor) * 1000  # nano-dollars: × 1e9 / 1e6
    return math.floor(value + Fraction(1, 2))


prices = st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False, allow_infinity=False)
maybe = st.none() | prices  # a price the model may not have
factors = st.decimals(min_value=D("0.001"), max_value=D("9.999"), places=3, allow_nan=False, allow_infinity=False)
CLASS_PRICES = ("input", "output", "cached_input", "audio_input", "cached_audio_input")


@settings(max_examples=400, deadline=None)
@given(
    inp=st.integers(0, 10_000_000),
    out=st.integers(0, 10_000_000),
    data=st.data(),
    standard=st.tuples(*[maybe] * 5),
    long=st.tuples(*[maybe] * 5),
    threshold=st.none() | st.integers(0, 10_000_000),
    factor=factors,
    batch=st.booleans(),
)
def test_each_class_is_the_exact_product_rounded_half_up_to_the_nano_dollar(
    inp, out, data, standard, long, threshold, factor, batch
):
    cached = data.draw(st.integers(0, inp))
    audio = data.draw(st.integers(0, inp))
    cached_audio = data.draw(st.integers(0, min(cached, audio)))
    if audio - cached_audio > inp - cached:  # the nesting ingestion checks
        audio = cached_audio + (inp - cached)
    model = Model("gemini-2.5-flash")
    model.batch_price_factor, model.long_prompt_threshold = factor, threshold
    price = PriceRow("gemini-2.5-flash")
    for name, value, long_value in zip(CLASS_PRICES, standard, long, strict=True):
        setattr(price, name, value)
        setattr(price, f"long_{name}", long_value)
    above = threshold is not None and inp > threshold
    # Above the threshold each class takes its long price where the model has one, else the standard one.
    paid = [lv if above and lv is not None else v for v, lv in zip(standard, long, strict=True)]
    multiplier = factor if batch else 1

    rated = audio_cost(
        "gemini-2.5-flash",
        price=price,
        model=model,
        kind="batch" if batch else "generate",
        inp=inp,
        cached=cached,
        audio=audio,
        cached_audio=cached_audio,
        out=out,
    )

    assert rated.long_prompt is above
    assert (
        rated.input_nanos,
        rated.output_nanos,
        rated.cached_nanos,
        rated.audio_nanos,
        rated.cached_audio_nanos,
    ) == (
        exact_nanos(inp - cached - (audio - cached_audio), paid[0], multiplier),
        exact_nanos(out, paid[1], multiplier),
        exact_nanos(cached - cached_audio, paid[2]),
        exact_nanos(audio - cached_audio, paid[3], multiplier),
        exact_nanos(cached_audio, paid[4]),
    )
    assert rated.cost == (D(rated.cost_nanos) / 1_000_000_000)


@settings(max_examples=200, deadline=None)
@given(
    hours=st.decimals(min_value=D("0.000001"), max_value=D("1e12"), places=6, allow_nan=False, allow_infinity=False),
    per_million=prices,
)
def test_cache_storage_is_the_exact_product_rounded_half_up(hours, per_million):
    price = PriceRow("gemini-2.5-flash")
    price.cache_storage = per_million

    rated = rate(
        kind="cache_storage",
        status_code=200,
        input_tokens=0,
        output_tokens=0,
        cached_tokens=0,
        cache_token_hours=hours,
        price=price,
        model=Model("gemini-2.5-flash"),
        paid_project=True,
        studio=False,
        studio_key_linked=False,
    )

    assert (rated.storage_nanos, rated.cost_nanos, rated.counts_against_quota) == (
        exact_nanos(hours, per_million),
        exact_nanos(hours, per_million),
        False,
    )


@pytest.mark.parametrize(
    ("tokens", "per_million", "nanos"),
    [
        (1, D("0.0005"), 1),  # 0.5 nano-dollars: half rounds up
        (1, D("0.000499"), 0),  # 0.499: down
        (3, D("0.000500"), 2),  # 1.5: up
        (1, D("0.0015"), 2),  # 1.5: up
        (7, D("0.000001"), 0),  # 0.007: down
    ],
)
def test_half_a_nano_dollar_rounds_up(tokens, per_million, nanos):
    price = PriceRow("gemini-2.5-flash")
    price.input = per_million

    assert audio_cost("gemini-2.5-flash", price=price, inp=tokens).input_nanos == nanos


@pytest.mark.parametrize(
    ("model", "field"),
    [
        (Price, "input"),
        (Price, "long_cached_audio_input"),
        (Price, "cache_storage"),
        (CatalogModel, "batch_price_factor"),
    ],
)
def test_a_negative_price_or_batch_factor_is_refused(model, field):
    """Rating rounds half-up for amounts of 0 or more, and the pending lines leave out what costs 0 or less: a
    negative price would be billed differently by the two ways a batch's lines are summed."""
    with pytest.raises(ValidationError) as refused:
        model._meta.get_field(field).clean(D("-0.1"), None)

    assert refused.value.messages == ["Ensure this value is greater than or equal to 0."]
    assert model._meta.get_field(field).clean(D("0"), None) == D("0")


@pytest.mark.parametrize(("nanos", "micro"), [(0, 0), (1, 1), (999, 1), (1000, 1), (1001, 2), (2_500_000, 2500)])
def test_the_spend_counters_count_nano_dollars_rounded_up_to_the_micro_dollar(nanos, micro):
    assert micro_usd(nanos) == micro
