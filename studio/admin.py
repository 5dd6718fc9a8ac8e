import re

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db import models
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from studio.models import ActorKind, ApiKey, AuditEvent, Membership, OutboundEmail, Project, StudioKeyLink, User


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written only by the code that owns them (with their audit entries): view, never edit."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def _jsonable(value):
    """A form value as the audit row keeps it: a row by its pk, several as a list, a number or date as text."""
    if isinstance(value, models.Model):
        return value.pk
    if isinstance(value, models.QuerySet | list | tuple | set):
        return sorted((_jsonable(item) for item in value), key=str)
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def _changes(form) -> tuple[dict, dict]:
    """(before, after) of the fields the admin form changed; a password only as changed, never its value or hash."""
    fields = [name for name in form.changed_data if name in form.cleaned_data]
    secret = {name for name in fields if "password" in name}
    before = {name: "…" if name in secret else _jsonable(form.initial.get(name)) for name in fields}
    return before, {name: "(changed)" if name in secret else _jsonable(form.cleaned_data[name]) for name in fields}


def record_admin(request, action: str, obj, *, before=None, after=None) -> None:
    """An audit row of a staff edit in the admin, named like the console's: `billing_account.admin_change`."""
    # BillingAccount: billing_account; TOTPDevice: totp_device.
    noun = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", type(obj).__name__).lower()
    AuditEvent.record(
        actor=request.user,
        actor_kind=ActorKind.STAFF,
        action=f"{noun}.{action}",
        obj=obj,
        before=before,
        after=after,
    )


class AuditedAdmin(admin.ModelAdmin):
    """An editable admin (R26, X10): every add, change and delete through it, its inlines' and list_editable's
    included, writes an audit row (`<model>.admin_add`, `.admin_change`, `.admin_delete`; by staff) with the changed
    fields before and after, in the admin's transaction. State changes that have a service function (suspension,
    refunds, transfers, keys, tiers) are admin actions calling it, never editable fields."""

    def save_model(self, request, obj, form, change):
        before, after = _changes(form)
        super().save_model(request, obj, form, change)
        if not change:
            record_admin(request, "admin_add", obj, after=after)
        elif after:
            record_admin(request, "admin_change", obj, before=before, after=after)

    def save_formset(self, request, form, formset, change):
        doomed = [(f.instance, f.instance.pk, str(f.instance)) for f in formset.deleted_forms if f.instance.pk]
        changes = {id(f.instance): _changes(f) for f in formset.forms if f.has_changed()}
        super().save_formset(request, form, formset, change)
        for instance in formset.new_objects:
            record_admin(request, "admin_add", instance, after=changes.get(id(instance), ({}, {}))[1])
        for instance, _fields in formset.changed_objects:
            before, after = changes.get(id(instance), ({}, {}))
            record_admin(request, "admin_change", instance, before=before, after=after)
        for instance, pk, text in doomed:
            instance.pk = pk  # Model.delete() forgot it
            record_admin(request, "admin_delete", instance, before={"object": text})

    def log_deletions(self, request, queryset):
        # Called by the delete view and the "delete selected" action just before they delete.
        for obj in queryset:
            record_admin(request, "admin_delete", obj, before={"object": str(obj)})
        return super().log_deletions(request, queryset)


@admin.register(User)
class UserAdmin(AuditedAdmin, BaseUserAdmin):
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

    def has_delete_permission(self, request, obj=None):
        # Deactivate instead: their audit rows keep naming them (studio.models._keep_users_who_acted).
        return False

    def user_change_password(self, request, id, form_url=""):
        response = super().user_change_password(request, id, form_url)
        if request.method == "POST" and response.status_code == 302:  # saved: the form redirects
            record_admin(request, "admin_password", User.objects.get(pk=id))
        return response


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(AuditedAdmin):
    list_display = [
        "name",
        "project_id",
        "number",
        "tier",
        "billing_state",
        "tier_locked",
        "monthly_spend_cap",
        "upgrade_available",
        "created_at",
    ]
    list_filter = ["tier", "billing_state", "tier_locked", "upgrade_available"]
    search_fields = ["name", "project_id", "number", "memberships__user__email"]
    # The tier, the staff lock on it and the spend cap each have their one writer (with history and audit):
    # billing.tiers, the staff console's tier override, Project.set_spend_cap. Read-only here.
    readonly_fields = [
        "project_id",
        "number",
        "tier",
        "billing_state",
        "tier_locked",
        "upgrade_available",
        "monthly_spend_cap",
        "spend_cap_since",
        "created_at",
    ]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(AuditedAdmin):
    """Who holds which role in which Cloud project (Owner, Editor, Viewer), and whether they imported it."""

    list_display = ["project", "user", "role", "imported_at"]
    list_filter = ["role", ("imported_at", admin.EmptyFieldListFilter)]
    search_fields = ["user__email", "project__project_id", "project__name"]
    list_select_related = ["project", "user"]
    autocomplete_fields = ["user", "project"]


@admin.register(ApiKey)
class ApiKeyAdmin(AuditedAdmin):
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
    """The audit log (X10): append-only everywhere, read-only here. Search by object id or the actor's e-mail."""

    list_display = ["created_at", "actor", "actor_kind", "action", "object_type", "object_id", "reason"]
    list_filter = ["actor_kind", "action", "object_type"]
    search_fields = ["=object_id", "actor__email", "action"]
    date_hierarchy = "created_at"
    list_select_related = ["actor"]
    show_full_result_count = False  # the log only grows: no COUNT(*) of it per page
    fields = ["created_at", "actor", "actor_kind", "action", "object_type", "object_id", "reason", "before", "after"]


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
