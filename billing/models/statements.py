"""Monthly statements (R19, SPEC §9): what a billing account owes for a Pacific month, and how it was paid.

A statement is issued once per account and month (a unique key) by `billing.statements`; it
covers ledger entries through `StatementEntry` (each entry is on at most one statement, so usage
charged after its month's statement was issued lands on the next one as a late line), and keeps
its lines as they were issued. Charging it is a row per attempt (`StatementPayment`), like a
prepayment attempt: the attempt's id is the processor's idempotency key, so repeating an attempt
never charges twice, and later retries (dunning) are further attempts of the same statement.
"""

import uuid
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.formats import date_format, number_format
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from billing.models.accounts import BillingAccount, PaymentMethod
from billing.models.ledger import CreditKind, EntryReason, LedgerEntry, Sku
from billing.models.prepayments import reason_for

# Dunning (SPEC §9): a failed statement charge is retried this long after its first failure; the
# account is suspended when the last retry fails.
RETRY_AFTER = (timedelta(days=1), timedelta(days=3), timedelta(days=7))


class StatementStatus(models.TextChoices):
    ISSUED = "issued", _("Issued")  # awaiting the charge on the 2nd
    PAID = "paid", pgettext_lazy("statement status", "Paid")
    PAYMENT_FAILED = "payment_failed", _("Payment failed")
    NOTHING_DUE = "nothing_due", _("Nothing to pay")


class Statement(models.Model):
    """One billing account's statement for one Pacific month (`month` = its first day).

    Amounts are in cents by the statement rounding rule (`billing.statements`): `usage_total` is
    the exact cost of the usage it covers rounded half-up to the cent, `amount_due` the exact
    balance of everything it covers rounded half-up to the cent.
    """

    account = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, related_name="statements")
    month = models.DateField(_("month"))
    status = models.CharField(_("status"), max_length=16, choices=StatementStatus.choices)
    issued_at = models.DateTimeField(_("issued at"), default=timezone.now)
    usage_total = models.DecimalField(_("usage (USD)"), max_digits=14, decimal_places=2)
    credits_total = models.DecimalField(_("credits applied (USD)"), max_digits=14, decimal_places=2)
    amount_due = models.DecimalField(_("amount due (USD)"), max_digits=14, decimal_places=2)
    # What the ledger needed to agree with the rounded statement (closed remainders and cents).
    rounding = models.DecimalField(_("rounding (USD)"), max_digits=18, decimal_places=6, default=0)
    paid_at = models.DateTimeField(_("paid at"), null=True, blank=True)
    failure_code = models.CharField(_("failure"), max_length=30, blank=True)
    # Dunning: the retries are scheduled from the first failure; `suspended_at` is when the last
    # retry failed and the account was suspended for this statement.
    first_failed_at = models.DateTimeField(_("first failed at"), null=True, blank=True)
    suspended_at = models.DateTimeField(_("account suspended at"), null=True, blank=True)

    class Meta:
        verbose_name = _("statement")
        verbose_name_plural = _("statements")
        ordering = ["-month"]
        constraints = [
            models.UniqueConstraint(fields=["account", "month"], name="one_statement_per_account_month"),
            models.CheckConstraint(condition=Q(month__day=1), name="statement_month_is_first_day"),
        ]

    def __str__(self):
        return f"{self.account.account_id} {self.month:%Y-%m} USD {self.amount_due} {self.status}"

    @property
    def month_label(self) -> str:
        return date_format(self.month, "YEAR_MONTH_FORMAT")

    @property
    def slug(self) -> str:
        return f"{self.month:%Y-%m}"

    @property
    def failure_reason(self):
        return payment_failure_reason(self.failure_code) if self.failure_code else ""

    @property
    def is_past_due(self) -> bool:
        return self.status == StatementStatus.PAYMENT_FAILED

    def retry_at(self, retry: int):
        """When scheduled retry `retry` (1, 2, 3) is due."""
        return self.first_failed_at + RETRY_AFTER[retry - 1] if self.first_failed_at else None


class LineKind(models.TextChoices):
    USAGE = "usage", pgettext_lazy("statement line", "Usage")
    ADJUSTMENT = "adjustment", _("Adjustment")
    CREDIT = "credit", _("Credit applied")
    PAYMENT = "payment", _("Payment received")
    BALANCE = "balance", _("Balance from the previous statement")


class StatementLine(models.Model):
    """A line of an issued statement, in the statement's order: usage (project × model × price
    version × SKU, batch and long prompts apart; a late line's `usage_month` is an earlier month),
    then adjustments, credits applied by kind, payments received, a balance carried over.

    `exact_amount` is the exact sum (to the nano-dollar, the rating unit); `amount` is what the
    statement shows, in cents by the running-total rule, so the shown lines add up to the totals.
    """

    statement = models.ForeignKey(Statement, on_delete=models.PROTECT, related_name="lines")
    position = models.PositiveIntegerField()
    kind = models.CharField(_("kind"), max_length=12, choices=LineKind.choices)
    usage_month = models.DateField(_("usage month"), null=True, blank=True)
    project = models.ForeignKey("studio.Project", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    model_id = models.CharField(_("model"), max_length=64, blank=True)
    price_id = models.PositiveIntegerField(_("price version"), null=True, blank=True)
    sku = models.CharField(_("SKU"), max_length=20, choices=Sku.choices, blank=True)
    batch = models.BooleanField(_("batch"), default=False)
    long_prompt = models.BooleanField(_("long prompt"), default=False)
    quantity = models.DecimalField(_("quantity"), max_digits=24, decimal_places=6, default=0)
    events = models.BigIntegerField(_("events"), default=0)
    credit_kind = models.CharField(_("credit"), max_length=12, choices=CreditKind.choices, blank=True)
    reason = models.CharField(_("reason"), max_length=30, choices=EntryReason.choices, blank=True)
    exact_amount = models.DecimalField(_("exact amount (USD)"), max_digits=24, decimal_places=9)
    amount = models.DecimalField(_("amount (USD)"), max_digits=14, decimal_places=2)

    class Meta:
        verbose_name = _("statement line")
        verbose_name_plural = _("statement lines")
        ordering = ["statement", "position"]
        constraints = [
            models.UniqueConstraint(fields=["statement", "position"], name="one_statement_line_per_position")
        ]

    def __str__(self):
        return f"{self.statement_id} #{self.position} {self.kind} {self.amount}"

    def is_late(self, statement_month) -> bool:
        return self.kind == LineKind.USAGE and self.usage_month is not None and self.usage_month < statement_month

    @property
    def shown_quantity(self) -> str:
        """Tokens (or token-hours) with the language's separators, without trailing zeros."""
        value = self.quantity.normalize()
        if value == value.to_integral_value():
            value = value.quantize(Decimal(1))
        return number_format(value, force_grouping=True)

    @property
    def late_month_label(self) -> str:
        return date_format(self.usage_month, "YEAR_MONTH_FORMAT") if self.usage_month else ""

    @property
    def label(self) -> str:
        """What the line is, in the reader's language (usage lines are described by their columns)."""
        if self.kind == LineKind.CREDIT:
            return CreditKind(self.credit_kind).label
        if self.kind == LineKind.ADJUSTMENT and self.reason:
            return EntryReason(self.reason).label
        return LineKind(self.kind).label


class StatementEntry(models.Model):
    """A ledger entry covered by a statement: each entry by one statement at most (the unique key)."""

    statement = models.ForeignKey(Statement, on_delete=models.PROTECT, related_name="+")
    entry = models.OneToOneField(LedgerEntry, on_delete=models.PROTECT, related_name="statement_link")

    class Meta:
        verbose_name = _("statement entry")
        verbose_name_plural = _("statement entries")

    def __str__(self):
        return f"{self.statement_id}: {self.entry_id}"


class AttemptStatus(models.TextChoices):
    PROCESSING = "processing", _("Processing")
    UNKNOWN = "unknown", _("Awaiting confirmation")
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")


NO_PAYMENT_METHOD = "no_payment_method"


def payment_failure_reason(code: str):
    if code == NO_PAYMENT_METHOD:
        return _("The billing account has no primary payment method.")
    return reason_for(code)


class StatementPayment(models.Model):
    """One attempt to charge a statement's amount due. Its id is the processor's idempotency key;
    `attempt` numbers the tries of one statement (1 on the 2nd, then retries and payments from the
    statement page). `retry` is the dunning retry it is (1–3, once each: a unique key);
    `created_by` the billing administrator who paid from the page (none: a job)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    statement = models.ForeignKey(Statement, on_delete=models.PROTECT, related_name="payments")
    attempt = models.PositiveSmallIntegerField(_("attempt"))
    amount = models.DecimalField(_("amount (USD)"), max_digits=14, decimal_places=2)
    payment_method = models.ForeignKey(PaymentMethod, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    status = models.CharField(
        _("status"), max_length=12, choices=AttemptStatus.choices, default=AttemptStatus.PROCESSING
    )
    failure_code = models.CharField(_("failure"), max_length=30, blank=True)
    processor_reference = models.CharField(_("processor reference"), max_length=60, blank=True)
    entry = models.OneToOneField(
        LedgerEntry, on_delete=models.PROTECT, null=True, blank=True, related_name="statement_payment"
    )
    retry = models.PositiveSmallIntegerField(_("retry"), null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    settled_at = models.DateTimeField(_("settled at"), null=True, blank=True)

    class Meta:
        verbose_name = _("statement payment")
        verbose_name_plural = _("statement payments")
        ordering = ["statement", "attempt"]
        constraints = [
            models.UniqueConstraint(fields=["statement", "attempt"], name="one_statement_payment_per_attempt"),
            models.UniqueConstraint(
                fields=["statement"], condition=Q(status="succeeded"), name="one_successful_statement_payment"
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="statement_payment_amount_positive"),
            models.UniqueConstraint(fields=["statement", "retry"], name="one_statement_payment_per_retry"),
            # A charge whose outcome is not known yet blocks any other: it may still have gone through.
            models.UniqueConstraint(
                fields=["statement"],
                condition=Q(status__in=["processing", "unknown"]),
                name="one_open_statement_payment",
            ),
        ]

    def __str__(self):
        return f"{self.statement_id} #{self.attempt} USD {self.amount} {self.status}"

    @property
    def is_final(self) -> bool:
        return self.status in (AttemptStatus.SUCCEEDED, AttemptStatus.FAILED)

    @property
    def failure_reason(self):
        return payment_failure_reason(self.failure_code) if self.failure_code else ""
