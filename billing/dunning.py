"""Dunning (SPEC §9, R18): what happens after a statement charge fails.

- **Retries.** A failed charge is retried with the account's primary payment method 1, 3 and 7 days
  after the statement's first failure (`RETRY_AFTER`), by the `retry_statement_payments` job. Each
  scheduled retry is one `StatementPayment` attempt at most (a unique key on statement × retry),
  claimed under the account's and the statement's locks and committed before the processor is
  called, so a second or concurrent run finds it and charges nothing. A run that missed a retry
  (the job was down) makes only the latest one due: one attempt, not a burst of them.
- **E-mail.** Every failed attempt of the jobs (the charge on the 2nd, each retry, an unknown
  outcome settled as failed) e-mails the billing administrators, in their language and zone, with
  the next retry's time (or the suspension) and the statement page's link. A payment made from the
  statement page is not e-mailed: its payer sees the outcome there.
- **Suspension.** When the last retry fails, the account is suspended through the one mechanism
  there is (`billing.services.set_account_status`, cause `past_due`): its projects go to the
  suspended billing state and quota:check denies their requests with BILLING_DISABLED (it reads the
  account's status on every request; nothing caches it).
- **Payment.** A billing administrator pays a past-due statement from its page with any of their
  cards (`pay_statement`; the form's attempt id is the processor's idempotency key, so a double
  submit charges once). A successful payment, or a successful retry, reinstates an account that
  dunning suspended, at once, unless another statement of it is still past due after its last
  retry. A suspension by staff is never lifted by a payment.

Every step is in the audit log: `statement.payment.start` / `statement.payment.retry` (an
attempt), `statement.payment.settle` (its outcome), `statement.dunning.email` (who was written to),
`billing_account.status` (suspension and reinstatement), with the user who paid or none (a job).
All of it is written in the transaction that settles the attempt.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from billing import emails, services
from billing.models import (
    AccountStatus,
    AttemptStatus,
    BillingAccount,
    PaymentMethod,
    Statement,
    StatementPayment,
    StatementStatus,
    SuspensionReason,
)
from billing.models.statements import RETRY_AFTER
from billing.services import BillingError
from billing.statements import send_payment, settle_open_payments
from studio.models import AuditEvent

log = logging.getLogger(__name__)

LAST_RETRY = len(RETRY_AFTER)
OPEN = (AttemptStatus.PROCESSING, AttemptStatus.UNKNOWN)


def due_retry(statement: Statement, made: set[int], *, at: datetime) -> int | None:
    """The scheduled retry to make at `at`: the latest one due, if neither it nor a later one was made."""
    due = [n for n in range(1, LAST_RETRY + 1) if statement.retry_at(n) <= at]
    if not due or any(n >= due[-1] for n in made):
        return None
    return due[-1]


def next_retry_at(statement: Statement, after: int) -> datetime | None:
    """When the scheduled retry following retry number `after` (0: the first charge) is due."""
    return statement.retry_at(after + 1) if after < LAST_RETRY else None


def upcoming_retry(statement: Statement, payments) -> datetime | None:
    """When a past-due statement's next scheduled retry is due (None: no retry left), from its
    attempts (`payments`, already read)."""
    if not statement.is_past_due or statement.first_failed_at is None:
        return None
    return next_retry_at(statement, max((p.retry or 0 for p in payments), default=0))


def statement_url(statement: Statement) -> str:
    path = reverse("billing:statement", args=[statement.account.account_id, statement.slug])
    return f"{settings.SITE_URL}{path}"


def retry_statement(statement: Statement, *, at=None) -> StatementPayment | None:
    """Make the scheduled retry due now of a past-due statement, once. Returns the settled attempt,
    or None when there is nothing to retry (paid, no retry due, already made, an attempt still open)."""
    at = at or timezone.now()
    with transaction.atomic():
        account = (
            BillingAccount.objects.select_for_update()
            .select_related("primary_payment_method")
            .get(pk=statement.account_id)
        )
        locked = Statement.objects.select_for_update().get(pk=statement.pk)
        if locked.status != StatementStatus.PAYMENT_FAILED or locked.first_failed_at is None:
            return None
        if locked.payments.filter(status__in=OPEN).exists():
            return None  # its outcome decides; settle_open_payments settles it
        made = set(locked.payments.exclude(retry=None).values_list("retry", flat=True))
        retry = due_retry(locked, made, at=at)
        if retry is None:
            return None
        method = account.primary_payment_method
        if method is not None and method.removed_at is not None:
            method = None
        payment = StatementPayment.objects.create(
            statement=locked,
            attempt=locked.payments.count() + 1,
            retry=retry,
            amount=locked.amount_due,
            payment_method=method,
            created_at=at,
        )
        AuditEvent.record(
            actor=None,
            action="statement.payment.retry",
            obj=payment,
            after={"retry": retry, "attempt": payment.attempt, "amount": str(payment.amount)},
        )
    return send_payment(payment, at=at)


@dataclass
class RetryReport:
    paid: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    unknown: list = field(default_factory=list)
    settled: list = field(default_factory=list)
    suspended: list = field(default_factory=list)


def retry_due(*, at=None, progress=None) -> RetryReport:
    """The `retry_statement_payments` job: settle attempts of unknown outcome, then make every
    scheduled retry that is due (one attempt each). `progress(payment)` is called after each retry."""
    at = at or timezone.now()
    report = RetryReport(settled=settle_open_payments(at=at))
    candidates = (
        Statement.objects.filter(
            status=StatementStatus.PAYMENT_FAILED, first_failed_at__lte=at - RETRY_AFTER[0], suspended_at=None
        )
        .exclude(payments__retry=LAST_RETRY)
        .select_related("account")
        .order_by("first_failed_at", "pk")
    )
    for statement in candidates:
        payment = retry_statement(statement, at=at)
        if payment is None:
            continue
        bucket = {AttemptStatus.SUCCEEDED: report.paid, AttemptStatus.FAILED: report.failed}.get(
            payment.status, report.unknown
        )
        bucket.append(payment)
        if payment.status == AttemptStatus.FAILED and payment.retry == LAST_RETRY:
            report.suspended.append(payment.statement.account)
        if progress is not None:
            progress(payment)
    return report


def pay_statement(
    statement: Statement, *, attempt_id, payment_method: PaymentMethod, by, make_primary: bool = False
) -> StatementPayment:
    """A billing administrator pays a past-due statement's amount due with `payment_method`.

    Effects: a StatementPayment attempt whose id is `attempt_id` (the processor's idempotency key),
    one charge, then `settle_payment` (on success: the ledger payment, the statement paid, the
    account reinstated if dunning suspended it); on success with `make_primary`, the card becomes
    the account's primary payment method. A repeat of the same attempt (double submit, two tabs)
    returns that attempt and charges nothing more. Raises BillingError when nothing can be paid.
    """
    with transaction.atomic():
        BillingAccount.objects.select_for_update().get(pk=statement.account_id)
        locked = Statement.objects.select_for_update().get(pk=statement.pk)
        existing = StatementPayment.objects.filter(pk=attempt_id).first()
        if existing is not None:
            if existing.statement_id != locked.pk:
                raise BillingError(_("This payment belongs to another statement."))
            return existing
        if locked.status != StatementStatus.PAYMENT_FAILED:
            raise BillingError(_("This statement has nothing left to pay."))
        if locked.payments.filter(status__in=OPEN).exists():
            raise BillingError(_("A payment of this statement is already being processed. Try again in a few minutes."))
        try:
            with transaction.atomic():
                payment = StatementPayment.objects.create(
                    id=attempt_id,
                    statement=locked,
                    attempt=locked.payments.count() + 1,
                    amount=locked.amount_due,
                    payment_method=payment_method,
                    created_by=by,
                )
        except IntegrityError:
            return StatementPayment.objects.get(pk=attempt_id)
        AuditEvent.record(
            actor=by,
            action="statement.payment.start",
            obj=payment,
            after={"attempt": payment.attempt, "amount": str(payment.amount), "payment_method": payment_method.pk},
        )
    settled = send_payment(payment)
    if settled.status == AttemptStatus.SUCCEEDED and make_primary:
        account = BillingAccount.objects.get(pk=statement.account_id)
        if account.primary_payment_method_id != payment_method.pk:
            services.make_primary(account, payment_method, by=by)
    return settled


def after_settle(account: BillingAccount, statement: Statement, payment: StatementPayment, *, at) -> None:
    """Dunning's part of settling an attempt (`billing.statements.settle_payment`, under the
    account's and the statement's locks, in its transaction): the failure e-mail and, after the
    last retry, the suspension; on success, the reinstatement."""
    if payment.status == AttemptStatus.FAILED:
        if payment.retry == LAST_RETRY and statement.suspended_at is None:
            _suspend(account, statement, at=at)
        if payment.created_by_id is None:
            _email_failure(statement, payment)
    elif payment.status == AttemptStatus.SUCCEEDED:
        _reinstate(account, statement, by=payment.created_by)


def _suspend(account, statement, *, at):
    statement.suspended_at = at
    statement.save(update_fields=["suspended_at"])
    if account.status != AccountStatus.ACTIVE:
        return  # suspended or closed by staff already: theirs stays theirs
    services.set_account_status(
        account,
        AccountStatus.SUSPENDED,
        by=None,
        reason=f"statement {statement.slug} unpaid after the last retry",
        cause=SuspensionReason.PAST_DUE,
        actor_kind=None,
    )
    log.warning("billing account %s suspended: statement %s unpaid", account.account_id, statement.slug)


def _reinstate(account, statement, *, by):
    if account.status != AccountStatus.SUSPENDED or account.suspension_reason != SuspensionReason.PAST_DUE:
        return
    still_due = Statement.objects.filter(
        account=account, status=StatementStatus.PAYMENT_FAILED, suspended_at__isnull=False
    ).exclude(pk=statement.pk)
    if still_due.exists():
        return
    services.set_account_status(
        account,
        AccountStatus.ACTIVE,
        by=by,
        reason=f"statement {statement.slug} paid",
        actor_kind=None,
    )


def _email_failure(statement, payment):
    suspended = statement.suspended_at is not None
    retry_at = None if suspended else next_retry_at(statement, payment.retry or 0)
    users = emails.statement_payment_failed(
        payment, next_retry_at=retry_at, suspended=suspended, url=statement_url(statement)
    )
    AuditEvent.record(
        actor=None,
        action="statement.dunning.email",
        obj=payment,
        after={
            "to": [user.email for user in users],
            "suspended": suspended,
            "next_retry_at": retry_at.isoformat() if retry_at else None,
        },
    )
