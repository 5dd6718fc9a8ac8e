import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from billing.models.countries import Country

ACCOUNT_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def new_account_id() -> str:
    """An id shaped like Cloud Billing's: 01A2B3-C4D5E6-F7G8H9."""
    return "-".join("".join(secrets.choice(ACCOUNT_ID_ALPHABET) for _ in range(6)) for _ in range(3))


class ProfileType(models.TextChoices):
    INDIVIDUAL = "individual", _("Individual")
    BUSINESS = "business", _("Business")


class PaymentsProfile(models.Model):
    """Who pays: contact details. A user has at most one, possibly before any billing account."""

    owner = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="payments_profile")
    profile_type = models.CharField(_("profile type"), max_length=12, choices=ProfileType.choices)
    name = models.CharField(_("name"), max_length=150)
    organization = models.CharField(_("organization"), max_length=150, blank=True)
    address_line1 = models.CharField(_("address line 1"), max_length=200)
    address_line2 = models.CharField(_("address line 2"), max_length=200, blank=True)
    city = models.CharField(_("city"), max_length=100)
    postal_code = models.CharField(_("postal code"), max_length=20)
    country = models.ForeignKey(Country, on_delete=models.PROTECT, verbose_name=_("country"))
    email = models.EmailField(_("email"))
    phone = models.CharField(_("phone"), max_length=32)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("payments profile")
        verbose_name_plural = _("payments profiles")

    def __str__(self):
        return f"{self.name} <{self.email}>"


class PaymentMethodKind(models.TextChoices):
    CARD = "card", _("Card")
    BANK_ACCOUNT = "bank_account", _("Bank account")


class PaymentMethodQuerySet(models.QuerySet):
    def usable(self):
        return self.filter(removed_at__isnull=True)


class PaymentMethod(models.Model):
    """A card or bank account on a payments profile. Only what identifies it to a person and the
    processor's token are kept; never the number."""

    profile = models.ForeignKey(PaymentsProfile, on_delete=models.PROTECT, related_name="payment_methods")
    kind = models.CharField(_("kind"), max_length=16, choices=PaymentMethodKind.choices, default=PaymentMethodKind.CARD)
    brand = models.CharField(_("brand"), max_length=20)
    last4 = models.CharField(_("last 4 digits"), max_length=4)
    exp_month = models.PositiveSmallIntegerField(_("expiry month"), null=True, blank=True)
    exp_year = models.PositiveSmallIntegerField(_("expiry year"), null=True, blank=True)
    processor_token = models.CharField(max_length=100, editable=False)
    created_at = models.DateTimeField(_("added at"), default=timezone.now)
    removed_at = models.DateTimeField(_("removed at"), null=True, blank=True)

    objects = PaymentMethodQuerySet.as_manager()

    class Meta:
        verbose_name = _("payment method")
        verbose_name_plural = _("payment methods")

    def __str__(self):
        if self.kind == PaymentMethodKind.CARD:
            return f"{self.display_brand} •••• {self.last4} ({self.exp_month:02d}/{self.exp_year % 100:02d})"
        return f"{self.display_brand} •••• {self.last4}"

    @property
    def display_brand(self) -> str:
        from billing.cards import BRAND_NAMES

        return BRAND_NAMES.get(self.brand, self.brand)


class AccountStatus(models.TextChoices):
    ACTIVE = "active", _("Active")
    SUSPENDED = "suspended", _("Suspended")
    CLOSED = "closed", _("Closed")


class SuspensionReason(models.TextChoices):
    """Why a suspended account is suspended: only dunning's own suspension is lifted by a payment."""

    PAST_DUE = "past_due", _("Past-due statement")
    STAFF = "staff", _("Suspended by our billing team")


class PrepaymentStatus(models.TextChoices):
    NOT_REQUIRED = "not_required", _("Not required")
    REQUIRED = "required", _("Required")
    PAID = "paid", pgettext_lazy("prepayment", "Paid")


class BillingAccountQuerySet(models.QuerySet):
    def administered_by(self, user):
        return self.filter(administrators__user=user)


class BillingAccount(models.Model):
    account_id = models.CharField(_("billing account ID"), max_length=20, unique=True, default=new_account_id)
    display_name = models.CharField(_("name"), max_length=100)
    country = models.ForeignKey(Country, on_delete=models.PROTECT, verbose_name=_("country"))
    currency = models.CharField(_("currency"), max_length=3, default="USD", editable=False)
    status = models.CharField(_("status"), max_length=10, choices=AccountStatus.choices, default=AccountStatus.ACTIVE)
    suspension_reason = models.CharField(
        _("suspension reason"), max_length=10, choices=SuspensionReason.choices, blank=True, default=""
    )
    payments_profile = models.ForeignKey(PaymentsProfile, on_delete=models.PROTECT, related_name="billing_accounts")
    primary_payment_method = models.ForeignKey(
        PaymentMethod, on_delete=models.PROTECT, related_name="primary_for", verbose_name=_("primary payment method")
    )
    # Staff may require a prepayment of an account whatever the other rules say (R12).
    prepayment_flagged = models.BooleanField(_("prepayment required by staff"), default=False)
    prepayment_status = models.CharField(
        _("prepayment"), max_length=12, choices=PrepaymentStatus.choices, default=PrepaymentStatus.NOT_REQUIRED
    )
    prepayment_amount = models.DecimalField(
        _("prepayment amount (USD)"), max_digits=12, decimal_places=2, null=True, blank=True
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    objects = BillingAccountQuerySet.as_manager()

    class Meta:
        verbose_name = _("billing account")
        verbose_name_plural = _("billing accounts")
        permissions = [
            ("suspend_account", _("Can suspend and reinstate billing accounts")),
            ("grant_goodwill", _("Can grant and approve goodwill credits")),
        ]

    def __str__(self):
        return f"{self.display_name} ({self.account_id})"

    @property
    def prepayment_outstanding(self) -> bool:
        return self.prepayment_status == PrepaymentStatus.REQUIRED


class BillingAdministrator(models.Model):
    account = models.ForeignKey(BillingAccount, on_delete=models.CASCADE, related_name="administrators")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="billing_roles")
    added_at = models.DateTimeField(default=timezone.now)
    # R12: the prepayment dialog shows on every page until this administrator dismisses it.
    prepayment_notice_dismissed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("billing administrator")
        verbose_name_plural = _("billing administrators")
        constraints = [models.UniqueConstraint(fields=["account", "user"], name="one_admin_row_per_user")]

    def __str__(self):
        return f"{self.user} — {self.account}"


class ProjectBilling(models.Model):
    """Which billing account pays for a project (Cloud Billing's ProjectBillingInfo)."""

    project = models.OneToOneField("studio.Project", on_delete=models.CASCADE, related_name="billing")
    account = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, related_name="project_links")
    linked_at = models.DateTimeField(_("linked at"), default=timezone.now)
    linked_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")

    class Meta:
        verbose_name = _("project billing link")
        verbose_name_plural = _("project billing links")

    def __str__(self):
        return f"{self.project} → {self.account}"


class BillingPeriod(models.Model):
    """A project's billing history (SPEC §9): from `starts_at` until the project's next row, its usage
    is billed to `account` (null: not billed: no account, free tier, suspended or prepayment due).

    Written under the project's lock by `billing.tiers.note_billing_period` whenever the paying account
    or the effective tier changes (link, unlink, move, prepayment, upgrade, suspension), so that an
    event is billed by the state at its `occurred_at`, however late it is reported.
    """

    project = models.ForeignKey("studio.Project", on_delete=models.CASCADE, related_name="billing_periods")
    starts_at = models.DateTimeField(_("from"))
    account = models.ForeignKey(
        BillingAccount, on_delete=models.PROTECT, null=True, blank=True, related_name="+", verbose_name=_("billed to")
    )
    tier = models.CharField(_("tier"), max_length=10)

    class Meta:
        verbose_name = _("billing period")
        verbose_name_plural = _("billing periods")
        ordering = ["project_id", "starts_at", "pk"]
        indexes = [models.Index(fields=["project", "starts_at"], name="billing_period_project_time")]

    def __str__(self):
        return f"{self.project_id} from {self.starts_at:%Y-%m-%d %H:%M}: {self.account_id or '-'} {self.tier}"


class PrepaymentMethodRule(models.Model):
    """R12: a payment-method kind that makes a prepayment due, and how much (staff-editable)."""

    payment_method_kind = models.CharField(
        _("payment method kind"), max_length=16, choices=PaymentMethodKind.choices, unique=True
    )
    amount = models.DecimalField(_("amount (USD)"), max_digits=10, decimal_places=2)
    active = models.BooleanField(_("active"), default=True)

    class Meta:
        verbose_name = _("prepayment rule for a payment method")
        verbose_name_plural = _("prepayment rules for payment methods")

    def __str__(self):
        return f"{self.get_payment_method_kind_display()}: USD {self.amount}"
