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

Each class is rounded half-up to the nano-dollar (as billing.money.round_rating would); the cost is their sum. The
arithmetic is in whole nano-dollars (integers, so no intermediate rounding): a price version is turned once into a
Tariff, nano-dollars per million units, and a class costs units × that × the batch factor / 1,000,000, rounded
half-up. Ingestion rates every event, and Decimal arithmetic cost it several times more; the USD amounts are Decimal
properties. Prices and quantities are never negative (rounding half-up is for those).
"""

from decimal import Decimal
from typing import NamedTuple

from billing.money import RATING_PLACES

NANOS_PER_USD = 1_000_000_000
MILLION = 1_000_000
ZERO = Decimal("0")


def usd(nanos: int) -> Decimal:
    """Whole nano-dollars as USD, at the rating's 9 places."""
    return Decimal(nanos).scaleb(-9).quantize(RATING_PLACES) if nanos else ZERO


def micro_usd(nanos: int) -> int:
    """Nano-dollars as whole micro-dollars, rounded up: what the limiter's spend counters count (admission's estimate,
    settled usage, a month's pending usage), so that no fraction is dropped."""
    return -(-nanos // 1000)


def _per_million(price) -> int:
    """USD per 1M units (a Decimal, or None: no such price) as whole nano-dollars per 1M units."""
    if price is None:
        return 0
    nanos = Decimal(price) * NANOS_PER_USD
    if nanos != nanos.to_integral_value():
        raise ValueError(f"a price of {price} USD per 1M is not a whole number of nano-dollars")
    return int(nanos)


CLASSES = ("input", "output", "cached_input", "audio_input", "cached_audio_input")  # Price's fields, in Prices order


class Prices(NamedTuple):
    """Nano-dollars per 1M tokens of each class of a request, at one rate (standard or long prompt)."""

    input: int
    output: int
    cached: int
    audio: int
    cached_audio: int


class Tariff(NamedTuple):
    """A price version of a model, ready to rate with: integers only (usage.catalog keeps one per version)."""

    standard: Prices
    long: Prices  # the long-prompt prices, each falling back to the standard one where the model has none
    storage: int  # nano-dollars per 1M token-hours
    threshold: int | None  # the model's long-prompt threshold (tokens): above it, the long prices
    batch: tuple[int, int]  # the model's batch factor, as numerator and denominator


def tariff(price, model) -> Tariff:
    def long(name: str) -> int:
        value = getattr(price, f"long_{name}")
        return _per_million(getattr(price, name) if value is None else value)

    return Tariff(
        standard=Prices(*(_per_million(getattr(price, name)) for name in CLASSES)),
        long=Prices(*(long(name) for name in CLASSES)),
        storage=_per_million(price.cache_storage),
        threshold=model.long_prompt_threshold,
        batch=Decimal(model.batch_price_factor).as_integer_ratio(),
    )


class Rated(NamedTuple):  # a tuple: ingestion rates every event, and a frozen dataclass costs more to build
    billable: bool
    counts_against_quota: bool
    long_prompt: bool = False  # rated at the model's long-prompt prices
    # Whole nano-dollars, by class.
    input_nanos: int = 0
    output_nanos: int = 0
    cached_nanos: int = 0
    storage_nanos: int = 0
    audio_nanos: int = 0
    cached_audio_nanos: int = 0

    @property
    def cost_nanos(self) -> int:
        return (
            self.input_nanos
            + self.output_nanos
            + self.cached_nanos
            + self.storage_nanos
            + self.audio_nanos
            + self.cached_audio_nanos
        )

    # In USD.
    cost = property(lambda self: usd(self.cost_nanos))
    cost_input = property(lambda self: usd(self.input_nanos))
    cost_output = property(lambda self: usd(self.output_nanos))
    cost_cached = property(lambda self: usd(self.cached_nanos))
    cost_storage = property(lambda self: usd(self.storage_nanos))
    cost_audio = property(lambda self: usd(self.audio_nanos))
    cost_cached_audio = property(lambda self: usd(self.cached_audio_nanos))


NOT_COUNTED = Rated(False, False)
COUNTED_FREE = Rated(False, True)


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
    prices: Tariff | None = None,
) -> Rated:
    """`prices`: tariff(price, model), when the caller keeps it (ingestion: usage.catalog); made here otherwise."""
    if kind == "count_tokens":
        return NOT_COUNTED
    counted = kind != "cache_storage"
    if status_code >= 400 or not paid_project or (studio and not studio_key_linked):
        return COUNTED_FREE if counted else NOT_COUNTED
    if prices is None:
        prices = tariff(price, model)
    long = prices.threshold is not None and input_tokens > prices.threshold
    rates = prices.long if long else prices.standard
    numerator, denominator = prices.batch if kind == "batch" else (1, 1)
    uncached_audio = audio_input_tokens - cached_audio_tokens
    storage = 0
    if cache_token_hours:
        hours, per = Decimal(cache_token_hours).as_integer_ratio()
        storage = _cost(hours * prices.storage, per * MILLION)
    return Rated(
        True,
        counted,
        long,
        _cost((input_tokens - cached_tokens - uncached_audio) * rates.input * numerator, denominator * MILLION),
        _cost(output_tokens * rates.output * numerator, denominator * MILLION),
        _cost((cached_tokens - cached_audio_tokens) * rates.cached, MILLION),
        storage,
        _cost(uncached_audio * rates.audio * numerator, denominator * MILLION),
        _cost(cached_audio_tokens * rates.cached_audio, MILLION),
    )


def _cost(numerator: int, denominator: int) -> int:
    """numerator / denominator nano-dollars (both positive or zero), rounded half-up to a whole one."""
    return (2 * numerator + denominator) // (2 * denominator)
