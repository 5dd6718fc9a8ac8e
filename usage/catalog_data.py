"""The catalog seeded by migration 0002, from facts.md (late-2025 public figures, USD per 1M
tokens). Staff edit it in the admin afterwards; a new price is a new version, never an edit.

Audio input (and cached audio input) is priced on its own for the models in AUDIO; migration 0004
added those columns and filled them in for the price rows that existed then.
"""

from datetime import UTC, datetime
from decimal import Decimal as D

EFFECTIVE_FROM = datetime(2025, 1, 1, tzinfo=UTC)
LONG_PROMPT = 200_000

# model id: (name, free tier, context window, long-prompt threshold, prices)
# prices: input, output, cached input, cache storage, long input, long output, long cached input
MODELS = {
    "gemini-2.5-pro": (
        "Gemini 2.5 Pro", True, 1_048_576, LONG_PROMPT,
        (D("1.25"), D("10.00"), D("0.125"), D("4.50"), D("2.50"), D("15.00"), D("0.25")),
    ),
    "gemini-2.5-flash": (
        "Gemini 2.5 Flash", True, 1_048_576, None, (D("0.30"), D("2.50"), D("0.03"), D("1.00"), None, None, None),
    ),
    "gemini-2.5-flash-lite": (
        "Gemini 2.5 Flash-Lite", True, 1_048_576, None, (D("0.10"), D("0.40"), D("0.01"), D("1.00"), None, None, None),
    ),
    "gemini-2.0-flash": (
        "Gemini 2.0 Flash", True, 1_048_576, None, (D("0.10"), D("0.40"), D("0.025"), D("1.00"), None, None, None),
    ),
    "gemini-2.0-flash-lite": (
        "Gemini 2.0 Flash-Lite", True, 1_048_576, None, (D("0.075"), D("0.30"), None, None, None, None, None),
    ),
    "gemini-embedding-001": (
        "Gemini Embedding", True, 2_048, None, (D("0.15"), None, None, None, None, None, None),
    ),
}

# model id: (audio input, cached audio input), USD per 1M tokens. Other models take no audio tokens.
AUDIO = {
    "gemini-2.5-flash": (D("1.00"), D("0.10")),
    "gemini-2.5-flash-lite": (D("0.30"), D("0.03")),
    "gemini-2.0-flash": (D("0.70"), D("0.175")),
}

# model id: {tier: (RPM, TPM, RPD)}; None = no published limit.
RATE_LIMITS = {
    "gemini-2.5-pro": {
        "free": (5, 250_000, 100), "tier_1": (150, 2_000_000, 10_000),
        "tier_2": (1_000, 5_000_000, 50_000), "tier_3": (2_000, 8_000_000, None),
    },
    "gemini-2.5-flash": {
        "free": (10, 250_000, 250), "tier_1": (1_000, 1_000_000, 10_000),
        "tier_2": (2_000, 3_000_000, 100_000), "tier_3": (10_000, 8_000_000, None),
    },
    "gemini-2.5-flash-lite": {
        "free": (15, 250_000, 1_000), "tier_1": (4_000, 4_000_000, None),
        "tier_2": (10_000, 10_000_000, None), "tier_3": (30_000, 30_000_000, None),
    },
    "gemini-2.0-flash": {
        "free": (15, 1_000_000, 200), "tier_1": (2_000, 4_000_000, None),
        "tier_2": (10_000, 10_000_000, None), "tier_3": (30_000, 30_000_000, None),
    },
    "gemini-2.0-flash-lite": {
        "free": (30, 1_000_000, 200), "tier_1": (4_000, 4_000_000, None),
        "tier_2": (20_000, 10_000_000, None), "tier_3": (30_000, 30_000_000, None),
    },
    "gemini-embedding-001": {
        "free": (100, 30_000, 1_000), "tier_1": (3_000, 1_000_000, None),
        "tier_2": (5_000, 5_000_000, None), "tier_3": (10_000, 10_000_000, None),
    },
}

SPEND_LIMITS = {"tier_1": D("10"), "tier_2": D("50"), "tier_3": D("200")}


def load(CatalogModel, Price, RateLimit, SpendLimit):
    """Insert what is missing; never overwrite what staff changed.

    Migration 0002 runs this with a Price that has no audio columns yet: 0004 fills them in.
    """
    has_audio = any(field.name == "audio_input" for field in Price._meta.get_fields())
    for model_id, (name, free, context, threshold, prices) in MODELS.items():
        model, _ = CatalogModel.objects.get_or_create(
            model_id=model_id,
            defaults={
                "display_name": name,
                "free_tier_available": free,
                "context_window": context,
                "long_prompt_threshold": threshold,
            },
        )
        fields = ["input", "output", "cached_input", "cache_storage", "long_input", "long_output", "long_cached_input"]
        price = dict(zip(fields, prices, strict=True))
        if has_audio and model_id in AUDIO:
            price["audio_input"], price["cached_audio_input"] = AUDIO[model_id]
        Price.objects.get_or_create(model=model, effective_from=EFFECTIVE_FROM, defaults=price)
        for tier, (rpm, tpm, rpd) in RATE_LIMITS[model_id].items():
            RateLimit.objects.get_or_create(tier=tier, model=model, defaults={"rpm": rpm, "tpm": tpm, "rpd": rpd})
    for tier, amount in SPEND_LIMITS.items():
        SpendLimit.objects.get_or_create(tier=tier, defaults={"usd_per_10_minutes": amount})


def fill_audio_prices(Price):
    """Set the audio prices of AUDIO on the price rows of those models that have none (migration 0004)."""
    for model_id, (audio_input, cached_audio_input) in AUDIO.items():
        Price.objects.filter(model_id=model_id, audio_input__isnull=True).update(
            audio_input=audio_input, cached_audio_input=cached_audio_input
        )
