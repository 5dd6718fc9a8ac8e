"""quota:check (R22, X6, X9): may this request run now? Counted when admitted.

Every denial has its own stable reason. Rate-limit denials name the quota exactly as the
dashboard will (`quota_ids`), with the limit and the seconds until its window rolls. The limiter
records each of them (model × quota id × minute) in the same call that decides it; usage.denials
moves them to the dashboard's QuotaDenial rows.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.conf import settings
from django.db import connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from billing.models import AccountStatus, BillingAccount, ProjectBilling
from studio import keyformat
from studio.models import ApiKey, Project, Tier, effective_tier
from usage import admission_redis, admission_store, denials, spendcap
from usage.catalog import get_catalog
from usage.limiter import MINUTE, PACIFIC_DAY, ROLLING_10M, Counter, Limit, get_limiter
from usage.models import QuotaOverride
from usage.rating import micro_usd, rate

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


# The unit of each quota's limit and remaining: the spend quotas count micro-USD (1 USD = 1,000,000).
UNITS = {"rpm": "requests", "tpm": "tokens", "rpd": "requests", "spend": "micro_usd"}
QUOTA_UNITS = {quota_id: UNITS[name] for tier in TIER_SUFFIX for name, quota_id in quota_ids(tier).items()}
QUOTA_UNITS[spendcap.QUOTA_ID] = "micro_usd"

# What replaces the admission estimates when the usage is reported (usage.settlement): TPM counts the input tokens of
# requests that count against quota, the spend limit what they cost (micro-USD). RPM and RPD count 1, exactly.
INPUT_TOKENS = "input_tokens"
MICRO_USD = "micro_usd"
TPM_WINDOW = MINUTE
SPEND_WINDOW = ROLLING_10M


def project_scope(project_pk: int) -> str:
    """The limiter scope of a project: all of its counters live under one Redis hash tag (and its reservation ids
    are signed for it)."""
    return f"p{project_pk}"


def per_model_counter(quota_id: str, model_id: str) -> str:
    """The counter of a per-model quota within the project's scope (all of a project's counters share its scope)."""
    return f"{quota_id}:{model_id}"


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


@dataclass(frozen=True)
class Admittee:
    """What admission needs of a key, its project and the project's billing account."""

    key_id: int
    project_pk: int
    project_id: str
    tier: str
    billing_state: str
    account_status: str | None  # None: no billing account linked
    monthly_spend_cap: Decimal | None = None  # as on the Project (None: no cap); a number or text on SQLite
    spend_cap_since: datetime | None = None
    override_model: str | None = None  # the model whose QuotaOverride was looked up with the key (None: none was)
    override: tuple[int | None, int | None, int | None] | None = None  # its (rpm, tpm, rpd); None: no override row


def _lookup_sql() -> str:
    # Written once per process from the models' table names: on the hottest path of the fleet, compiling the
    # equivalent ORM query cost more than running it (bench/README.md).
    # The project's override of the requested model comes in the same query (one row at most: unique on project and
    # model), so that an approved quota increase applies to the next request at no extra round trip.
    key, project = ApiKey._meta.db_table, Project._meta.db_table
    link, account = ProjectBilling._meta.db_table, BillingAccount._meta.db_table
    override = QuotaOverride._meta.db_table
    return (
        f"SELECT k.id, k.last_used_at, p.id, p.project_id, p.tier, p.billing_state, a.status, "  # noqa: S608
        f"p.monthly_spend_cap, p.spend_cap_since, o.id, o.rpm, o.tpm, o.rpd "
        f"FROM {key} k JOIN {project} p ON p.id = k.project_id "
        f"LEFT JOIN {link} b ON b.project_id = p.id LEFT JOIN {account} a ON a.id = b.account_id "
        f"LEFT JOIN {override} o ON o.project_id = p.id AND o.model_id = %s "
        f"WHERE k.secret_hash = %s AND k.revoked_at IS NULL"
    )


LOOKUP_SQL = None


def find_admittee(raw_key: str, model_id: str = "") -> Admittee | None:
    """ApiKey.objects.authenticate for admission: the same checks, one precompiled query, which also reads the
    project's QuotaOverride of `model_id`."""
    global LOOKUP_SQL
    if not keyformat.is_well_formed(raw_key):
        return None
    LOOKUP_SQL = LOOKUP_SQL or _lookup_sql()
    with connection.cursor() as cursor:
        cursor.execute(LOOKUP_SQL, [model_id, keyformat.hash_key(raw_key)])
        row = cursor.fetchone()
    if row is None:
        return None
    key_id, last_used_at, project_pk, project_id, tier, billing_state, account_status, cap, cap_since = row[:9]
    last_used_at = _aware(last_used_at)
    ApiKey(pk=key_id, last_used_at=last_used_at).mark_used()
    return Admittee(
        key_id,
        project_pk,
        project_id,
        tier,
        billing_state,
        account_status,
        cap,
        None if cap is None else _aware(cap_since),
        model_id,
        None if row[9] is None else row[10:],
    )


def _aware(moment):
    if isinstance(moment, str):  # SQLite hands raw timestamps back as text, without a zone
        moment = parse_datetime(moment)
    if moment is not None and timezone.is_naive(moment):
        moment = timezone.make_aware(moment, UTC)
    return moment


INVALID_KEY = Denial(400, "INVALID_ARGUMENT", "API_KEY_INVALID", "API key not valid. Please pass a valid API key.")


def spend_estimate(model, price, *, kind: str, input_tokens: int, prices=None) -> int:
    """Micro-USD reserved by one request in the spend window: its estimated prompt plus the
    configured output allowance (SPEND_ESTIMATE_OUTPUT_TOKENS), rated by the same function and
    rules as the bill (long-prompt prices, batch factor), rounded up: no fraction is dropped.
    `prices`: the price's Tariff from the catalog (made from `price` and `model` when None)."""
    output = settings.SPEND_ESTIMATE_OUTPUT_TOKENS if price.output is not None else 0
    rated = rate(
        kind=kind,
        status_code=200,
        input_tokens=input_tokens,
        output_tokens=output,
        cached_tokens=0,
        cache_token_hours=Decimal(0),
        price=price,
        model=model,
        paid_project=True,
        studio=False,
        studio_key_linked=False,
        prices=prices,
    )
    return micro_usd(rated.cost_nanos)


def override_of(project, model_id: str, overrides=None) -> tuple[int | None, int | None, int | None] | None:
    """The project's own (rpm, tpm, rpd) on `model_id` (QuotaOverride; None: it has none). An Admittee carries the
    override of the model it was found for; for a Project, `overrides` ({model id: QuotaOverride}) saves the query.
    Overrides raise paid limits only: while the project is on the free tier (no billing, a prepayment due, a
    suspended account) its free-tier figures apply, and its override comes back with paid billing."""
    if effective_tier(project.tier, project.billing_state) == Tier.FREE:
        return None
    if isinstance(project, Admittee):
        if project.override_model != model_id:
            raise ValueError(f"admittee was found for {project.override_model!r}, not {model_id!r}")
        return project.override
    if overrides is None:
        overrides = {o.model_id: o for o in QuotaOverride.objects.filter(project=project, model_id=model_id)}
    row = overrides.get(model_id)
    return None if row is None else (row.rpm, row.tpm, row.rpd)


def raised(tier_figure: int | None, override: int | None) -> int | None:
    """The figure in force: the higher of the tier's and the override's (a later tier upgrade never lowers a
    project's limit). No tier limit (None) stays none."""
    if tier_figure is None or override is None:
        return tier_figure
    return max(tier_figure, override)


def limits_for(
    project, model_id: str, *, estimated_input_tokens: int, kind: str = "generate", catalog=None, overrides=None
) -> list[Limit]:
    """The limits that apply to one request of `project` (a Project or an Admittee: `pk` or `project_pk`, `tier`,
    `billing_state`, `monthly_spend_cap` and `spend_cap_since` are read) on `model_id`, at its current tier: the
    model's RPM, TPM and RPD (each raised by the project's override where that is higher: `override_of`), the tier's
    spend limit, and the project's monthly spend cap (usage.spendcap)."""
    catalog = catalog or get_catalog()
    tier = effective_tier(project.tier, project.billing_state)
    ids = quota_ids(tier)
    limits = []
    rate = catalog.rate_limits.get((tier, model_id))
    if rate is not None:
        rpm, tpm, rpd = rate.rpm, rate.tpm, rate.rpd
        override = override_of(project, model_id, overrides)
        if override is not None:
            rpm, tpm, rpd = raised(rpm, override[0]), raised(tpm, override[1]), raised(rpd, override[2])
        per_model = [
            (ids["rpm"], MINUTE, rpm, 1, ""),
            (ids["tpm"], TPM_WINDOW, tpm, estimated_input_tokens, INPUT_TOKENS),
            (ids["rpd"], PACIFIC_DAY, rpd, 1, ""),
        ]
        for quota_id, window, value, cost, settles in per_model:
            if value is not None:
                counter = per_model_counter(quota_id, model_id)
                limits.append(Limit(quota_id, window, value, cost, counter=counter, settles=settles))
    spend = catalog.spend_limits.get(tier)
    capped = project.monthly_spend_cap is not None and spendcap.applies(tier)
    if spend is None and not capped:
        return limits
    price = catalog.price_at(model_id, timezone.now())
    model = catalog.models.get(model_id)
    priced = price is not None and price.input is not None and model is not None
    estimate = (
        spend_estimate(
            model, price, kind=kind, input_tokens=estimated_input_tokens, prices=catalog.tariffs.get(price.pk)
        )
        if priced
        else 0
    )
    if spend is not None and priced:
        micro_usd = int(spend.usd_per_10_minutes * MICRO)
        limits.append(Limit(ids["spend"], SPEND_WINDOW, micro_usd, estimate, settles=MICRO_USD))
    if capped:
        pk = project.project_pk if isinstance(project, Admittee) else project.pk
        cap = spendcap.cap_micro_usd(project.monthly_spend_cap)
        limits.append(spendcap.cap_limit(pk, cap, project.spend_cap_since, estimate))
    return limits


def settlement_counters(tier: str, model_id: str, catalog, *, spend_cap_since=None) -> dict[str, Counter]:
    """Where reported usage of `model_id` counts for a project at `tier` (its effective tier) when no reservation
    of it is found: {INPUT_TOKENS: its TPM counter, MICRO_USD: the spend counter, MONTH_MICRO_USD: the monthly spend
    cap's (given `spend_cap_since` of a capped project)}, each only if it has that limit. The same counters as
    `limits_for` names (with the same rule for an unpriced model: the spend limit's estimate needs a price, the cap
    counts without one), so that the next check reads what was reported."""
    ids = quota_ids(tier)
    counters = {}
    rate = catalog.rate_limits.get((tier, model_id))
    if rate is not None and rate.tpm is not None:
        counters[INPUT_TOKENS] = Counter(per_model_counter(ids["tpm"], model_id), TPM_WINDOW)
    if tier in catalog.spend_limits:
        counters[MICRO_USD] = Counter(ids["spend"], SPEND_WINDOW)
    if spend_cap_since is not None and spendcap.applies(tier):
        counters[spendcap.MONTH_MICRO_USD] = spendcap.cap_counter(spend_cap_since)
    return counters


def model_not_found(model_id: str) -> dict:
    return Denial(404, "NOT_FOUND", "MODEL_NOT_FOUND", f"Model {model_id} is not found.").as_dict()


def billing_disabled() -> dict:
    message = "The billing account of this project is suspended or closed: paid usage is stopped."
    return Denial(403, "PERMISSION_DENIED", "BILLING_DISABLED", message).as_dict()


def not_on_free_tier(model_id: str) -> dict:
    message = f"Model {model_id} is not available on the free tier. Set up billing to use it."
    return Denial(403, "PERMISSION_DENIED", "MODEL_NOT_AVAILABLE_ON_TIER", message).as_dict()


def check(*, raw_key: str, model_id: str, kind: str, estimated_input_tokens: int) -> dict:
    """The answer of quota:check. With Redis, one script call answers it from the admission store
    (usage.admission_redis), without the database; what the store cannot answer, the database does."""
    if not keyformat.is_well_formed(raw_key):
        return INVALID_KEY.as_dict()
    catalog = get_catalog()
    limiter = get_limiter()
    fast = admission_redis.for_limiter(limiter)
    answer = None
    if fast is not None:
        answer = fast.check(
            raw_key=raw_key,
            model_id=model_id,
            kind=kind,
            estimated_input_tokens=estimated_input_tokens,
            catalog=catalog,
        )
    if answer is None:
        return check_from_database(
            raw_key=raw_key,
            model_id=model_id,
            kind=kind,
            estimated_input_tokens=estimated_input_tokens,
            read_through=fast is not None,
        )
    status = answer.status
    if status == admission_redis.REVOKED:
        return INVALID_KEY.as_dict()
    if status == admission_redis.NO_MODEL:
        return model_not_found(model_id)
    if status == admission_redis.BILLING_DISABLED:
        return billing_disabled()
    if status == admission_redis.NOT_ON_FREE_TIER:
        return not_on_free_tier(model_id)
    base = {"key_id": str(answer.key_id), "project_id": answer.project_id, "tier": answer.tier}
    if status == admission_redis.NOT_COUNTED:
        return {"allowed": True, **base, "limits": []}
    return _answer(base, answer.decision)


def check_from_database(
    *, raw_key: str, model_id: str, kind: str, estimated_input_tokens: int, read_through: bool = False
) -> dict:
    """quota:check from the database (no Redis, or a key or project the admission store has no record of: then,
    with `read_through`, what was found is written to the store)."""
    project = find_admittee(raw_key, model_id)
    if project is None:
        return INVALID_KEY.as_dict()
    if read_through:
        admission_store.read_through(keyformat.hash_key(raw_key), project.key_id, project.project_pk)
    catalog = get_catalog()
    model = catalog.models.get(model_id)
    if model is None or not model.active:
        return model_not_found(model_id)
    if project.account_status is not None and project.account_status != AccountStatus.ACTIVE:
        return billing_disabled()
    tier = effective_tier(project.tier, project.billing_state)
    if tier == Tier.FREE and not model.free_tier_available:
        return not_on_free_tier(model_id)

    base = {"key_id": str(project.key_id), "project_id": project.project_id, "tier": tier}
    if kind == "count_tokens":  # never limited by, nor counted against, the inference quota
        return {"allowed": True, **base, "limits": []}
    limits = limits_for(project, model_id, estimated_input_tokens=estimated_input_tokens, kind=kind, catalog=catalog)
    limiter = get_limiter()
    decision = limiter.check(project_scope(project.project_pk), limits, model=model_id)
    if limiter.local_denials_due():  # denials counted in this process's memory (no Redis, or its outage)
        denials.flush_local(limiter)
    return _answer(base, decision)


def _answer(base: dict, decision) -> dict:
    states = [
        {
            "quota_id": s.quota_id,
            "limit": s.limit,
            "remaining": s.remaining,
            "unit": QUOTA_UNITS.get(s.quota_id),
            "reset_seconds": s.reset_seconds,
        }
        for s in decision.states
    ]
    if decision.allowed:
        return {"allowed": True, **base, "limits": states, "reservation_id": decision.reservation_id}
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
            "unit": QUOTA_UNITS.get(exceeded.quota_id),
            "retry_delay_seconds": exceeded.reset_seconds,
        },
    }
