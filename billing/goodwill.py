"""Goodwill credits granted by Finance staff (R25), under the two-person rule (X10).

While a request plus the account's goodwill granted or pending in the last payments.APPROVAL_WINDOW is at or
below settings.STAFF_APPROVAL_THRESHOLD, it is granted at once (its requester decides it); above it, it waits
for a second Finance member, never the requester, to approve or reject it (so splitting a credit does not help). Each
decision locks the billing account, then the grant, re-checks that the grant is still pending and
writes the credit (ledger.grant_credit, kind GOODWILL, with its expiry) in the same transaction, so
two approvals at once make one credit. Audit: "goodwill.request", "goodwill.grant", "goodwill.reject".
"""

from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from billing import emails, ledger
from billing.models import BillingAccount, CreditKind, GoodwillGrant, GoodwillReason, GoodwillStatus
from billing.payments import APPROVAL_WINDOW, needs_second_approval
from billing.services import BillingError
from studio.models import ActorKind, AuditEvent

CENTS = Decimal("0.01")


def request_goodwill(
    account: BillingAccount, *, amount: Decimal, reason_code: str, note: str, expires_at: datetime, by
) -> GoodwillGrant:
    """A Finance member asks for a goodwill credit of `amount` on `account`, expiring at `expires_at`.

    Effects: a GoodwillGrant (audit "goodwill.request"); while it plus `recent_goodwill` is at or below
    the threshold it is granted at once (the credit, audit "goodwill.grant", the administrators' e-mail).
    The sum is taken under the account's lock, so requests made at the same time count each other.
    Raises BillingError for an amount that is not positive, an expiry that is not in the future, an
    unknown reason code or no note.
    """
    if amount <= 0 or amount != amount.quantize(CENTS):
        raise BillingError(_("Enter a positive amount in dollars and cents."))
    amount = amount.quantize(CENTS)  # "100" and "100.00" are recorded alike
    if expires_at <= timezone.now():
        raise BillingError(_("The credit must expire in the future."))
    if reason_code not in GoodwillReason.values or not note.strip():
        raise BillingError(_("Give a reason code and a note."))
    with transaction.atomic():
        locked = BillingAccount.objects.select_for_update().get(pk=account.pk)
        recent = recent_goodwill(locked)
        grant = GoodwillGrant.objects.create(
            account=locked,
            amount=amount,
            reason_code=reason_code,
            note=note,
            credit_expires_at=expires_at,
            requested_by=by,
        )
        AuditEvent.record(
            actor=by,
            actor_kind=ActorKind.STAFF,
            action="goodwill.request",
            obj=grant,
            after={
                "amount": str(amount),
                "reason_code": reason_code,
                "credit_expires_at": expires_at.isoformat(),
                "status": grant.status,
            },
            reason=note,
        )
        if not needs_second_approval(amount, recent=recent):
            _grant(locked, grant, by=by, note=note)
    return grant


def recent_goodwill(account: BillingAccount, *, now=None) -> Decimal:
    """What the two-person rule counts besides a new request: the account's goodwill granted or pending, asked for
    within APPROVAL_WINDOW of `now`."""
    since = (now or timezone.now()) - APPROVAL_WINDOW
    counted = GoodwillGrant.objects.filter(
        account_id=account.pk, status__in=[GoodwillStatus.GRANTED, GoodwillStatus.PENDING], requested_at__gte=since
    )
    return counted.aggregate(total=Sum("amount"))["total"] or Decimal("0")


def approve_goodwill(grant: GoodwillGrant, *, by, note: str) -> GoodwillGrant:
    """A second Finance member approves a pending grant: the credit is granted once, whoever else
    approves at the same time (they find it decided). The requester may not approve their own."""
    if by.pk == grant.requested_by_id:
        raise BillingError(_("Nobody may approve their own goodwill credit: another Finance member must."))
    with transaction.atomic():
        account = BillingAccount.objects.select_for_update().get(pk=grant.account_id)
        locked = GoodwillGrant.objects.select_for_update().get(pk=grant.pk)
        if locked.status != GoodwillStatus.PENDING:
            return locked
        if locked.credit_expires_at <= timezone.now():
            raise BillingError(_("The credit's expiry has passed: reject this request and ask again."))
        _grant(account, locked, by=by, note=note)
    return locked


def reject_goodwill(grant: GoodwillGrant, *, by, note: str) -> GoodwillGrant:
    """Reject a pending grant (its requester may withdraw it this way too); a decided one stays as it is."""
    with transaction.atomic():
        locked = GoodwillGrant.objects.select_for_update().get(pk=grant.pk)
        if locked.status != GoodwillStatus.PENDING:
            return locked
        _decide(locked, GoodwillStatus.REJECTED, by=by, note=note)
        AuditEvent.record(
            actor=by,
            actor_kind=ActorKind.STAFF,
            action="goodwill.reject",
            obj=locked,
            before={"status": GoodwillStatus.PENDING},
            after={"status": GoodwillStatus.REJECTED},
            reason=note,
        )
    return locked


def _grant(account: BillingAccount, locked: GoodwillGrant, *, by, note: str) -> None:
    """Grant a locked, pending request: the credit, the decision, the audit row and the e-mail."""
    with translation.override(settings.LANGUAGE_CODE):  # stored text: the books' language, not the reader's
        source = _("Goodwill credit: %(reason)s") % {"reason": locked.get_reason_code_display()}
    locked.credit = ledger.grant_credit(
        account,
        kind=CreditKind.GOODWILL,
        amount=locked.amount,
        expires_at=locked.credit_expires_at,
        source=source,
        by=by,
    )
    _decide(locked, GoodwillStatus.GRANTED, by=by, note=note, also=["credit"])
    AuditEvent.record(
        actor=by,
        actor_kind=ActorKind.STAFF,
        action="goodwill.grant",
        obj=locked,
        before={"status": GoodwillStatus.PENDING},
        after={"status": GoodwillStatus.GRANTED, "credit": locked.credit.pk, "amount": str(locked.amount)},
        reason=note,
    )
    emails.goodwill_granted(locked)  # an outbox row, committed with the credit


def _decide(locked: GoodwillGrant, status: str, *, by, note: str, also=()) -> None:
    locked.status, locked.decided_by, locked.decided_at, locked.decision_note = status, by, timezone.now(), note
    locked.save(update_fields=["status", "decided_by", "decided_at", "decision_note", *also])
