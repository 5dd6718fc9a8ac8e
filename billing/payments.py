"""The one-time prepayment (R13–R15), its reconciliation, and prepayment refunds (R16).

The processor is called outside database transactions (no lock is held across the network);
a Prepayment row created first, keyed by the attempt id, makes every repeat of one attempt
find that row instead of charging again.
"""

import logging
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q, Sum
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from billing import emails, ledger
from billing.models import (
    BillingAccount,
    CreditKind,
    PaymentMethod,
    PaymentStatus,
    Prepayment,
    PrepaymentStatus,
    RefundRequest,
    RefundStatus,
)
from billing.processor import PaymentError, ProcessorTimeout, get_processor
from billing.services import BillingError, reevaluate_projects
from studio.models import ActorKind, AuditEvent, BillingState

log = logging.getLogger(__name__)
# A PROCESSING attempt older than this lost its answer (a crash mid-call): reconcile it.
STALE_AFTER = timedelta(minutes=5)
# The two-person rule (X10) adds up what one billing account received over this window, so that splitting a refund
# or a goodwill credit into parts at or below the threshold still needs a second Finance member.
APPROVAL_WINDOW = timedelta(days=30)


def pay_prepayment(
    account: BillingAccount,
    *,
    attempt_id,
    amount: Decimal,
    by,
    payment_method: PaymentMethod | None = None,
    bank_transfer: bool = False,
) -> Prepayment:
    """Pay the outstanding prepayment of `account` once, whatever happens around it.

    Effects: a Prepayment row for the attempt; one charge at the processor; on success the
    whole amount as a prepayment credit, the account's prepayment marked paid, every linked
    project on its tier, a confirmation e-mail. Repeats of one attempt (double click, retry,
    two tabs, concurrent requests) return the same Prepayment and charge nothing more.
    """
    if bank_transfer == (payment_method is not None):
        raise BillingError(_("Choose one payment method."))
    with transaction.atomic():
        locked = BillingAccount.objects.select_for_update().get(pk=account.pk)
        existing = Prepayment.objects.filter(pk=attempt_id).first()
        if existing is not None:
            if existing.account_id != account.pk:
                raise BillingError(_("This payment belongs to another account."))
            return existing
        if not locked.prepayment_outstanding:
            raise BillingError(_("No prepayment is due on this account."))
        if amount < locked.prepayment_amount:
            raise BillingError(_("The amount must be at least USD %(amount)s.") % {"amount": locked.prepayment_amount})
        if Prepayment.objects.filter(
            account=locked, status__in=[PaymentStatus.PENDING, PaymentStatus.UNKNOWN, PaymentStatus.PROCESSING]
        ).exists():
            raise BillingError(_("A prepayment for this account is already being processed."))
        try:
            with transaction.atomic():
                prepayment = Prepayment.objects.create(
                    id=attempt_id,
                    account=locked,
                    amount=amount,
                    payment_method=payment_method,
                    by_bank_transfer=bank_transfer,
                    created_by=by,
                )
        except IntegrityError:
            return Prepayment.objects.get(pk=attempt_id)
        AuditEvent.record(actor=by, action="prepayment.start", obj=prepayment, after={"amount": str(amount)})

    processor = get_processor()
    try:
        if bank_transfer:
            result = processor.start_bank_transfer(amount=amount, idempotency_key=str(prepayment.pk))
        else:
            result = processor.charge(
                token=payment_method.processor_token, amount=amount, idempotency_key=str(prepayment.pk)
            )
    except PaymentError as refused:
        return _settle(prepayment, PaymentStatus.FAILED, failure_code=refused.code)
    except ProcessorTimeout:
        log.warning("prepayment %s: processor timed out; reconcile_payments will settle it", prepayment.pk)
        return _settle(prepayment, PaymentStatus.UNKNOWN)
    if result.status == "pending":
        return _settle(prepayment, PaymentStatus.PENDING, reference=result.reference)
    return _settle(prepayment, PaymentStatus.SUCCEEDED, reference=result.reference)


def _settle(
    prepayment: Prepayment, status: str, *, reference: str = "", failure_code: str = "", by=None, reason: str = ""
) -> Prepayment:
    """Move an attempt to `status` once; a final state never changes again."""
    with transaction.atomic():
        account = BillingAccount.objects.select_for_update().get(pk=prepayment.account_id)
        locked = Prepayment.objects.select_for_update().get(pk=prepayment.pk)
        if locked.is_final:
            return locked
        before = locked.status
        locked.status = status
        locked.failure_code = failure_code
        locked.processor_reference = reference or locked.processor_reference
        update = ["status", "failure_code", "processor_reference"]
        if status in (PaymentStatus.SUCCEEDED, PaymentStatus.FAILED):
            locked.settled_at = timezone.now()
            update.append("settled_at")
        if status == PaymentStatus.SUCCEEDED:
            locked.credit = ledger.grant_credit(
                account,
                kind=CreditKind.PREPAYMENT,
                amount=locked.amount,
                source=_("One-time prepayment %(reference)s") % {"reference": locked.processor_reference},
                by=by,
            )
            update.append("credit")
            account.prepayment_status = PrepaymentStatus.PAID
            account.save(update_fields=["prepayment_status"])
        locked.save(update_fields=update)
        AuditEvent.record(
            actor=by,
            actor_kind=ActorKind.STAFF if by else ActorKind.SYSTEM,
            action="prepayment.settle",
            obj=locked,
            before={"status": before},
            after={"status": status, "failure": failure_code},
            reason=reason,
        )
        if status == PaymentStatus.SUCCEEDED:
            # R14: every linked project moves up at once, and the new limits apply to the next request.
            reevaluate_projects(
                account,
                by=locked.created_by,
                reason=gettext_noop("Prepayment received"),
                from_states=(BillingState.PREPAYMENT_DUE,),
            )
            emails.prepayment_succeeded(locked)  # an outbox row, committed with the payment
    return locked


def reconcile_payments(*, now=None, progress=None) -> list[Prepayment]:
    """Settle attempts whose outcome we do not know from the processor's own records.

    Unknown (timed out) attempts, processing ones that went stale, and pending bank transfers.
    Idempotent: settled attempts are never touched again. Returns the attempts it settled.
    `progress(done, total)` is called after each attempt looked up.
    """
    now = now or timezone.now()
    processor = get_processor()
    open_attempts = Prepayment.objects.filter(
        status__in=[PaymentStatus.UNKNOWN, PaymentStatus.PENDING]
    ) | Prepayment.objects.filter(status=PaymentStatus.PROCESSING, created_at__lt=now - STALE_AFTER)
    open_attempts = list(open_attempts.order_by("created_at"))
    settled = []
    for done, attempt in enumerate(open_attempts, start=1):
        record = processor.lookup(idempotency_key=str(attempt.pk))
        if record is None:
            # The processor never saw it: nothing was charged.
            settled.append(_settle(attempt, PaymentStatus.FAILED, failure_code="processing_error"))
        elif isinstance(record, PaymentError):
            settled.append(_settle(attempt, PaymentStatus.FAILED, failure_code=record.code))
        elif record.status == "succeeded":
            settled.append(_settle(attempt, PaymentStatus.SUCCEEDED, reference=record.reference))
        elif record.status == "pending" and attempt.status != PaymentStatus.PENDING:
            # A bank transfer whose answer was lost: it is waiting for the money, not failed.
            settled.append(_settle(attempt, PaymentStatus.PENDING, reference=record.reference))
        if progress is not None:
            progress(done, len(open_attempts))
    return settled


def confirm_bank_transfer(prepayment: Prepayment, *, by, reason: str) -> Prepayment:
    """Staff saw the money arrive: tell the processor, then settle from its records (audited with `reason`).
    Confirming twice (two staff at once) settles once: the processor's confirmation and `_settle` are idempotent."""
    if prepayment.status != PaymentStatus.PENDING:
        raise BillingError(_("Only a pending bank transfer can be confirmed."))
    get_processor().confirm_transfer(reference=prepayment.processor_reference)
    return _settle(prepayment, PaymentStatus.SUCCEEDED, reference=prepayment.processor_reference, by=by, reason=reason)


def fail_bank_transfer(prepayment: Prepayment, *, by, reason: str) -> Prepayment:
    """Staff say the money never arrived: the attempt fails and the prepayment is due again (audited with `reason`)."""
    if prepayment.status != PaymentStatus.PENDING:
        raise BillingError(_("Only a pending bank transfer can be marked as failed."))
    return _settle(prepayment, PaymentStatus.FAILED, failure_code="transfer_not_received", by=by, reason=reason)


# Refunds (R16)


def prepayment_left_in(credits) -> Decimal:
    """What remains of the prepayment credit among `credits` (from ledger.credits_with_remaining)."""
    return sum((c.remaining for c in credits if c.kind == CreditKind.PREPAYMENT), Decimal("0"))


def prepayment_left(account: BillingAccount) -> Decimal:
    """What remains of the account's prepayment credit."""
    return prepayment_left_in(ledger.credits_with_remaining(account))


def refundable_from(credits, refund_requests) -> Decimal:
    """The one rule: what is left of the prepayment credit, less refunds already asked for
    (`refund_requests` may include decided ones: only pending ones count)."""
    pending = sum((r.amount for r in refund_requests if r.status == RefundStatus.PENDING), Decimal("0"))
    return max(prepayment_left_in(credits) - pending, Decimal("0"))


def refundable(account: BillingAccount) -> Decimal:
    """`refundable_from` for one account, read now."""
    pending = RefundRequest.objects.filter(account=account, status=RefundStatus.PENDING)
    return refundable_from(ledger.credits_with_remaining(account), pending)


def request_refund(account: BillingAccount, *, amount: Decimal, reason: str, by) -> RefundRequest:
    """Ask for (part of) the remaining prepayment back; staff review it. Never more than remains,
    even with concurrent requests: the account row is locked while checking."""
    with transaction.atomic():
        BillingAccount.objects.select_for_update().get(pk=account.pk)
        available = refundable(account)
        if amount <= 0 or amount > available:
            raise BillingError(_("You can ask for at most USD %(amount)s.") % {"amount": f"{available:.2f}"})
        request = RefundRequest.objects.create(account=account, amount=amount, reason=reason, requested_by=by)
        AuditEvent.record(actor=by, action="refund.request", obj=request, after={"amount": str(amount)})
    return request


def needs_second_approval(amount: Decimal, *, recent: Decimal = Decimal("0")) -> bool:
    """The two-person rule (X10): when `amount` plus what the same account received in the last APPROVAL_WINDOW
    (`recent`) is above settings.STAFF_APPROVAL_THRESHOLD, two Finance members must approve."""
    return amount + recent > settings.STAFF_APPROVAL_THRESHOLD


def recent_refunds(refund: RefundRequest, *, now=None) -> Decimal:
    """What the two-person rule counts besides `refund`: the account's other refunds made within APPROVAL_WINDOW of
    `now`, and every other refund still pending (so that two small requests approved at the same moment, each
    outside the other's lock-free processor call, are each counted by the other's decision)."""
    since = (now or timezone.now()) - APPROVAL_WINDOW
    counted = Q(status=RefundStatus.REFUNDED, reviewed_at__gte=since) | Q(status=RefundStatus.PENDING)
    others = RefundRequest.objects.filter(counted, account_id=refund.account_id).exclude(pk=refund.pk)
    return others.aggregate(total=Sum("amount"))["total"] or Decimal("0")


def refund_needs_two(refund: RefundRequest) -> bool:
    """Whether approving `refund` now takes two Finance members (X10, with the account's recent refunds)."""
    return needs_second_approval(refund.amount, recent=recent_refunds(refund))


def approve_refund(request: RefundRequest, *, by, note: str = "") -> RefundRequest:
    """Staff approve: the money goes back through the processor, then leaves the prepayment credit.

    Two-person rule: when the request plus the account's recent refunds (`recent_refunds`) is above the
    threshold, the first approval is only recorded (first_approved_by/at/note, audit "refund.first_approval")
    and the request stays pending; a second approval by someone else refunds. The first approver approving
    again, or anyone approving their own request, is a BillingError. Deciding first or second happens under
    the account's lock, then the request's, so two approvals at once make one first approval and one refund,
    and approvals of two requests of one account count each other.

    The processor call is idempotent by the request (two staff approving at once refund once) and
    made outside any lock. The ledger is written once, under the account's lock: REFUND entries on
    the prepayment credits; should usage have used the credit meanwhile, the part no longer
    covered is added to what the account owes (an ADJUSTMENT), so the books still balance.
    """
    if request.status != RefundStatus.PENDING:
        return request
    if by is not None and by.pk == request.requested_by_id:
        raise BillingError(_("Nobody may approve their own refund request."))
    attempt = Prepayment.objects.filter(account_id=request.account_id, status=PaymentStatus.SUCCEEDED).first()
    if attempt is None:
        raise BillingError(_("The prepayment credit no longer covers this refund."))
    if prepayment_left(request.account) < request.amount:
        raise BillingError(_("The prepayment credit no longer covers this refund."))
    with transaction.atomic():
        BillingAccount.objects.select_for_update().get(pk=request.account_id)
        locked = RefundRequest.objects.select_for_update().get(pk=request.pk)
        if locked.status != RefundStatus.PENDING:
            return locked
        if locked.first_approved_by_id is not None:
            if by is not None and locked.first_approved_by_id == by.pk:
                raise BillingError(_("You gave the first approval: another Finance member must give the second."))
        elif refund_needs_two(locked):
            return _first_approval(locked, by=by, note=note)
    get_processor().refund(
        reference=attempt.processor_reference, amount=request.amount, idempotency_key=f"refund:{request.pk}"
    )
    with transaction.atomic():
        BillingAccount.objects.select_for_update().get(pk=request.account_id)
        locked = RefundRequest.objects.select_for_update().get(pk=request.pk)
        if locked.status != RefundStatus.PENDING:
            return locked
        ledger.record_prepayment_refund(locked.account, amount=locked.amount, key=f"refund:{locked.pk}", by=by)
        _review(locked, RefundStatus.REFUNDED, by=by, note=note)
    return locked


def _first_approval(locked: RefundRequest, *, by, note: str) -> RefundRequest:
    locked.first_approved_by, locked.first_approved_at, locked.first_approval_note = by, timezone.now(), note
    locked.save(update_fields=["first_approved_by", "first_approved_at", "first_approval_note"])
    AuditEvent.record(
        actor=by,
        actor_kind=ActorKind.STAFF,
        action="refund.first_approval",
        obj=locked,
        before={"first_approved_by": None},
        after={"first_approved_by": by.email if by else None},
        reason=note,
    )
    return locked


def reject_refund(request: RefundRequest, *, by, note: str) -> RefundRequest:
    with transaction.atomic():
        locked = RefundRequest.objects.select_for_update().get(pk=request.pk)
        if locked.status != RefundStatus.PENDING:
            return locked
        _review(locked, RefundStatus.REJECTED, by=by, note=note)
    return locked


def _review(locked: RefundRequest, status: str, *, by, note: str):
    """Record the staff decision on a locked, pending request."""
    locked.status, locked.reviewed_by, locked.reviewed_at, locked.review_note = status, by, timezone.now(), note
    locked.save(update_fields=["status", "reviewed_by", "reviewed_at", "review_note"])
    action = "refund.approve" if status == RefundStatus.REFUNDED else "refund.reject"
    AuditEvent.record(
        actor=by,
        actor_kind=ActorKind.STAFF,
        action=action,
        obj=locked,
        before={"status": RefundStatus.PENDING},
        after={"status": status},
        reason=note,
    )
    emails.refund_decided(locked)
