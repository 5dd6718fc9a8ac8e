from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from studio.models import ApiKey, AuditEvent, Membership, OutboundEmail, Project, StudioKeyLink, User


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written only by the code that owns them (with their audit entries): view, never edit."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ["email"]
    list_display = ["email", "full_name", "language", "is_staff", "is_active", "date_joined"]
    list_filter = ["is_staff", "is_superuser", "is_active", "language"]
    search_fields = ["email", "full_name"]
    readonly_fields = ["date_joined", "last_login", "terms_accepted_at", "defaults_provisioned_at"]
    fieldsets = [
        (None, {"fields": ["email", "password"]}),
        (_("Profile"), {"fields": ["full_name", "language"]}),
        (_("Permissions"), {"fields": ["is_active", "is_staff", "is_superuser", "groups", "user_permissions"]}),
        (_("Dates"), {"fields": ["date_joined", "last_login", "terms_accepted_at", "defaults_provisioned_at"]}),
    ]
    add_fieldsets = [(None, {"classes": ["wide"], "fields": ["email", "password1", "password2"]})]


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "project_id", "number", "tier", "billing_state", "upgrade_available", "created_at"]
    list_filter = ["tier", "billing_state", "upgrade_available"]
    search_fields = ["name", "project_id", "number", "memberships__user__email"]
    # The tier is written only by billing (with history and audit): read-only here.
    readonly_fields = ["project_id", "number", "tier", "billing_state", "upgrade_available", "created_at"]
    inlines = [MembershipInline]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "masked", "project", "created_by", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), "project__tier"]
    search_fields = ["name", "prefix", "project__project_id", "project__name", "created_by__email"]
    list_select_related = ["project", "created_by"]
    # Keys are issued and revoked by the console (with an audit entry), never edited here.
    readonly_fields = [
        "project",
        "prefix",
        "last4",
        "created_by",
        "created_at",
        "last_used_at",
        "revoked_at",
        "revoked_by",
    ]
    fields = ["name", *readonly_fields]

    @admin.display(description=_("Key"))
    def masked(self, obj):
        return obj.masked

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "actor", "actor_kind", "action", "object_type", "object_id"]
    list_filter = ["actor_kind", "action", "object_type"]
    search_fields = ["actor__email", "object_id", "action"]
    date_hierarchy = "created_at"
    list_select_related = ["actor"]


@admin.register(OutboundEmail)
class OutboundEmailAdmin(ReadOnlyAdmin):
    """The outbox: what was sent, what waits for a retry, what failed for good. Content is
    read-only; "Resend" makes messages pending and due now."""

    list_display = ["recipients", "subject", "status", "attempts", "next_attempt_at", "created_at", "sent_at"]
    list_filter = ["status"]
    search_fields = ["to", "cc", "bcc", "subject"]
    date_hierarchy = "created_at"
    fields = [
        "status",
        "attempts",
        "next_attempt_at",
        "claimed_until",
        "last_error",
        "created_at",
        "sent_at",
        "sender",
        "to",
        "cc",
        "bcc",
        "reply_to",
        "subject",
        "body",
        "alternatives",
        "headers",
    ]
    readonly_fields = fields
    actions = ["resend"]

    @admin.display(description=_("Recipients"))
    def recipients(self, obj):
        return ", ".join(obj.to + obj.cc + obj.bcc)

    def has_resend_permission(self, request):
        # The content stays read-only for everyone; resending is what "change" allows here.
        return request.user.has_perm("studio.change_outboundemail")

    @admin.action(description=_("Resend"), permissions=["resend"])
    def resend(self, request, queryset):
        done = sum(email.resend(by=request.user) for email in queryset)
        busy = len(queryset) - done
        self.message_user(
            request,
            ngettext("%(count)d e-mail will be sent again.", "%(count)d e-mails will be sent again.", done)
            % {"count": done},
        )
        if busy:
            self.message_user(
                request,
                ngettext(
                    "%(count)d e-mail is being sent right now; it was left alone.",
                    "%(count)d e-mails are being sent right now; they were left alone.",
                    busy,
                )
                % {"count": busy},
                level=messages.WARNING,
            )


@admin.register(StudioKeyLink)
class StudioKeyLinkAdmin(ReadOnlyAdmin):
    """Which key was linked to the studio when (it decides whether studio usage is billed)."""

    list_display = ["user", "api_key", "linked_at", "unlinked_at"]
    search_fields = ["user__email", "api_key__prefix"]
    list_select_related = ["user", "api_key"]
