"""What happened to credits as they near and reach their expiry (X2): the write-off, the reminders.

Each is once per credit, and the database says so (a unique key): running the job twice, or two
runners at once, cannot write off a credit twice or send a reminder twice.
"""

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from billing.models.ledger import Credit, LedgerEntry


class CreditExpiry(models.Model):
    """A credit's expiry, done: written once, when what the credit had left was written off.

    `entry` is the credit_expiry ledger entry (-`amount`); a credit with nothing left gets a row
    too (no entry, amount 0), so the expiry job never looks at it again.
    """

    credit = models.OneToOneField(Credit, on_delete=models.PROTECT, related_name="expiry")
    entry = models.OneToOneField(LedgerEntry, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    amount = models.DecimalField(_("written off (USD)"), max_digits=18, decimal_places=6)
    processed_at = models.DateTimeField(_("processed at"), default=timezone.now)

    class Meta:
        verbose_name = _("credit expiry")
        verbose_name_plural = _("credit expiries")

    def __str__(self):
        return f"{self.credit} expired, USD {self.amount} written off"


class ReminderDays(models.IntegerChoices):
    """How many days before its expiry a credit's holders are reminded (X2)."""

    FOURTEEN = 14, _("14 days before expiry")
    THREE = 3, _("3 days before expiry")


class CreditReminder(models.Model):
    """A reminder e-mailed to the administrators of a credit's account (one row per credit and stage)."""

    credit = models.ForeignKey(Credit, on_delete=models.PROTECT, related_name="reminders")
    days_before = models.PositiveSmallIntegerField(_("days before expiry"), choices=ReminderDays.choices)
    remaining = models.DecimalField(_("remaining (USD)"), max_digits=18, decimal_places=6)
    recipients = models.PositiveSmallIntegerField(_("recipients"))
    sent_at = models.DateTimeField(_("sent at"), default=timezone.now)

    class Meta:
        verbose_name = _("credit expiry reminder")
        verbose_name_plural = _("credit expiry reminders")
        constraints = [
            models.UniqueConstraint(fields=["credit", "days_before"], name="one_reminder_per_credit_and_stage")
        ]

    def __str__(self):
        return f"{self.credit}: {self.days_before} days before expiry"
