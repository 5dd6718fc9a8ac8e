"""Rating (R23): the exact cost of one usage event, by token class. Pure: no database.

Rules, in order:
- `count_tokens` is free and does not count against quota;
- `cache_storage` (token-hours, no tokens) is not a request: it never counts against quota, and is
  priced by the rules below like any other usage;
- a failed request (HTTP 400 and 500 families) is free but counts against quota;
- usage of a project that is not on a paid tier is free;
- studio usage is free unless it came through a paid API key linked to the studio;
- otherwise four classes of input, each at its own price: text input not read from a cache
  (input less cached less uncached audio) at the input price, audio not read from a cache at the
  audio input price, cached text at the cached input price, cached audio at the cached audio input
  price; output at the output price, cache storage per 1M token-hours. The long-prompt prices (of
  text and audio alike, where the model has them) apply to the whole request when the prompt,
  audio included, exceeds the model's threshold; batch requests pay the model's batch factor
  (50 %) on input (text and audio) and output.
The caller has checked that the counts nest (cached and audio within input, cached audio within
both) and that the price has the audio prices the event needs (usage.ingest).
Each class is rounded half-up to the nano-dollar (billing.money.round_rating); the cost is their sum.
"""

from decimal import ROUND_HALF_UP, Decimal
from typing import NamedTuple

from billing.money import RATING_PLACES

MILLION = Decimal(1_000_000)
ZERO = Decimal("0")
ONE = Decimal(1)


class Rated(NamedTuple):  # a tuple: ingestion rates every event, and a frozen dataclass costs more to build
    billable: bool
    counts_against_quota: bool
    long_prompt: bool = False  # rated at the model's long-prompt prices
    cost_input: Decimal = ZERO
    cost_output: Decimal = ZERO
    cost_cached: Decimal = ZERO
    cost_storage: Decimal = ZERO
    cost_audio: Decimal = ZERO
    cost_cached_audio: Decimal = ZERO

    @property
    def cost(self) -> Decimal:
        return (
            self.cost_input
            + self.cost_output
            + self.cost_cached
            + self.cost_storage
            + self.cost_audio
            + self.cost_cached_audio
        )


def rate(
    *,
    kind: str,
    status_code: int,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int,
    cache_token_hours: Decimal,
    audio_input_tokens: int = 0,
    cached_audio_tokens: int = 0,
    price,
    model,
    paid_project: bool,
    studio: bool,
    studio_key_linked: bool,
) -> Rated:
    if kind == "count_tokens":
        return Rated(billable=False, counts_against_quota=False)
    counted = kind != "cache_storage"
    if status_code >= 400 or not paid_project or (studio and not studio_key_linked):
        return Rated(billable=False, counts_against_quota=counted)
    long = model.long_prompt_threshold is not None and input_tokens > model.long_prompt_threshold
    input_price = price.long_input if long and price.long_input is not None else price.input
    output_price = price.long_output if long and price.long_output is not None else price.output
    cached_price = price.long_cached_input if long and price.long_cached_input is not None else price.cached_input
    audio_price = price.long_audio_input if long and price.long_audio_input is not None else price.audio_input
    cached_audio_price = (
        price.long_cached_audio_input
        if long and price.long_cached_audio_input is not None
        else price.cached_audio_input
    )
    factor = model.batch_price_factor if kind == "batch" else ONE
    uncached_audio = audio_input_tokens - cached_audio_tokens
    return Rated(
        True,
        counted,
        long,
        _cost(input_tokens - cached_tokens - uncached_audio, input_price, factor),
        _cost(output_tokens, output_price, factor),
        _cost(cached_tokens - cached_audio_tokens, cached_price, ONE),
        _cost(cache_token_hours, price.cache_storage, ONE),
        _cost(uncached_audio, audio_price, factor),
        _cost(cached_audio_tokens, cached_audio_price, ONE),
    )


def _cost(tokens, per_million, multiplier) -> Decimal:
    """tokens × price per million × multiplier, rounded half-up to the nano-dollar (billing.money.round_rating)."""
    if not tokens:
        return ZERO
    return (Decimal(tokens) * (per_million or ZERO) * multiplier / MILLION).quantize(
        RATING_PLACES, rounding=ROUND_HALF_UP
    )
