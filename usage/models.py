"""The model catalog (prices, rate limits), fleet tokens, usage events and their rollups."""

import hmac
import re
import secrets
from hashlib import sha256

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from studio import keyformat
from studio.models import ActorKind, AuditEvent, Tier

# USD per 1M tokens; never negative (rating and the pending lines assume it).
MONEY = {"max_digits": 14, "decimal_places": 6, "null": True, "blank": True, "validators": [MinValueValidator(0)]}
COST = {"max_digits": 20, "decimal_places": 9, "default": 0}  # USD, rated to the nano-dollar


def unchecked_key(to, *, null: bool = False, db_index: bool = False) -> models.ForeignKey:
    """A foreign key of the usage tables that carries no database constraint (checked at commit, per row, it costs more
    than the insert): ingestion checks every reference itself, and keys, projects, models, prices and accounts are
    never deleted. No index unless asked for: these tables keep only the indexes the console reads with."""
    return models.ForeignKey(
        to, on_delete=models.DO_NOTHING, null=null, related_name="+", db_constraint=False, db_index=db_index
    )


class CatalogModel(models.Model):
    model_id = models.CharField(_("model ID"), max_length=64, primary_key=True)
    display_name = models.CharField(_("name"), max_length=100)
    free_tier_available = models.BooleanField(_("available on the free tier"), default=True)
    context_window = models.PositiveIntegerField(_("context window (tokens)"))
    # Prompts longer than this are priced at the long-prompt rates, for the whole request.
    long_prompt_threshold = models.PositiveIntegerField(_("long-prompt threshold (tokens)"), null=True, blank=True)
    batch_price_factor = models.DecimalField(
        _("batch price factor"), max_digits=4, decimal_places=3, default=0.5, validators=[MinValueValidator(0)]
    )
    active = models.BooleanField(_("active"), default=True)

    class Meta:
        verbose_name = _("model")
        verbose_name_plural = _("models")
        ordering = ["model_id"]

    def __str__(self):
        return self.model_id


class Price(models.Model):
    """A price version: in force from `effective_from` until the next version of the model."""

    model = models.ForeignKey(CatalogModel, on_delete=models.PROTECT, related_name="prices")
    effective_from = models.DateTimeField(_("effective from"))
    input = models.DecimalField(_("input"), **MONEY)
    output = models.DecimalField(_("output"), **MONEY)
    cached_input = models.DecimalField(_("cached input"), **MONEY)
    cache_storage = models.DecimalField(_("cache storage per 1M token-hours"), **MONEY)
    long_input = models.DecimalField(_("input, long prompts"), **MONEY)
    long_output = models.DecimalField(_("output, long prompts"), **MONEY)
    long_cached_input = models.DecimalField(_("cached input, long prompts"), **MONEY)
    # Audio input is priced on its own where facts.md says so; empty: the model takes no audio tokens.
    audio_input = models.DecimalField(_("audio input"), **MONEY)
    cached_audio_input = models.DecimalField(_("cached audio input"), **MONEY)
    long_audio_input = models.DecimalField(_("audio input, long prompts"), **MONEY)
    long_cached_audio_input = models.DecimalField(_("cached audio input, long prompts"), **MONEY)

    class Meta:
        verbose_name = _("price")
        verbose_name_plural = _("prices")
        ordering = ["model_id", "-effective_from"]
        constraints = [models.UniqueConstraint(fields=["model", "effective_from"], name="one_price_per_model_and_time")]

    def __str__(self):
        return f"{self.model_id} from {self.effective_from:%Y-%m-%d}"


class RateLimit(models.Model):
    """Per project per model limits of a tier. None = no published limit."""

    tier = models.CharField(_("tier"), max_length=10, choices=Tier.choices)
    model = models.ForeignKey(CatalogModel, on_delete=models.CASCADE, related_name="rate_limits")
    rpm = models.PositiveIntegerField(_("requests per minute"), null=True, blank=True)
    tpm = models.PositiveIntegerField(_("input tokens per minute"), null=True, blank=True)
    rpd = models.PositiveIntegerField(_("requests per day"), null=True, blank=True)

    class Meta:
        verbose_name = _("rate limit")
        verbose_name_plural = _("rate limits")
        ordering = ["model_id", "tier"]
        constraints = [models.UniqueConstraint(fields=["tier", "model"], name="one_rate_limit_per_tier_and_model")]

    def __str__(self):
        return f"{self.model_id} {self.tier}"


class SpendLimit(models.Model):
    """X9: spend-based limit per project over a rolling 10 minutes, per tier (optional)."""

    tier = models.CharField(_("tier"), max_length=10, choices=Tier.choices, unique=True)
    usd_per_10_minutes = models.DecimalField(_("USD per rolling 10 minutes"), max_digits=12, decimal_places=2)
    enabled = models.BooleanField(_("enabled"), default=True)

    class Meta:
        verbose_name = _("spend limit")
        verbose_name_plural = _("spend limits")

    def __str__(self):
        return f"{self.tier}: USD {self.usd_per_10_minutes} / 10 min"


FLEET_PREFIX = "flt_"


class FleetTokenQuerySet(models.QuerySet):
    def authenticate(self, raw: str):
        if not isinstance(raw, str) or not raw.startswith(FLEET_PREFIX) or len(raw) > 100:
            return None
        digest = keyformat.hash_key(raw)
        token = self.filter(secret_hash=digest, revoked_at__isnull=True).first()
        if token is None or not hmac.compare_digest(token.secret_hash, digest):
            return None
        return token


class FleetToken(models.Model):
    """A serving-fleet credential (`Authorization: Bearer flt_…`). Only a keyed hash is stored."""

    name = models.CharField(_("name"), max_length=100)
    prefix = models.CharField(_("prefix"), max_length=12)
    secret_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)

    objects = FleetTokenQuerySet.as_manager()

    class Meta:
        verbose_name = _("fleet token")
        verbose_name_plural = _("fleet tokens")

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(cls, *, name: str, created_by=None):
        """Returns (token, raw secret); the secret is shown once and never stored."""
        raw = FLEET_PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(
            name=name, prefix=raw[:12], secret_hash=keyformat.hash_key(raw), created_by=created_by
        )
        return token, raw

    def revoke(self, *, by) -> bool:
        """Staff revoke the token for good (audited); False if it already was. Processes that cached it as valid
        refuse it within FLEET_TOKEN_CACHE_SECONDS."""
        with transaction.atomic():
            locked = FleetToken.objects.select_for_update().get(pk=self.pk)
            if locked.revoked_at is not None:
                return False
            locked.revoked_at = self.revoked_at = timezone.now()
            locked.save(update_fields=["revoked_at"])
            AuditEvent.record(
                actor=by,
                actor_kind=ActorKind.STAFF,
                action="fleet_token.revoke",
                obj=locked,
                before={"revoked": False},
                after={"revoked": True},
            )
        return True


class Kind(models.TextChoices):
    GENERATE = "generate", _("Generate")
    COUNT_TOKENS = "count_tokens", _("Count tokens")
    BATCH = "batch", _("Batch")
    CACHE_STORAGE = "cache_storage", _("Cache storage")


class Source(models.TextChoices):
    API = "api", _("API")
    STUDIO = "studio", _("Studio")


# A UUID in its canonical text form (lowercase, hyphenated): such an id is its own key.
CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def event_key(event_id: str) -> bytes:
    """The 16 bytes an event id is unique by. A UUID in canonical form is its own 16 bytes (time-ordered ids, UUIDv7,
    then stay in order in the unique index, each insert at its right edge); any other id, the first 16 bytes of its
    SHA-256. 128 bits make two ids with one key as unlikely as two equal random UUIDs. EVENT_KEY_SQL in SQL."""
    if len(event_id) == 36 and event_id[8] == "-" and CANONICAL_UUID.fullmatch(event_id):
        return bytes.fromhex(event_id.replace("-", ""))
    return sha256(event_id.encode()).digest()[:16]  # ids are printable ASCII (usage.ingest)


# event_key() of an id in SQL (PostgreSQL), `{0}` the id's expression.
EVENT_KEY_SQL = (
    "CASE WHEN {0} ~ '^[0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}$' "
    "THEN decode(replace({0}, '-', ''), 'hex') ELSE substring(sha256(convert_to({0}, 'UTF8')) FROM 1 FOR 16) END"
)


class UsageEvent(models.Model):
    """One model request as the fleet reported it, rated once with the price then in force.

    Kept for reconciliation; dashboards read UsageRollup. Written in bulk by usage.ingest. On PostgreSQL the table
    is partitioned by `month`, one partition per Pacific month (usage.partitions, migration 0011): its primary key
    there is (id, month), so `id` stays unique by its sequence, not by an index of its own. An id is stored once
    per month, and once across a month boundary within the replay window (docs/ARCHITECTURE.md, "How it scales").
    """

    # The hot table: its references are `unchecked_key`s (ingestion checks them in usage.ingest._rate).
    event_id = models.CharField(max_length=100)
    # What the id is unique by (event_key(event_id)): 16 bytes instead of up to 100, so the unique index that every
    # insert goes to at a random place is ~40 % smaller and cheaper to keep in memory (bench/README.md).
    event_key = models.BinaryField(max_length=16, editable=False)
    project = unchecked_key("studio.Project")
    api_key = unchecked_key("studio.ApiKey")
    model = unchecked_key(CatalogModel)
    price = unchecked_key(Price, null=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    source = models.CharField(max_length=8, choices=Source.choices)
    status_code = models.PositiveSmallIntegerField()
    input_tokens = models.BigIntegerField()
    output_tokens = models.BigIntegerField()
    cached_tokens = models.BigIntegerField()
    # Both are part of the counts above: audio of input_tokens, cached audio of cached_tokens and of audio.
    audio_input_tokens = models.BigIntegerField(_("audio input tokens"), default=0)
    cached_audio_tokens = models.BigIntegerField(_("cached audio tokens"), default=0)
    cache_token_hours = models.DecimalField(max_digits=20, decimal_places=6)
    occurred_at = models.DateTimeField()
    # The first day of the Pacific month of occurred_at (the statement month): the partition key on PostgreSQL.
    month = models.DateField(_("month"))
    received_at = models.DateTimeField(default=timezone.now)
    billable = models.BooleanField()
    counts_against_quota = models.BooleanField()
    # Who paid: the account the project was billed to when the event occurred (null: not billed).
    account = unchecked_key("billing.BillingAccount", null=True)
    long_prompt = models.BooleanField(default=False)  # rated at the long-prompt prices
    cost = models.DecimalField(**COST)
    cost_input = models.DecimalField(**COST)
    cost_output = models.DecimalField(**COST)
    cost_cached = models.DecimalField(**COST)
    cost_storage = models.DecimalField(**COST)
    cost_audio = models.DecimalField(_("cost of audio input"), **COST)
    cost_cached_audio = models.DecimalField(_("cost of cached audio input"), **COST)

    class Meta:
        verbose_name = _("usage event")
        verbose_name_plural = _("usage events")
        # Idempotency: a replayed event id is refused by the database, by its key (event_key). A unique key of a
        # partitioned table must hold the partition key; across a month boundary usage.ingest also claims the key
        # in usage_usageeventguard (PostgreSQL only, usage.partitions).
        constraints = [models.UniqueConstraint(fields=["event_key", "month"], name="one_usage_event_per_key_and_month")]
        # No other index: the console reads rollups; raw events are read by month (reconciliation: the month's
        # partition) or by id (by its key). An index on (project, occurred_at) cost ingestion 5-7 ms of PostgreSQL
        # per 1,000 events and served no query (migration 0012).

    def __str__(self):
        return self.event_id


class Granularity(models.TextChoices):
    MINUTE = "minute", _("Minute")
    HOUR = "hour", _("Hour")
    DAY = "day", _("Day")


class UsageRollup(models.Model):
    """Sums of usage per bucket (UTC minute, hour, day) × project × key × model, kept as events arrive."""

    granularity = models.CharField(max_length=6, choices=Granularity.choices)
    bucket_start = models.DateTimeField()
    project = models.ForeignKey("studio.Project", on_delete=models.PROTECT, related_name="+")
    api_key = models.ForeignKey("studio.ApiKey", on_delete=models.PROTECT, related_name="+")
    model = models.ForeignKey(CatalogModel, on_delete=models.PROTECT, related_name="+")
    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)  # answered 4xx or 5xx
    server_errors = models.BigIntegerField(default=0)  # answered 5xx (so 4xx = errors - server_errors)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    audio_input_tokens = models.BigIntegerField(_("audio input tokens"), default=0)
    cached_audio_tokens = models.BigIntegerField(_("cached audio tokens"), default=0)
    cache_token_hours = models.DecimalField(max_digits=24, decimal_places=6, default=0)
    cost = models.DecimalField(max_digits=24, decimal_places=9, default=0)

    class Meta:
        verbose_name = _("usage rollup")
        verbose_name_plural = _("usage rollups")
        constraints = [
            models.UniqueConstraint(
                fields=["granularity", "bucket_start", "project", "api_key", "model"], name="one_rollup_per_bucket"
            ),
            models.CheckConstraint(condition=Q(requests__gte=0), name="rollup_requests_non_negative"),
        ]
        indexes = [models.Index(fields=["project", "granularity", "bucket_start"], name="rollup_project_time")]

    def __str__(self):
        return f"{self.granularity} {self.bucket_start:%Y-%m-%d %H:%M} {self.model_id}"


class RollupDelta(models.Model):
    """What one ingestion batch adds to one UTC minute × project × key × model, not yet in UsageRollup
    (PostgreSQL only; usage.fold). Ingestion appends these rows instead of updating the rollups, so that concurrent
    batches never update the same rows; usage.fold moves them into the minute, hour and day rollups and the hourly
    peaks, by one process at a time, within ROLLUP_FOLD_SECONDS under traffic (at the next charge run otherwise).
    Append-only and short-lived: no index but the key, no constraint."""

    bucket_start = models.DateTimeField()  # the UTC minute
    project = unchecked_key("studio.Project")
    api_key = unchecked_key("studio.ApiKey")
    model = unchecked_key(CatalogModel)
    requests = models.BigIntegerField()
    errors = models.BigIntegerField()
    server_errors = models.BigIntegerField()
    input_tokens = models.BigIntegerField()
    output_tokens = models.BigIntegerField()
    cached_tokens = models.BigIntegerField()
    audio_input_tokens = models.BigIntegerField()
    cached_audio_tokens = models.BigIntegerField()
    cache_token_hours = models.DecimalField(max_digits=24, decimal_places=6)
    cost = models.DecimalField(max_digits=24, decimal_places=9)

    class Meta:
        verbose_name = _("usage not yet rolled up")
        verbose_name_plural = _("usage not yet rolled up")

    def __str__(self):
        return f"{self.bucket_start:%Y-%m-%d %H:%M} {self.model_id}"


class UsagePeak(models.Model):
    """The busiest UTC minute of a UTC hour per project × model, over all the project's keys: the most requests and
    the most input tokens any one minute of the hour had (possibly two different minutes), as the minute rollups of
    the hour summed per minute say. Kept by usage.peaks (on PostgreSQL as usage.fold rolls usage up), so that the
    Limits tab reads one row per hour instead of every key's minutes (usage.queries._minute_peaks). Like the events',
    the foreign keys carry no database constraint (projects and models are never deleted)."""

    project = unchecked_key("studio.Project")
    model = unchecked_key(CatalogModel)
    hour = models.DateTimeField()
    requests = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = _("usage peak")
        verbose_name_plural = _("usage peaks")
        # One index for the upserts and the dashboard's range scans (project, then each model's hours).
        constraints = [models.UniqueConstraint(fields=["project", "model", "hour"], name="one_usage_peak_per_hour")]

    def __str__(self):
        return f"{self.hour:%Y-%m-%d %H:00} {self.model_id}: {self.requests} requests, {self.input_tokens} tokens"


class PendingCharge(models.Model):
    """Rated usage of paid projects not yet charged to the ledger, one row per line of the statement
    to be: billing account × project × model × price version × Pacific month × SKU (batch and long
    prompts apart). Ingestion adds exactly the events it inserts (in the same statement, so a
    replayed event adds nothing); `usage.charging` moves whole micro-dollars to the ledger and
    takes them off here in one transaction, which is what makes each event charged exactly once.

    Amounts are integer nano-dollars (events are rated to the nano-dollar): exact on every database.
    What is left after a charge is less than one micro-dollar and waits for more usage of the line.
    """

    account = unchecked_key("billing.BillingAccount", db_index=True)
    project = unchecked_key("studio.Project")
    model = unchecked_key(CatalogModel)
    price = unchecked_key(Price)
    month = models.DateField()  # the first day of the Pacific month the usage occurred in
    sku = models.CharField(max_length=20)  # billing.models.Sku
    batch = models.BooleanField()
    long_prompt = models.BooleanField()
    quantity = models.DecimalField(max_digits=24, decimal_places=6, default=0)  # tokens, or token-hours
    amount_nanos = models.BigIntegerField(default=0)
    events = models.BigIntegerField(default=0)  # events since the last charge (0: nothing to charge)
    first_occurred_at = models.DateTimeField(null=True)
    last_occurred_at = models.DateTimeField(null=True)

    class Meta:
        verbose_name = _("pending charge")
        verbose_name_plural = _("pending charges")
        constraints = [
            models.UniqueConstraint(
                fields=["account", "project", "model", "price", "month", "sku", "batch", "long_prompt"],
                name="one_pending_charge_per_line",
            )
        ]

    def __str__(self):
        return f"{self.account_id} {self.project_id} {self.model_id} {self.sku} {self.amount_nanos} n$"


class QuotaDenial(models.Model):
    """Requests quota:check refused with RATE_LIMIT_EXCEEDED, per bucket (UTC minute, hour, day) × project × model ×
    quota id (the first limit the request exceeded, named as the answer named it). Kept beside the rollups, in the
    same grains, so that the dashboard reads both alike (usage.queries); written by usage.denials from what the
    limiter recorded (the flush_denials job), never by the check itself. For projects and models that admission
    found: like the events', the foreign keys carry no database constraint (projects and models are never deleted).
    """

    granularity = models.CharField(max_length=6, choices=Granularity.choices)
    bucket_start = models.DateTimeField()
    project = unchecked_key("studio.Project")
    model = unchecked_key(CatalogModel)
    quota_id = models.CharField(_("quota ID"), max_length=100)
    count = models.BigIntegerField(_("requests denied"), default=0)

    class Meta:
        verbose_name = _("quota denial")
        verbose_name_plural = _("quota denials")
        # Project first: the one index serves both the upserts and the dashboard's range scans per project.
        constraints = [
            models.UniqueConstraint(
                fields=["project", "granularity", "bucket_start", "model", "quota_id"],
                name="one_quota_denial_per_bucket",
            )
        ]

    def __str__(self):
        return f"{self.granularity} {self.bucket_start:%Y-%m-%d %H:%M} {self.model_id} {self.quota_id}: {self.count}"


class DenialClaim(models.Model):
    """A claim of denials taken out of Redis (usage.limiter.DenialClaim) whose counts are in QuotaDenial: written in
    the same transaction as those counts, so that a claim found again (its writer died before deleting it from
    Redis) is not counted twice, and two writers of one claim cannot both commit (the claim id is the key).
    Deleted once older than any claim Redis can still hold (usage.denials)."""

    claim_id = models.CharField(max_length=32, primary_key=True)
    written_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("written denial claim")
        verbose_name_plural = _("written denial claims")

    def __str__(self):
        return self.claim_id


class QuotaMetric(models.TextChoices):
    RPM = "rpm", _("Requests per minute (RPM)")
    TPM = "tpm", _("Input tokens per minute (TPM)")
    RPD = "rpd", _("Requests per day (RPD)")


class QuotaOverride(models.Model):
    """A project's own limits on one model, granted by Support (an approved quota increase). Where set, and higher
    than its tier's figure, admission applies it instead of the tier's (usage.admission.limits_for)."""

    project = models.ForeignKey("studio.Project", on_delete=models.CASCADE, related_name="quota_overrides")
    model = models.ForeignKey(CatalogModel, on_delete=models.PROTECT, related_name="+")
    rpm = models.PositiveBigIntegerField(_("RPM"), null=True, blank=True)
    tpm = models.PositiveBigIntegerField(_("TPM"), null=True, blank=True)
    rpd = models.PositiveBigIntegerField(_("RPD"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated at"), default=timezone.now)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        verbose_name = _("quota override")
        verbose_name_plural = _("quota overrides")
        constraints = [models.UniqueConstraint(fields=["project", "model"], name="one_override_per_project_model")]

    def __str__(self):
        return f"{self.project_id} {self.model_id}"


class QuotaRequestStatus(models.TextChoices):
    PENDING = "pending", _("Waiting for review")
    APPROVED = "approved", _("Approved")
    DECLINED = "declined", _("Declined")


class QuotaIncreaseRequest(models.Model):
    """An Owner or Editor asks for a higher RPM, TPM or RPD on one model (SPEC §10); Support decides."""

    project = models.ForeignKey("studio.Project", on_delete=models.CASCADE, related_name="quota_requests")
    model = models.ForeignKey(CatalogModel, on_delete=models.PROTECT, related_name="+")
    metric = models.CharField(_("limit"), max_length=3, choices=QuotaMetric.choices)
    current_limit = models.PositiveBigIntegerField(_("limit when asked"), null=True, blank=True)
    requested_value = models.PositiveBigIntegerField(_("requested limit"))
    reason = models.TextField(_("reason"))
    status = models.CharField(
        _("status"), max_length=10, choices=QuotaRequestStatus.choices, default=QuotaRequestStatus.PENDING
    )
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    requested_at = models.DateTimeField(_("requested at"), default=timezone.now)
    approved_value = models.PositiveBigIntegerField(_("approved limit"), null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(_("decided at"), null=True, blank=True)
    decision_reason = models.TextField(_("decision reason"), blank=True)

    class Meta:
        verbose_name = _("quota increase request")
        verbose_name_plural = _("quota increase requests")
        ordering = ["-requested_at"]
        permissions = [("decide_quota_increase", _("Can approve and decline quota increase requests"))]
        constraints = [
            models.CheckConstraint(condition=Q(requested_value__gt=0), name="quota_request_positive"),
            models.CheckConstraint(
                condition=Q(status="approved", approved_value__gt=0) | (~Q(status="approved") & Q(approved_value=None)),
                name="quota_request_approved_value",
            ),
            # One open request per project, model and limit: a second is refused by the database.
            models.UniqueConstraint(
                fields=["project", "model", "metric"], condition=Q(status="pending"), name="one_open_quota_request"
            ),
        ]
        indexes = [models.Index(fields=["status", "requested_at"], name="quota_request_queue")]

    def __str__(self):
        return f"{self.project_id} {self.model_id} {self.metric} {self.requested_value} {self.status}"
