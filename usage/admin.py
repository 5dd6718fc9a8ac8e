from django.contrib import admin
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from studio.admin import ReadOnlyAdmin
from studio.models import ActorKind, AuditEvent
from usage.models import (
    CatalogModel,
    FleetToken,
    PendingCharge,
    Price,
    QuotaDenial,
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
class CatalogModelAdmin(admin.ModelAdmin):
    list_display = [
        "model_id",
        "display_name",
        "free_tier_available",
        "context_window",
        "long_prompt_threshold",
        "active",
    ]
    list_filter = ["free_tier_available", "active"]
    inlines = [PriceInline, RateLimitInline]


@admin.register(SpendLimit)
class SpendLimitAdmin(admin.ModelAdmin):
    list_display = ["tier", "usd_per_10_minutes", "enabled"]


@admin.register(FleetToken)
class FleetTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "created_by", "created_at", "revoked_at"]
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
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at"])
            AuditEvent.record(actor=request.user, actor_kind=ActorKind.STAFF, action="fleet_token.revoke", obj=token)


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
