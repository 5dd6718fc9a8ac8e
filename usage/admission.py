"""quota:check (R22, X6, X9): may this request run now? Counted when admitted.

Every denial has its own stable reason. Rate-limit denials name the quota exactly as the
dashboard will (`quota_ids`), with the limit and the seconds until its window rolls.
"""

from dataclasses import dataclass
from decimal import Decimal

from django.utils import timezone

from billing.models import AccountStatus
from studio.models import ApiKey, BillingState, Tier
from usage.catalog import get_catalog
from usage.limiter import Limit, get_limiter

TIER_SUFFIX = {Tier.FREE: "FreeTier", Tier.TIER_1: "Tier1", Tier.TIER_2: "Tier2", Tier.TIER_3: "Tier3"}
MICRO = Decimal(1_000_000)


def quota_ids(tier: str) -> dict[str, str]:
    suffix = TIER_SUFFIX[tier]
    return {
        "rpm": f"GenerateRequestsPerMinutePerProjectPerModel-{suffix}",
        "tpm": f"GenerateContentInputTokensPerModelPerMinute-{suffix}",
        "rpd": f"GenerateRequestsPerDayPerProjectPerModel-{suffix}",
        "spend": f"GenerateSpendPer10MinutesPerProject-{suffix}",
    }


@dataclass(frozen=True)
class Denial:
    code: int
    status: str
    reason: str
    message: str

    def as_dict(self) -> dict:
        return {
            "allowed": False,
            "error": {"code": self.code, "status": self.status, "reason": self.reason, "message": self.message},
        }


# What admission reads of a key, its project and billing account: nothing more is loaded.
ADMISSION_FIELDS = (
    "id",
    "secret_hash",
    "last_used_at",
    "project__id",
    "project__project_id",
    "project__tier",
    "project__billing_state",
    "project__billing__id",
    "project__billing__account__id",
    "project__billing__account__status",
)
INVALID_KEY = Denial(400, "INVALID_ARGUMENT", "API_KEY_INVALID", "API key not valid. Please pass a valid API key.")


def limits_for(project, model_id: str, *, estimated_input_tokens: int, catalog=None) -> list[Limit]:
    """The limits that apply to one request of `project` on `model_id`, at its current tier."""
    catalog = catalog or get_catalog()
    tier = project.tier if project.billing_state == BillingState.ACTIVE else Tier.FREE
    ids = quota_ids(tier)
    limits = []
    rate = catalog.rate_limits.get((tier, model_id))
    if rate is not None:
        per_model = [
            (ids["rpm"], "minute", rate.rpm, 1),
            (ids["tpm"], "minute", rate.tpm, estimated_input_tokens),
            (ids["rpd"], "pacific_day", rate.rpd, 1),
        ]
        for quota_id, window, value, cost in per_model:
            if value is not None:
                limits.append(Limit(quota_id, window, value, cost, counter=f"{quota_id}:{model_id}"))
    spend = catalog.spend_limits.get(tier)
    price = catalog.price_at(model_id, timezone.now())
    if spend is not None and price is not None and price.input is not None:
        estimate = int(Decimal(estimated_input_tokens) * price.input)  # micro-USD: tokens x USD per 1M tokens
        limits.append(Limit(ids["spend"], "rolling_10m", int(spend.usd_per_10_minutes * MICRO), estimate))
    return limits


def check(*, raw_key: str, model_id: str, kind: str, estimated_input_tokens: int) -> dict:
    key = ApiKey.objects.authenticate(raw_key, related=("project", "project__billing__account"), only=ADMISSION_FIELDS)
    if key is None:
        return INVALID_KEY.as_dict()
    project = key.project
    catalog = get_catalog()
    model = catalog.models.get(model_id)
    if model is None:
        return Denial(404, "NOT_FOUND", "MODEL_NOT_FOUND", f"Model {model_id} is not found.").as_dict()
    link = getattr(project, "billing", None)
    if link is not None and link.account.status != AccountStatus.ACTIVE:
        message = "The billing account of this project is suspended or closed: paid usage is stopped."
        return Denial(403, "PERMISSION_DENIED", "BILLING_DISABLED", message).as_dict()
    tier = project.tier if project.billing_state == BillingState.ACTIVE else Tier.FREE
    if tier == Tier.FREE and not model.free_tier_available:
        message = f"Model {model_id} is not available on the free tier. Set up billing to use it."
        return Denial(403, "PERMISSION_DENIED", "MODEL_NOT_AVAILABLE_ON_TIER", message).as_dict()

    base = {"key_id": str(key.pk), "project_id": project.project_id, "tier": tier}
    if kind == "count_tokens":  # never limited by, nor counted against, the inference quota
        return {"allowed": True, **base, "limits": []}
    limits = limits_for(project, model_id, estimated_input_tokens=estimated_input_tokens, catalog=catalog)
    # One scope per project: every counter of a project lives under one Redis hash tag.
    decision = get_limiter().check(f"p{project.pk}", limits)
    states = [
        {"quota_id": s.quota_id, "limit": s.limit, "remaining": s.remaining, "reset_seconds": s.reset_seconds}
        for s in decision.states
    ]
    if decision.allowed:
        return {"allowed": True, **base, "limits": states}
    exceeded = decision.exceeded
    return {
        "allowed": False,
        **base,
        "limits": states,
        "error": {
            "code": 429,
            "status": "RESOURCE_EXHAUSTED",
            "reason": "RATE_LIMIT_EXCEEDED",
            "message": f"You exceeded your current quota: {exceeded.quota_id}, limit {exceeded.limit}. "
            f"Please retry in {exceeded.reset_seconds}s.",
            "quota_id": exceeded.quota_id,
            "limit": exceeded.limit,
            "retry_delay_seconds": exceeded.reset_seconds,
        },
    }
