from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils.translation import gettext_lazy as _
from django.utils.translation import gettext_noop

from studio.admin import AuditedAdmin, ReadOnlyAdmin
from studio.models import ActorKind, AuditEvent
from usage import quotas
from usage.models import (
    CatalogModel,
    FleetToken,
    PendingCharge,
    Price,
    QuotaDenial,
    QuotaIncreaseRequest,
    QuotaOverride,
    RateLimit,
    SpendLimit,
    UsageEvent,
    UsageRollup,
)


class PriceInline(admin.TabularInline):
    model = Price
    extra = 0

    def has_change_permission(self, request, obj=None):
        return False  # a new price is a new version: past events keep the price they were rated with

    def has_delete_permission(self, request, obj=None):
        return False


class RateLimitInline(admin.TabularInline):
    model = RateLimit
    extra = 0


@admin.register(CatalogModel)
class CatalogModelAdmin(AuditedAdmin):
    list_display = [
        "model_id",
        "display_name",
        "free_tier_available",
        "context_window",
        "long_prompt_threshold",
        "active",
    ]
    list_filter = ["free_tier_available", "active"]
    search_fields = ["model_id", "display_name"]
    inlines = [PriceInline, RateLimitInline]


@admin.register(SpendLimit)
class SpendLimitAdmin(AuditedAdmin):
    list_display = ["tier", "usd_per_10_minutes", "enabled"]
    list_filter = ["tier", "enabled"]


@admin.register(FleetToken)
class FleetTokenAdmin(AuditedAdmin):
    list_display = ["name", "prefix", "created_by", "created_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix"]
    list_select_related = ["created_by"]
    fields = ["name"]
    actions = ["revoke"]

    def get_readonly_fields(self, request, obj=None):
        return ["name"] if obj else []

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        if change:
            return
        token, raw = FleetToken.issue(name=form.cleaned_data["name"], created_by=request.user)
        AuditEvent.record(actor=request.user, actor_kind=ActorKind.STAFF, action="fleet_token.create", obj=token)
        obj.pk, obj._raw_secret = token.pk, raw

    def response_add(self, request, obj, post_url_continue=None):
        # Shown once, in this response only: never stored, never put in a message or the session.
        context = {**self.admin_site.each_context(request), "token": obj, "secret": obj._raw_secret, "opts": self.opts}
        response = TemplateResponse(request, "admin/usage/fleettoken/created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description=_("Revoke the selected fleet tokens"))
    def revoke(self, request, queryset):
        for token in queryset.filter(revoked_at__isnull=True):
            token.revoke(by=request.user)


@admin.register(UsageEvent)
class UsageEventAdmin(ReadOnlyAdmin):
    list_display = [
        "event_id",
        "project",
        "model",
        "kind",
        "status_code",
        "input_tokens",
        "audio_input_tokens",
        "output_tokens",
        "cost",
        "occurred_at",
    ]
    list_filter = ["kind", "source", "billable"]
    search_fields = ["event_id", "project__project_id"]
    list_select_related = ["project", "model"]
    show_full_result_count = False


@admin.register(UsageRollup)
class UsageRollupAdmin(ReadOnlyAdmin):
    list_display = [
        "granularity",
        "bucket_start",
        "project",
        "model",
        "requests",
        "errors",
        "input_tokens",
        "audio_input_tokens",
        "cost",
    ]
    list_filter = ["granularity"]
    search_fields = ["project__project_id"]
    list_select_related = ["project", "model"]
    show_full_result_count = False


@admin.register(PendingCharge)
class PendingChargeAdmin(ReadOnlyAdmin):
    """Rated usage not yet charged (usage.charging): normally only the last seconds' and sub-micro-dollar rests."""

    list_display = ["account", "project", "model", "month", "sku", "batch", "long_prompt", "events", "amount_nanos"]
    list_filter = ["sku", "month"]
    search_fields = ["account__account_id", "project__project_id"]
    list_select_related = ["account", "project", "model"]


@admin.register(QuotaDenial)
class QuotaDenialAdmin(ReadOnlyAdmin):
    """Requests quota:check refused, per quota id and bucket (written by the flush_denials job)."""

    list_display = ["granularity", "bucket_start", "project", "model", "quota_id", "count"]
    list_filter = ["granularity"]
    search_fields = ["project__project_id", "quota_id"]
    list_select_related = ["project", "model"]
    show_full_result_count = False


# The catalog's rows, the busiest minutes, usage not yet rolled up and the denial claims each in the admin too (R26).
from usage.models import DenialClaim, RollupDelta, UsagePeak  # noqa: E402


@admin.register(Price)
class PriceAdmin(AuditedAdmin):
    """Add-only: a new price is a new version from its date; past events keep the price they were rated with."""

    list_display = ["model", "effective_from", "input", "output", "cached_input", "cache_storage"]
    list_filter = ["model"]
    search_fields = ["model__model_id"]
    list_select_related = ["model"]
    date_hierarchy = "effective_from"

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(RateLimit)
class RateLimitAdmin(AuditedAdmin):
    list_display = ["model", "tier", "rpm", "tpm", "rpd"]
    list_filter = ["tier", "model"]
    search_fields = ["model__model_id"]
    list_select_related = ["model"]


@admin.register(UsagePeak)
class UsagePeakAdmin(ReadOnlyAdmin):
    """The busiest minute of each hour, per project and model (written as usage is rolled up)."""

    list_display = ["hour", "project", "model", "requests", "input_tokens"]
    search_fields = ["project__project_id"]
    list_select_related = ["project", "model"]
    show_full_result_count = False


@admin.register(RollupDelta)
class RollupDeltaAdmin(ReadOnlyAdmin):
    """What ingestion appended and usage.fold has not rolled up yet: normally only the last seconds' batches."""

    list_display = ["bucket_start", "project", "api_key", "model", "requests", "input_tokens", "cost"]
    search_fields = ["project__project_id"]
    list_select_related = ["project", "api_key", "model"]
    show_full_result_count = False


@admin.register(DenialClaim)
class DenialClaimAdmin(ReadOnlyAdmin):
    """The flush_denials job's claims (each batch of denials written once)."""

    list_display = ["claim_id", "written_at"]
    search_fields = ["=claim_id"]
    date_hierarchy = "written_at"


# The requester reads it in the e-mail, translated (templates/usage/email/quota_*.txt).
ADMIN_APPROVED = gettext_noop("Approved as requested.")
ADMIN_DECLINED = gettext_noop("Declined: contact Support for details.")


@admin.register(QuotaIncreaseRequest)
class QuotaIncreaseRequestAdmin(ReadOnlyAdmin):
    """SPEC §10: read-only; each action calls usage.quotas, which locks, re-checks and audits."""

    list_display = ["requested_at", "project", "model", "metric", "current_limit", "requested_value", "status"]
    list_filter = ["status", "metric", "model"]
    search_fields = ["project__project_id", "project__name", "requested_by__email"]
    list_select_related = ["project", "model"]
    date_hierarchy = "requested_at"
    actions = ["approve_as_requested", "decline"]

    def has_decide_permission(self, request):
        return request.user.has_perm("usage.decide_quota_increase")

    @admin.action(description=_("Approve the figures requested"), permissions=["decide"])
    def approve_as_requested(self, request, queryset):
        self._decide(
            request,
            queryset,
            lambda ask: quotas.approve(ask, value=ask.requested_value, reason=ADMIN_APPROVED, by=request.user),
        )

    @admin.action(description=_("Decline"), permissions=["decide"])
    def decline(self, request, queryset):
        self._decide(request, queryset, lambda ask: quotas.decline(ask, reason=ADMIN_DECLINED, by=request.user))

    def _decide(self, request, queryset, decide):
        done = 0
        for ask in queryset.select_related("project"):
            try:
                done += decide(ask)
            except quotas.QuotaError as error:
                self.message_user(request, f"{ask}: {error.message}", level=messages.ERROR)
        self.message_user(request, _("Decided %(count)d of the selected quota requests.") % {"count": done})


@admin.register(QuotaOverride)
class QuotaOverrideAdmin(ReadOnlyAdmin):
    """Written only by approved quota increases (usage.quotas.approve), with their audit events."""

    list_display = ["project", "model", "rpm", "tpm", "rpd", "updated_at", "updated_by"]
    list_filter = ["model"]
    search_fields = ["project__project_id", "project__name"]
    list_select_related = ["project", "model", "updated_by"]
