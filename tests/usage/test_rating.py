"""Costs for cases taken from facts.md, exact to the nano-dollar."""

from decimal import Decimal as D

import pytest

from usage.catalog_data import MODELS
from usage.rating import rate


class Model:
    def __init__(self, model_id):
        self.long_prompt_threshold = MODELS[model_id][3]
        self.batch_price_factor = D("0.5")


class PriceRow:
    def __init__(self, model_id):
        names = ["input", "output", "cached_input", "cache_storage", "long_input", "long_output", "long_cached_input"]
        for name, value in zip(names, MODELS[model_id][4], strict=True):
            setattr(self, name, value)


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
