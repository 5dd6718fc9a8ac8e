"""One-time prepayments (R12–R16), refund requests, tier rules and tier history (R17, X1)."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from billing.models.accounts import BillingAccount, PaymentMethod
from billing.models.ledger import Credit
from studio.models import Tier


class FailureCode(models.TextChoices):
    """Why the processor refused; the label is the reason shown to the payer (translated)."""

    CARD_DECLINED = "card_declined", _("Your card was declined. Try another card or contact your bank.")
    INSUFFICIENT_FUNDS = "insufficient_funds", _("Your card was declined for insufficient funds.")
    PROCESSING_ERROR = "processing_error", _("The card could not be processed. Try again in a few minutes.")
    REFUND_REFUSED = "refund_refused", _("The payment processor refused the refund.")


def reason_for(code: str):
    """The payer-facing reason for a failure code; unknown codes get a generic one."""
    try:
        return FailureCode(code).label
    except ValueError:
        return _("The payment failed.")


class PaymentStatus(models.TextChoices):
    PROCESSING = "processing", _("Processing")
    PENDING = "pending", _("Pending bank transfer")
    UNKNOWN = "unknown", _("Awaiting confirmation")
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")


class Prepayment(models.Model):
    """One attempt to pay the one-time prepayment. Its id is the idempotency key sent to the
    processor, so a repeated submission of one attempt can never charge twice."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, related_name="prepayments")
    amount = models.DecimalField(_("amount (USD)"), max_digits=12, decimal_places=2)
    payment_method = models.ForeignKey(PaymentMethod, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    by_bank_transfer = models.BooleanField(_("bank transfer"), default=False)
    status = models.CharField(
        _("status"), max_length=12, choices=PaymentStatus.choices, default=PaymentStatus.PROCESSING
    )
    failure_code = models.CharField(_("failure"), max_length=30, blank=True)
    processor_reference = models.CharField(_("processor reference"), max_length=60, blank=True)
    credit = models.OneToOneField(Credit, on_delete=models.PROTECT, null=True, blank=True, related_name="prepayment")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    settled_at = models.DateTimeField(_("settled at"), null=True, blank=True)

    class Meta:
        verbose_name = _("prepayment")
        verbose_name_plural = _("prepayments")
        permissions = [("decide_bank_transfer", _("Can confirm or fail pending bank transfers"))]
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="prepayment_amount_positive"),
            # A second successful prepayment of one account is refused by the database.
            models.UniqueConstraint(
                fields=["account"], condition=Q(status="succeeded"), name="one_successful_prepayment"
            ),
        ]

    def __str__(self):
        return f"{self.account.account_id} USD {self.amount} {self.status}"

    @property
    def is_final(self) -> bool:
        return self.status in (PaymentStatus.SUCCEEDED, PaymentStatus.FAILED)

    @property
    def failure_reason(self):
        return reason_for(self.failure_code) if self.failure_code else ""


class RefundStatus(models.TextChoices):
    PENDING = "pending", _("Waiting for review")
    REFUNDED = "refunded", _("Refunded")
    REJECTED = "rejected", _("Rejected")


class RefundRequest(models.Model):
    account = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, related_name="refund_requests")
    amount = models.DecimalField(_("amount (USD)"), max_digits=12, decimal_places=2)
    reason = models.TextField(_("reason"), blank=True)
    status = models.CharField(_("status"), max_length=10, choices=RefundStatus.choices, default=RefundStatus.PENDING)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    requested_at = models.DateTimeField(_("requested at"), default=timezone.now)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    reviewed_at = models.DateTimeField(_("reviewed at"), null=True, blank=True)
    review_note = models.TextField(_("review note"), blank=True)
    # Two-person rule (X10): above settings.STAFF_APPROVAL_THRESHOLD a first Finance approval is recorded here and
    # the refund waits, still pending, for a second Finance member's.
    first_approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    first_approved_at = models.DateTimeField(_("first approved at"), null=True, blank=True)
    first_approval_note = models.TextField(_("first approval note"), blank=True)

    class Meta:
        verbose_name = _("refund request")
        verbose_name_plural = _("refund requests")
        permissions = [("decide_refund", _("Can approve and reject refund requests"))]
        ordering = ["-requested_at"]
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="refund_amount_positive")]

    def __str__(self):
        return f"{self.account.account_id} USD {self.amount} {self.status}"


class TierRule(models.Model):
    """R17: what a project's billing account needs for a tier (staff-editable)."""

    tier = models.CharField(_("tier"), max_length=10, unique=True, choices=Tier.choices)
    min_total_spend = models.DecimalField(_("total spend above (USD)"), max_digits=12, decimal_places=2)
    min_days_since_first_payment = models.PositiveIntegerField(_("days since first successful payment"))

    class Meta:
        verbose_name = _("tier rule")
        verbose_name_plural = _("tier rules")
        ordering = ["tier"]

    def __str__(self):
        return f"{self.tier}: > USD {self.min_total_spend}, ≥ {self.min_days_since_first_payment} days"


class TierChange(models.Model):
    """Tier history: who or what changed a project's tier, when and why."""

    project = models.ForeignKey("studio.Project", on_delete=models.CASCADE, related_name="tier_changes")
    from_tier = models.CharField(_("from"), max_length=10, choices=Tier.choices)
    to_tier = models.CharField(_("to"), max_length=10, choices=Tier.choices)
    reason = models.CharField(_("reason"), max_length=200)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(_("time"), default=timezone.now)

    class Meta:
        verbose_name = _("tier change")
        verbose_name_plural = _("tier changes")
        ordering = ["-created_at", "-pk"]

    def __str__(self):
        return f"{self.project} {self.from_tier} → {self.to_tier}"
