"""Credits and the append-only ledger. Balances are sums of entries, never stored."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from billing.models.accounts import BillingAccount


class CreditKind(models.TextChoices):
    WELCOME = "welcome", _("Welcome credit")
    PROMOTIONAL = "promotional", _("Promotional credit")
    GOODWILL = "goodwill", _("Goodwill credit")
    PREPAYMENT = "prepayment", _("Prepayment credit")


class Credit(models.Model):
    """Money granted to a billing account for all services. What remains is the sum of its entries."""

    account = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, related_name="credits")
    kind = models.CharField(_("kind"), max_length=12, choices=CreditKind.choices)
    original_amount = models.DecimalField(_("amount (USD)"), max_digits=18, decimal_places=6)
    granted_at = models.DateTimeField(_("granted at"), default=timezone.now)
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    source = models.CharField(_("source"), max_length=200, blank=True)
    # The welcome credit is once per person: the database refuses a second one.
    welcome_for = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="welcome_credit"
    )

    class Meta:
        verbose_name = _("credit")
        verbose_name_plural = _("credits")
        constraints = [
            models.CheckConstraint(condition=Q(original_amount__gt=0), name="credit_amount_positive"),
            models.CheckConstraint(
                condition=Q(kind="welcome", welcome_for__isnull=False) | ~Q(kind="welcome"),
                name="welcome_credit_names_its_user",
            ),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} USD {self.original_amount} ({self.account.account_id})"

    def is_valid_at(self, moment) -> bool:
        return self.granted_at <= moment and (self.expires_at is None or moment < self.expires_at)


class EntryKind(models.TextChoices):
    CREDIT_GRANT = "credit_grant", _("Credit granted")
    CREDIT_APPLICATION = "credit_application", _("Credit applied")
    CREDIT_EXPIRY = "credit_expiry", _("Credit expired")
    USAGE_CHARGE = "usage_charge", _("Usage charge")
    PAYMENT = "payment", _("Payment")
    REFUND = "refund", _("Refund")
    ADJUSTMENT = "adjustment", _("Adjustment")


class EntryReason(models.TextChoices):
    """Why an entry was written, shown in the reader's language (rows store this code, not text)."""

    USAGE = "usage", pgettext_lazy("ledger entry", "Usage")
    PREPAYMENT_REFUND = "prepayment_refund", _("Prepayment refund")
    REFUND_OF_USED_CREDIT = "refund_of_used_credit", _("Refunded prepayment already used for usage")
    # Written when a statement is issued, so the ledger owes exactly the statement's rounded amount.
    STATEMENT_ROUNDING = "statement_rounding", _("Statement rounding")


# Entries that move a credit's balance, and entries that move what the account owes.
# A credit application does both: it uses credit to pay for usage.
CREDIT_KINDS = [EntryKind.CREDIT_GRANT, EntryKind.CREDIT_APPLICATION, EntryKind.CREDIT_EXPIRY, EntryKind.REFUND]
DUE_KINDS = [EntryKind.USAGE_CHARGE, EntryKind.CREDIT_APPLICATION, EntryKind.PAYMENT, EntryKind.ADJUSTMENT]


class LedgerEntryQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise TypeError("ledger entries are append-only")

    def delete(self):
        raise TypeError("ledger entries are append-only")


class LedgerEntry(models.Model):
    """One money movement. Signed: + adds to a credit or to what is owed, - takes away.

    Append-only: no update or delete path in Python, and on PostgreSQL a trigger refuses both.
    """

    account = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, related_name="entries")
    kind = models.CharField(_("kind"), max_length=20, choices=EntryKind.choices)
    amount = models.DecimalField(_("amount (USD)"), max_digits=18, decimal_places=6)
    credit = models.ForeignKey(Credit, on_delete=models.PROTECT, null=True, blank=True, related_name="entries")
    # What the entry is for, as a code translated when shown (X11); `description` is only for a
    # note a person typed (staff adjustments), shown as it was written.
    reason = models.CharField(_("reason"), max_length=30, choices=EntryReason.choices, blank=True)
    description = models.CharField(_("note"), max_length=200, blank=True)
    # Makes a retried charge a no-op: the second insert is refused by the database.
    idempotency_key = models.CharField(max_length=100, unique=True, null=True, blank=True)
    created_at = models.DateTimeField(_("time"), default=timezone.now, db_index=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # A usage charge and the credits applied to it: the Pacific month the usage occurred in (its statement's).
    usage_month = models.DateField(_("usage month"), null=True, blank=True)

    objects = LedgerEntryQuerySet.as_manager()

    class Meta:
        verbose_name = _("ledger entry")
        verbose_name_plural = _("ledger entries")
        ordering = ["created_at", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(credit__isnull=False, kind__in=CREDIT_KINDS)
                | Q(credit__isnull=True, kind__in=[k for k in DUE_KINDS if k not in CREDIT_KINDS]),
                name="entry_credit_matches_kind",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=[EntryKind.CREDIT_GRANT, EntryKind.USAGE_CHARGE], amount__gt=0)
                | Q(
                    kind__in=[
                        EntryKind.CREDIT_APPLICATION,
                        EntryKind.CREDIT_EXPIRY,
                        EntryKind.REFUND,
                        EntryKind.PAYMENT,
                    ],
                    amount__lt=0,
                )
                | Q(kind=EntryKind.ADJUSTMENT),
                name="entry_sign_matches_kind",
            ),
        ]

    def __str__(self):
        return f"{self.created_at:%Y-%m-%d} {self.get_kind_display()} {self.amount}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise TypeError("ledger entries are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("ledger entries are append-only")

    @property
    def label(self) -> str:
        """What the entry is for, in the active language: the month of a usage charge, else its
        reason, else its credit's kind ("Welcome credit"), else the note typed with it."""
        if self.kind == EntryKind.USAGE_CHARGE and self.usage_month is not None:
            return date_format(self.usage_month, "YEAR_MONTH_FORMAT")
        if self.reason:
            return self.get_reason_display()
        if self.credit_id is not None:
            return self.credit.get_kind_display()
        return self.description


class Sku(models.TextChoices):
    """What a statement line charges for (by token class; batch and long prompts are flags of the line)."""

    INPUT = "input", _("Input")
    OUTPUT = "output", _("Output")
    CACHED_INPUT = "cached_input", _("Cached input")
    AUDIO_INPUT = "audio_input", _("Audio input")
    CACHED_AUDIO_INPUT = "cached_audio_input", _("Cached audio input")
    CACHE_STORAGE = "cache_storage", _("Cache storage")


class UsageLine(models.Model):
    """One line of a usage charge, kept for the statement: project × model × price version × SKU
    (batch and long prompts apart) of one Pacific month. The lines of a charge add up to it."""

    entry = models.ForeignKey(LedgerEntry, on_delete=models.PROTECT, related_name="usage_lines")
    account = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, related_name="+")
    project = models.ForeignKey("studio.Project", on_delete=models.PROTECT, related_name="+")
    model_id = models.CharField(_("model"), max_length=64)
    price_id = models.PositiveIntegerField(_("price version"))  # usage.models.Price (billing does not import usage)
    month = models.DateField(_("month"))
    sku = models.CharField(_("SKU"), max_length=20, choices=Sku.choices)
    batch = models.BooleanField(_("batch"), default=False)
    long_prompt = models.BooleanField(_("long prompt"), default=False)
    quantity = models.DecimalField(_("quantity"), max_digits=24, decimal_places=6)  # tokens, or token-hours
    events = models.BigIntegerField(_("events"))
    amount = models.DecimalField(_("amount (USD)"), max_digits=18, decimal_places=6)
    first_occurred_at = models.DateTimeField(_("first usage"))
    last_occurred_at = models.DateTimeField(_("last usage"))

    class Meta:
        verbose_name = _("usage line")
        verbose_name_plural = _("usage lines")
        indexes = [models.Index(fields=["account", "month"], name="usage_line_account_month")]
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="usage_line_amount_positive")]

    def __str__(self):
        return f"{self.month:%Y-%m} {self.project_id} {self.model_id} {self.sku} {self.amount}"
