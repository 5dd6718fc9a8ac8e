"""Credit expiry (X2): the write-off at expiry, the reminders before it, the countdown on the page.

When does a credit stop paying, and when is what it had left written off?

- It stops paying at its `expires_at`, at once: a charge draws on a credit only if the credit was
  valid when the line's usage occurred and is still valid at the charge (`billing.ledger`), so
  nothing can draw on it after that instant.
- Usage that occurred before the expiry but is reported or charged after it is not paid by the
  credit: SPEC §9 says so ("an event reported after its credit expired is not paid by that
  credit"), and it is what the billing guide describes when a credit runs out: further usage is
  charged to the account's primary payment method on the monthly statement. That is where such
  usage goes (it is owed), like any usage no credit covers.
- So nothing can use the credit after its expiry, and the write-off does not wait for late
  reports (up to 7 days late): a grace period would only keep showing an amount that can no
  longer pay for anything. The write-off is dated at the expiry, so the account's history shows it
  where it happened. The job writes it `WRITE_OFF_AFTER` later, not at once: a charge run stamps
  its time when it starts and charges account after account, so a run that started just before
  the expiry may still be drawing on the credit for usage it rightly pays; waiting lets that run
  finish, and the write-off is then exactly what the credit had left at its expiry.
- The write-off is not a charge and moves no balance: "credit remaining" counts valid credits
  only, so an expired credit already counts for nothing there, and nothing becomes owed.

Reminders go to the administrators of the credit's account 14 and 3 days before its expiry, once
each (a unique row per credit and stage), while the credit has something left to lose. A credit
that is granted, or first seen by the job, already inside the 3-day window gets only the 3-day
reminder: two e-mails at once about one credit would say the same thing twice.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.db import IntegrityError, transaction
from django.db.models import Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from billing import emails, ledger
from billing.models import AccountStatus, Credit, CreditExpiry, CreditReminder, ReminderDays
from billing.money import ZERO, round_money
from studio.models import AuditEvent
from studio.zones import days_between

# Longer than a charge run takes from its start to its last account (it runs every 20 s).
WRITE_OFF_AFTER = timedelta(minutes=10)
SOON = timedelta(days=max(ReminderDays.values))  # the countdown is highlighted from the first reminder on


@dataclass(frozen=True)
class Countdown:
    """How long a credit has left, as its reader counts days (calendar days in their zone)."""

    days: int  # from today to the expiry's day: 0 = expires today
    expired: bool
    soon: bool  # within the first reminder's window


def countdown(credit: Credit, *, now: datetime, zone: ZoneInfo) -> Countdown | None:
    """The credit's countdown for a reader in `zone`, or None for a credit that never expires."""
    if credit.expires_at is None:
        return None
    expired = credit.expires_at <= now
    return Countdown(
        days=days_between(now, credit.expires_at, zone),
        expired=expired,
        soon=not expired and credit.expires_at - now <= SOON,
    )


def expire_credits(*, now=None, progress=None) -> list[CreditExpiry]:
    """Write off every credit that expired at least `WRITE_OFF_AFTER` ago and is not yet done.

    Each write-off is its own transaction under the account's lock (`ledger.write_off_expired_credit`);
    safe to run twice or concurrently: a credit already done is skipped. Returns the write-offs this
    run made (a credit with nothing left is marked done without a ledger entry, and is returned too).
    `progress(done, total)` is called after each credit.
    """
    now = now or timezone.now()
    due = list(
        Credit.objects.filter(expires_at__lte=now - WRITE_OFF_AFTER, expiry__isnull=True)
        .select_related("account")
        .order_by("expires_at", "pk")
    )
    made = []
    for done, credit in enumerate(due, start=1):
        expiry, created = ledger.write_off_expired_credit(credit, now=now)
        if created:
            made.append(expiry)
        if progress is not None:
            progress(done, len(due))
    return made


def _stage(credit: Credit, now: datetime) -> int | None:
    """The reminder due for the credit now: the most urgent window it is in (3 before 14)."""
    left = credit.expires_at - now
    for days in sorted(ReminderDays.values):
        if timedelta(0) < left <= timedelta(days=days):
            return days
    return None


def send_reminders(*, now=None) -> list[CreditReminder]:
    """E-mail each credit's reminder that is due and not yet sent (14 and 3 days before expiry).

    Effects per reminder, in one transaction: a CreditReminder row (unique per credit and stage)
    and an outbox e-mail to each administrator of the account, in their language with the date
    in their zone. A second runner's insert of the same row is refused, and its e-mails with it.
    Only credits with something left, on accounts that are not closed. Returns the reminders sent.
    """
    now = now or timezone.now()
    candidates = list(
        Credit.objects.filter(expires_at__gt=now, expires_at__lte=now + SOON)
        .exclude(account__status=AccountStatus.CLOSED)
        .annotate(left=Coalesce(Sum("entries__amount"), Value(ZERO)))
        .filter(left__gt=0)
        .select_related("account")
        .order_by("expires_at", "pk")
    )
    sent_before = set(CreditReminder.objects.filter(credit__in=candidates).values_list("credit_id", "days_before"))
    sent = []
    for credit in candidates:
        stage = _stage(credit, now)
        # A more urgent reminder already sent covers this one too.
        if any((credit.pk, days) in sent_before for days in ReminderDays.values if days <= stage):
            continue
        reminder = _remind(credit, stage, remaining=round_money(credit.left), now=now)
        if reminder is not None:
            sent.append(reminder)
    return sent


def _remind(credit: Credit, days_before: int, *, remaining, now) -> CreditReminder | None:
    try:
        with transaction.atomic():
            recipients = emails.credit_expiring(credit, remaining=remaining, now=now)
            reminder = CreditReminder.objects.create(
                credit=credit, days_before=days_before, remaining=remaining, recipients=recipients, sent_at=now
            )
            AuditEvent.record(
                actor=None,
                action="credit.remind",
                obj=credit,
                after={"days_before": days_before, "remaining": str(remaining), "recipients": recipients},
            )
            return reminder
    except IntegrityError:
        return None  # another runner sent this one; its row (and its e-mails) committed, ours did not
