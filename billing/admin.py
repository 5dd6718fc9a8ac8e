from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _
from django.utils.translation import gettext_noop

from billing import payments, services
from billing.models import (
    AccountStatus,
    BillingAccount,
    BillingAdministrator,
    BillingPeriod,
    Budget,
    BudgetAlert,
    Country,
    Credit,
    CreditExpiry,
    CreditReminder,
    LedgerEntry,
    PaymentMethod,
    PaymentsProfile,
    Prepayment,
    PrepaymentMethodRule,
    ProjectBilling,
    RefundRequest,
    RefundStatus,
    SetupSession,
    TierChange,
    TierRule,
    UsageLine,
)
from billing.processor import PaymentError
from billing.services import BillingError
from studio.admin import AuditedAdmin, ReadOnlyAdmin

# Admin actions have no reason box: the audit log says where the decision was made (stored in English).
ADMIN_REASON = gettext_noop("Decided in the admin")
# The staff console's permission strings (staff.roles; billing may not import staff): an admin action needs the
# same permission as the console's decision, not merely the model's view or change permission.
DECIDE_REFUND = "billing.decide_refund"
DECIDE_TRANSFER = "billing.decide_bank_transfer"
SUSPEND = "billing.suspend_account"
MANAGE_PROMOTIONS = "billing.add_promocode"


@admin.register(Country)
class CountryAdmin(AuditedAdmin):
    list_display = [
        "code",
        "flag",
        "name",
        "billing_supported",
        "free_tier_available",
        "prepayment_required",
        "prepayment_amount",
    ]
    list_editable = ["billing_supported", "free_tier_available", "prepayment_required", "prepayment_amount"]
    list_filter = ["billing_supported", "free_tier_available", "prepayment_required"]
    search_fields = ["code"]

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(PrepaymentMethodRule)
class PrepaymentMethodRuleAdmin(AuditedAdmin):
    list_display = ["payment_method_kind", "amount", "active"]
    list_filter = ["active", "payment_method_kind"]


class AdministratorInline(admin.TabularInline):
    model = BillingAdministrator
    extra = 0
    autocomplete_fields = ["user"]


class ProjectLinkInline(admin.TabularInline):
    model = ProjectBilling
    extra = 0
    fields = ["project", "linked_at", "linked_by"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(BillingAccount)
class BillingAccountAdmin(AuditedAdmin):
    list_display = [
        "account_id",
        "display_name",
        "country",
        "status",
        "prepayment_status",
        "prepayment_flagged",
        "created_at",
    ]
    list_filter = ["status", "prepayment_status", "prepayment_flagged", "country"]
    search_fields = ["account_id", "display_name", "administrators__user__email", "project_links__project__project_id"]
    # Status and the prepayment flag change only through the actions below (services.set_account_status and
    # services.require_prepayment: their audit rows, their projects re-evaluated), never as a field.
    readonly_fields = [
        "account_id",
        "currency",
        "status",
        "suspension_reason",
        "prepayment_flagged",
        "payments_profile",
        "primary_payment_method",
        "created_by",
        "created_at",
        "prepayment_status",
        "prepayment_amount",
    ]
    fields = ["account_id", "display_name", "country", *readonly_fields[1:]]
    inlines = [AdministratorInline, ProjectLinkInline]
    list_select_related = ["country"]
    actions = ["suspend", "reinstate", "require_prepayment"]

    def has_delete_permission(self, request, obj=None):
        return False

    def has_suspend_permission(self, request) -> bool:
        return request.user.has_perm(SUSPEND)

    @admin.action(description=_("Suspend (stops paid usage of its projects)"), permissions=["suspend"])
    def suspend(self, request, queryset):
        self._set_status(request, queryset, AccountStatus.SUSPENDED, _("Suspended the selected accounts."))

    @admin.action(description=_("Reinstate"), permissions=["suspend"])
    def reinstate(self, request, queryset):
        self._set_status(request, queryset, AccountStatus.ACTIVE, _("Reinstated the selected accounts."))

    def _set_status(self, request, queryset, status, message):
        for account in queryset:
            try:
                services.set_account_status(account, status, by=request.user, reason=ADMIN_REASON)
            except BillingError as error:  # e.g. a closed account
                self.message_user(request, f"{account}: {error}", level=messages.ERROR)
        self.message_user(request, message)

    @admin.action(description=_("Require the one-time prepayment"), permissions=["suspend"])
    def require_prepayment(self, request, queryset):
        for account in queryset:
            services.require_prepayment(account, by=request.user, reason=ADMIN_REASON)
        self.message_user(request, _("The selected accounts must now make the one-time prepayment."))


@admin.register(PaymentsProfile)
class PaymentsProfileAdmin(AuditedAdmin):
    list_display = ["name", "owner", "profile_type", "country", "email", "updated_at"]
    list_filter = ["profile_type", "country"]
    search_fields = ["name", "email", "owner__email", "organization"]
    list_select_related = ["owner", "country"]

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(PaymentMethod)
class PaymentMethodAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "kind", "profile", "created_at", "removed_at"]
    list_filter = ["kind", "brand", ("removed_at", admin.EmptyFieldListFilter)]
    search_fields = ["last4", "profile__owner__email"]
    list_select_related = ["profile"]
    exclude = ["processor_token"]


@admin.register(Credit)
class CreditAdmin(ReadOnlyAdmin):
    list_display = ["account", "kind", "original_amount", "granted_at", "expires_at", "source"]
    list_filter = ["kind"]
    search_fields = ["account__account_id", "source"]
    list_select_related = ["account"]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "account", "kind", "amount", "credit", "description"]
    list_filter = ["kind"]
    search_fields = ["account__account_id", "description", "idempotency_key"]
    date_hierarchy = "created_at"
    list_select_related = ["account", "credit", "credit__account"]


@admin.register(SetupSession)
class SetupSessionAdmin(ReadOnlyAdmin):
    list_display = ["user", "flow", "project", "created_at", "finished_at", "result"]
    list_filter = ["flow", ("finished_at", admin.EmptyFieldListFilter)]
    search_fields = ["user__email"]
    list_select_related = ["user", "project", "result"]


admin.site.site_header = _("Studio Console administration")


@admin.register(Prepayment)
class PrepaymentAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "account",
        "amount",
        "status",
        "by_bank_transfer",
        "processor_reference",
        "settled_at",
    ]
    list_filter = ["status", "by_bank_transfer"]
    search_fields = ["account__account_id", "processor_reference", "id"]
    list_select_related = ["account"]
    actions = ["confirm_transfer", "fail_transfer"]

    def has_change_permission(self, request, obj=None):
        # Read-only fields, but the list actions below need the change permission.
        return request.user.has_perm("billing.change_prepayment")

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_decide_transfer_permission(self, request) -> bool:
        return request.user.has_perm(DECIDE_TRANSFER)

    @admin.action(description=_("Confirm bank transfer received"), permissions=["decide_transfer"])
    def confirm_transfer(self, request, queryset):
        self._each(request, queryset, payments.confirm_bank_transfer, _("Confirmed %(count)d transfer(s)."))

    @admin.action(description=_("Mark bank transfer as not received"), permissions=["decide_transfer"])
    def fail_transfer(self, request, queryset):
        self._each(request, queryset, payments.fail_bank_transfer, _("Marked %(count)d transfer(s) as failed."))

    def _each(self, request, queryset, action, message):
        done = 0
        for prepayment in queryset:
            try:
                action(prepayment, by=request.user, reason=ADMIN_REASON)
                done += 1
            except BillingError as error:
                self.message_user(request, f"{prepayment}: {error}", level=messages.ERROR)
        self.message_user(request, message % {"count": done})


@admin.register(RefundRequest)
class RefundRequestAdmin(AuditedAdmin):
    list_display = ["requested_at", "account", "amount", "status", "requested_by", "reviewed_by", "reviewed_at"]
    list_filter = ["status"]
    search_fields = ["account__account_id", "requested_by__email"]
    list_select_related = ["account", "requested_by", "reviewed_by"]
    readonly_fields = [
        "account",
        "amount",
        "reason",
        "status",
        "requested_by",
        "requested_at",
        "reviewed_by",
        "reviewed_at",
    ]
    fields = [*readonly_fields, "review_note"]
    actions = ["approve", "reject"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_decide_refund_permission(self, request) -> bool:
        return request.user.has_perm(DECIDE_REFUND)

    @admin.action(description=_("Approve and refund"), permissions=["decide_refund"])
    def approve(self, request, queryset):
        for refund in queryset:
            try:
                decided = payments.approve_refund(refund, by=request.user, note=refund.review_note or ADMIN_REASON)
            except (BillingError, PaymentError) as error:
                self.message_user(request, f"{refund}: {error}", level=messages.ERROR)
            else:
                if decided.status == RefundStatus.PENDING:
                    self.message_user(request, _("%(refund)s: first approval recorded.") % {"refund": refund})
        self.message_user(request, _("Reviewed the selected refund requests."))

    @admin.action(description=_("Reject"), permissions=["decide_refund"])
    def reject(self, request, queryset):
        for refund in queryset:
            payments.reject_refund(refund, by=request.user, note=refund.review_note or ADMIN_REASON)
        self.message_user(request, _("Reviewed the selected refund requests."))


@admin.register(TierRule)
class TierRuleAdmin(AuditedAdmin):
    list_display = ["tier", "min_total_spend", "min_days_since_first_payment"]


@admin.register(TierChange)
class TierChangeAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "project", "from_tier", "to_tier", "reason", "actor"]
    list_filter = ["to_tier"]
    search_fields = ["project__project_id", "project__name"]
    list_select_related = ["project", "actor"]


@admin.register(BillingPeriod)
class BillingPeriodAdmin(ReadOnlyAdmin):
    """The billing history that decides which events are billed (written by the billing services)."""

    list_display = ["project", "starts_at", "account", "tier"]
    search_fields = ["project__project_id", "account__account_id"]
    date_hierarchy = "starts_at"
    list_select_related = ["project", "account"]


@admin.register(UsageLine)
class UsageLineAdmin(ReadOnlyAdmin):
    list_display = ["month", "account", "project", "model_id", "sku", "batch", "long_prompt", "quantity", "amount"]
    list_filter = ["sku", "batch", "long_prompt", "month"]
    search_fields = ["account__account_id", "project__project_id", "model_id"]
    list_select_related = ["account", "project"]
    show_full_result_count = False


@admin.register(Budget)
class BudgetAdmin(ReadOnlyAdmin):
    """Budgets are changed by the account's administrators on the billing page (audited)."""

    list_display = ["account", "project", "amount", "thresholds", "created_by", "updated_at"]
    search_fields = ["account__account_id", "project__project_id"]
    list_select_related = ["account", "project", "created_by"]


@admin.register(BudgetAlert)
class BudgetAlertAdmin(ReadOnlyAdmin):
    list_display = ["sent_at", "budget", "month", "percent", "basis", "amount", "spend", "forecast"]
    list_filter = ["basis", "month"]
    search_fields = ["budget__account__account_id", "budget__project__project_id"]
    list_select_related = ["budget__account"]


@admin.register(CreditExpiry)
class CreditExpiryAdmin(ReadOnlyAdmin):
    """Written by the expire_credits job: one per expired credit, with its write-off entry (if any)."""

    list_display = ["processed_at", "credit", "amount", "entry"]
    search_fields = ["credit__account__account_id"]
    list_select_related = ["credit__account", "entry"]


@admin.register(CreditReminder)
class CreditReminderAdmin(ReadOnlyAdmin):
    list_display = ["sent_at", "credit", "days_before", "remaining", "recipients"]
    list_filter = ["days_before"]
    search_fields = ["credit__account__account_id"]
    list_select_related = ["credit__account"]


# Statements (R19): written by the issue_statements and charge_statements jobs; read-only here.
from billing.models import Statement, StatementLine, StatementPayment  # noqa: E402


class StatementLineInline(admin.TabularInline):
    model = StatementLine
    fields = [
        "position",
        "kind",
        "usage_month",
        "project",
        "model_id",
        "sku",
        "quantity",
        "events",
        "exact_amount",
        "amount",
    ]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class StatementPaymentInline(admin.TabularInline):
    model = StatementPayment
    fields = ["attempt", "amount", "payment_method", "status", "failure_code", "processor_reference", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Statement)
class StatementAdmin(ReadOnlyAdmin):
    list_display = ["month", "account", "status", "usage_total", "credits_total", "amount_due", "issued_at", "paid_at"]
    list_filter = ["status", "month"]
    search_fields = ["account__account_id"]
    list_select_related = ["account"]
    inlines = [StatementLineInline, StatementPaymentInline]


@admin.register(StatementPayment)
class StatementPaymentAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "statement", "attempt", "amount", "status", "failure_code"]
    list_filter = ["status"]
    search_fields = ["statement__account__account_id", "processor_reference"]
    list_select_related = ["statement__account"]


# Promotional codes (SPEC §10): created and deactivated in the staff console (billing.promotions, audited);
# here they are read-only, with a deactivate action that calls the same service function.
from billing import promotions  # noqa: E402
from billing.models import PromoCode, PromoRedemption  # noqa: E402


@admin.register(PromoCode)
class PromoCodeAdmin(ReadOnlyAdmin):
    list_display = [
        "code",
        "description",
        "amount",
        "times_redeemed",
        "max_redemptions",
        "redeem_by",
        "credit_valid_days",
        "active",
        "created_by",
        "created_at",
        "approved_by",
        "approved_at",
    ]
    list_filter = ["active", "redeem_by"]
    search_fields = ["code", "description"]
    list_select_related = ["created_by", "approved_by"]
    actions = ["approve", "deactivate"]

    def has_deactivate_permission(self, request) -> bool:
        return request.user.has_perm(MANAGE_PROMOTIONS)

    @admin.action(description=_("Deactivate (nobody can redeem it any more)"), permissions=["deactivate"])
    def deactivate(self, request, queryset):
        for code in queryset:
            promotions.deactivate(code, by=request.user, reason=ADMIN_REASON)
        self.message_user(request, _("Deactivated the selected codes."))

    @admin.action(description=_("Approve (a second Finance member; not its creator)"), permissions=["deactivate"])
    def approve(self, request, queryset):
        for code in queryset:
            try:
                promotions.approve_code(code, by=request.user, note=ADMIN_REASON)
            except BillingError as error:
                self.message_user(request, f"{code}: {error}", level=messages.ERROR)
        self.message_user(request, _("Reviewed the selected codes."))


@admin.register(PromoRedemption)
class PromoRedemptionAdmin(ReadOnlyAdmin):
    list_display = ["redeemed_at", "code", "account", "credit", "redeemed_by"]
    search_fields = ["code__code", "account__account_id", "redeemed_by__email"]
    date_hierarchy = "redeemed_at"
    list_select_related = ["code", "account", "credit__account", "redeemed_by"]


# Goodwill credits (SPEC §10): asked for and decided in the staff console (billing.goodwill, two-person rule).
from billing.models import GoodwillGrant  # noqa: E402


@admin.register(GoodwillGrant)
class GoodwillGrantAdmin(ReadOnlyAdmin):
    list_display = [
        "requested_at",
        "account",
        "amount",
        "reason_code",
        "status",
        "credit_expires_at",
        "requested_by",
        "decided_by",
        "decided_at",
    ]
    list_filter = ["status", "reason_code"]
    search_fields = ["account__account_id", "requested_by__email", "decided_by__email", "note"]
    date_hierarchy = "requested_at"
    list_select_related = ["account", "requested_by", "decided_by"]


# Rows with no page of their own until now (R26): each model is in the admin, read-only where its writer owns it.
from billing.models import StatementEntry, StatementLine, TestProcessorCharge, TestProcessorToken  # noqa: E402


@admin.register(BillingAdministrator)
class BillingAdministratorAdmin(AuditedAdmin):
    list_display = ["account", "user", "added_at", "prepayment_notice_dismissed_at"]
    search_fields = ["account__account_id", "account__display_name", "user__email"]
    list_select_related = ["account", "user"]
    autocomplete_fields = ["account", "user"]
    readonly_fields = ["prepayment_notice_dismissed_at"]


@admin.register(ProjectBilling)
class ProjectBillingAdmin(ReadOnlyAdmin):
    """Which account pays for a project: linked, moved and unlinked only by billing.services (audited)."""

    list_display = ["project", "account", "linked_at", "linked_by"]
    search_fields = ["project__project_id", "project__name", "account__account_id"]
    list_select_related = ["project", "account", "linked_by"]
    date_hierarchy = "linked_at"


@admin.register(StatementLine)
class StatementLineAdmin(ReadOnlyAdmin):
    list_display = ["statement", "position", "kind", "usage_month", "project", "model_id", "sku", "quantity", "amount"]
    list_filter = ["kind", "sku", "usage_month"]
    search_fields = ["statement__account__account_id", "project__project_id", "model_id"]
    list_select_related = ["statement__account", "project"]
    show_full_result_count = False


@admin.register(StatementEntry)
class StatementEntryAdmin(ReadOnlyAdmin):
    list_display = ["statement", "entry"]
    search_fields = ["statement__account__account_id"]
    list_select_related = ["statement__account", "entry"]


@admin.register(TestProcessorToken)
class TestProcessorTokenAdmin(ReadOnlyAdmin):
    """The built-in test processor's cards (SPEC §8): how each token behaves."""

    list_display = ["token", "behaviour"]
    list_filter = ["behaviour"]
    search_fields = ["token"]


@admin.register(TestProcessorCharge)
class TestProcessorChargeAdmin(ReadOnlyAdmin):
    """The built-in test processor's own records (what reconcile_payments reads back)."""

    list_display = ["created_at", "reference", "amount", "status", "failure_code", "idempotency_key"]
    list_filter = ["status"]
    search_fields = ["reference", "idempotency_key"]
    date_hierarchy = "created_at"
