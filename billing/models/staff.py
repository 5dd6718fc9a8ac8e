"""What Finance staff create: goodwill credits (under the two-person rule) and promotional codes (SPEC §10, R25)."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from billing.models.accounts import BillingAccount
from billing.models.ledger import Credit


class GoodwillReason(models.TextChoices):
    SERVICE_ISSUE = "service_issue", _("Service problem")
    BILLING_ERROR = "billing_error", _("Billing error")
    CUSTOMER_EXPERIENCE = "experience", _("Customer experience")
    OTHER = "other", _("Other")


class GoodwillStatus(models.TextChoices):
    PENDING = "pending", _("Waiting for a second approval")
    GRANTED = "granted", _("Granted")
    REJECTED = "rejected", _("Rejected")


class GoodwillGrant(models.Model):
    """A goodwill credit asked for by a Finance member. At or below settings.STAFF_APPROVAL_THRESHOLD it is granted at
    once; above it, it waits for a second Finance member (never the one who asked) to approve or reject it."""

    account = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, related_name="goodwill_grants")
    amount = models.DecimalField(_("amount (USD)"), max_digits=12, decimal_places=2)
    reason_code = models.CharField(_("reason code"), max_length=16, choices=GoodwillReason.choices)
    note = models.TextField(_("reason"))
    credit_expires_at = models.DateTimeField(_("credit expires at"))
    status = models.CharField(
        _("status"), max_length=10, choices=GoodwillStatus.choices, default=GoodwillStatus.PENDING
    )
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    requested_at = models.DateTimeField(_("requested at"), default=timezone.now)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(_("decided at"), null=True, blank=True)
    decision_note = models.TextField(_("decision note"), blank=True)
    credit = models.OneToOneField(Credit, on_delete=models.PROTECT, null=True, blank=True, related_name="goodwill")

    class Meta:
        verbose_name = _("goodwill credit")
        verbose_name_plural = _("goodwill credits")
        ordering = ["-requested_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="goodwill_amount_positive"),
            models.CheckConstraint(
                condition=Q(status="granted", credit__isnull=False) | (~Q(status="granted") & Q(credit__isnull=True)),
                name="goodwill_granted_has_credit",
            ),
        ]

    def __str__(self):
        return f"{self.account.account_id} USD {self.amount} {self.status}"


class PromoCode(models.Model):
    """A promotional code Finance created: redeemed once per billing account, at most `max_redemptions` times,
    until `redeem_by`, once approved; each redemption grants a promotional credit valid `credit_valid_days` days."""

    code = models.CharField(_("code"), max_length=32, unique=True)  # stored in capitals (billing.promotions)
    description = models.CharField(_("description"), max_length=200, blank=True)
    amount = models.DecimalField(_("credit amount (USD)"), max_digits=12, decimal_places=2)
    redeem_by = models.DateTimeField(_("redeemable until"))
    credit_valid_days = models.PositiveIntegerField(_("credit valid for (days)"))
    max_redemptions = models.PositiveIntegerField(_("redemptions allowed"))
    # Counted under the code's row lock when a redemption is written; equal to its redemptions' count.
    times_redeemed = models.PositiveIntegerField(_("times redeemed"), default=0)
    active = models.BooleanField(_("active"), default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    # Two-person rule (X10): a code whose exposure (amount × max_redemptions) is above settings.STAFF_APPROVAL_THRESHOLD
    # is created unapproved (approved_at empty) and cannot be redeemed until a second Finance member approves it; at
    # or below, its creator's creation approves it.
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    approved_at = models.DateTimeField(_("approved at"), null=True, blank=True)
    approval_note = models.TextField(_("approval note"), blank=True)

    class Meta:
        verbose_name = _("promotional code")
        verbose_name_plural = _("promotional codes")
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="promo_amount_positive"),
            models.CheckConstraint(condition=Q(max_redemptions__gt=0), name="promo_redemptions_positive"),
            models.CheckConstraint(
                condition=Q(times_redeemed__lte=models.F("max_redemptions")), name="promo_not_over_redeemed"
            ),
            models.CheckConstraint(condition=Q(credit_valid_days__gt=0), name="promo_credit_days_positive"),
        ]

    def __str__(self):
        return self.code


class PromoRedemption(models.Model):
    code = models.ForeignKey(PromoCode, on_delete=models.PROTECT, related_name="redemptions")
    account = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, related_name="promo_redemptions")
    credit = models.OneToOneField(Credit, on_delete=models.PROTECT, related_name="promo_redemption")
    redeemed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    redeemed_at = models.DateTimeField(_("redeemed at"), default=timezone.now)

    class Meta:
        verbose_name = _("promotional code redemption")
        verbose_name_plural = _("promotional code redemptions")
        ordering = ["-redeemed_at"]
        # One per billing account: the database refuses a second.
        constraints = [models.UniqueConstraint(fields=["code", "account"], name="one_redemption_per_account")]

    def __str__(self):
        return f"{self.code} → {self.account.account_id}"
