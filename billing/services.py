"""Billing work across models and the payment processor: set-up, linking, policy.

Every function that changes state runs in a transaction, locks what it re-checks, and writes
an audit event. Errors the user can fix are raised as BillingError with a translated message.
"""

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from billing import emails, ledger, tiers
from billing.models import (
    AccountStatus,
    BillingAccount,
    BillingAdministrator,
    CreditKind,
    PaymentMethod,
    PaymentsProfile,
    PrepaymentMethodRule,
    PrepaymentStatus,
    ProjectBilling,
    SetupSession,
    SuspensionReason,
)
from billing.models.wizard import SetupFlow
from billing.processor import get_processor
from studio.models import ActorKind, AuditEvent, BillingState, Project, Tier


class BillingError(Exception):
    """A billing request that cannot be carried out; the message is translated and safe to show."""


# Policy (R12)


@dataclass(frozen=True)
class PrepaymentDecision:
    amount: Decimal | None  # None: no prepayment is required
    reasons: tuple[str, ...]


def required_prepayment(account: BillingAccount) -> PrepaymentDecision:
    """Whether the account must make a one-time prepayment, how much and why.

    Rules are data: the country's flag and amount, a rule per payment-method kind, and the
    staff flag on the account. The largest applicable amount wins.
    """
    amounts, reasons = [], []
    if account.country.prepayment_required:
        amounts.append(account.country.prepayment_amount or settings.PREPAYMENT_DEFAULT_AMOUNT)
        reasons.append(
            _("New billing accounts in %(country)s make a one-time prepayment.") % {"country": account.country.name}
        )
    method_kind = account.primary_payment_method.kind
    rule = PrepaymentMethodRule.objects.filter(active=True, payment_method_kind=method_kind).first()
    if rule is not None:
        amounts.append(rule.amount)
        reasons.append(
            _("Accounts paying by %(kind)s make a one-time prepayment.")
            % {"kind": account.primary_payment_method.get_kind_display().lower()}
        )
    if account.prepayment_flagged:
        amounts.append(settings.PREPAYMENT_DEFAULT_AMOUNT)
        reasons.append(_("Our billing team asked for a one-time prepayment on this account."))
    return PrepaymentDecision(max(amounts) if amounts else None, tuple(reasons))


def project_state_for(account: BillingAccount) -> tuple[str, str]:
    """(tier, billing state) for a project linked to `account`: free while the account is
    suspended or closed (R18) or its prepayment is outstanding, otherwise the tier the account
    qualifies for (R17)."""
    if account.status != AccountStatus.ACTIVE:
        return Tier.FREE, BillingState.SUSPENDED
    if account.prepayment_outstanding:
        return Tier.FREE, BillingState.PREPAYMENT_DUE
    return tiers.eligible_tier(account), BillingState.ACTIVE


def reevaluate_projects(account: BillingAccount, *, by, reason: str, from_states=None, actor_kind=None):
    """Put every project linked to `account` (in `from_states`, if given) in the state the account now gives it.
    `actor_kind` as for AuditEvent.record (staff decisions pass ActorKind.STAFF)."""
    state = project_state_for(account)
    for link in ProjectBilling.objects.select_related("project").filter(account=account):
        tiers.set_project_tier(
            link.project,
            *state,
            by=by,
            reason=reason,
            linked_to=account,
            from_states=from_states,
            actor_kind=actor_kind,
        )


def set_account_status(
    account: BillingAccount,
    status: str,
    *,
    by,
    reason: str,
    cause: str = SuspensionReason.STAFF,
    actor_kind: str | None = ActorKind.STAFF,
) -> BillingAccount:
    """Suspend, reinstate or close a billing account; its projects follow (R18).

    Staff (R25) by default; dunning (`billing.dunning`) suspends with `cause=PAST_DUE` as the
    system and reinstates as the system or the administrator who paid (`actor_kind=None`: decided
    by `by`). A suspension keeps its cause (a reinstatement clears it), so a payment lifts only
    dunning's own suspension; staff suspending a suspended account make the suspension theirs.
    A closed account stays closed: suspending or reinstating it raises BillingError.
    """
    with transaction.atomic():
        locked = BillingAccount.objects.select_for_update().get(pk=account.pk)
        if locked.status == AccountStatus.CLOSED and status != AccountStatus.CLOSED:
            raise BillingError(_("This billing account is closed: it cannot be suspended or reinstated."))
        suspension_reason = cause if status == AccountStatus.SUSPENDED else ""
        if (locked.status, locked.suspension_reason) == (status, suspension_reason):
            return locked
        before = {"status": locked.status, "suspension_reason": locked.suspension_reason}
        locked.status, locked.suspension_reason = status, suspension_reason
        locked.save(update_fields=["status", "suspension_reason"])
        AuditEvent.record(
            actor=by,
            actor_kind=actor_kind,
            action="billing_account.status",
            obj=locked,
            before=before,
            after={"status": status, "suspension_reason": suspension_reason},
            reason=reason,
        )
        reevaluate_projects(locked, by=by, reason=gettext_noop("Billing account status changed"), actor_kind=actor_kind)
    return locked


def require_prepayment(account: BillingAccount, *, by, reason: str) -> BillingAccount:
    """Staff flag (R12): the account must make the one-time prepayment; its projects show Action required."""
    with transaction.atomic():
        locked = BillingAccount.objects.select_for_update().get(pk=account.pk)
        if locked.prepayment_flagged:
            return locked
        locked.prepayment_flagged = True
        update = ["prepayment_flagged"]
        if locked.prepayment_status == PrepaymentStatus.NOT_REQUIRED:
            locked.prepayment_status = PrepaymentStatus.REQUIRED
            locked.prepayment_amount = required_prepayment(locked).amount
            update += ["prepayment_status", "prepayment_amount"]
        locked.save(update_fields=update)
        AuditEvent.record(
            actor=by, actor_kind=ActorKind.STAFF, action="billing_account.require_prepayment", obj=locked, reason=reason
        )
        reevaluate_projects(locked, by=by, reason=gettext_noop("Prepayment required"))
        emails.prepayment_required(locked, required_prepayment(locked))  # the outbox row commits with the flag
    return locked


def dismiss_prepayment_notice(account: BillingAccount, *, by) -> bool:
    """The administrator `by` hides the "Action required" notice of `account` (R12), once: False if it already was."""
    with transaction.atomic():
        role = BillingAdministrator.objects.select_for_update().filter(account=account, user=by).first()
        if role is None or role.prepayment_notice_dismissed_at is not None:
            return False
        role.prepayment_notice_dismissed_at = timezone.now()
        role.save(update_fields=["prepayment_notice_dismissed_at"])
        AuditEvent.record(actor=by, action="billing_account.dismiss_notice", obj=account)
    return True


# Linking (R18)


def link_project(project: Project, account: BillingAccount, *, by) -> ProjectBilling:
    """Link (or move) a project to `account` and re-evaluate its tier."""
    with transaction.atomic():
        # Its status and prepayment state are read under its lock: the caller's copy may be stale.
        account = BillingAccount.objects.select_for_update().get(pk=account.pk)
        if account.status != AccountStatus.ACTIVE:
            raise BillingError(_("This billing account is suspended or closed. Choose another one."))
        link, _created = ProjectBilling.objects.select_for_update().update_or_create(
            project=project, defaults={"account": account, "linked_by": by, "linked_at": timezone.now()}
        )
        AuditEvent.record(actor=by, action="project.billing_link", obj=project, after={"account": account.account_id})
        tiers.set_project_tier(
            project, *project_state_for(account), by=by, reason=gettext_noop("Billing account linked")
        )
        tiers.note_billing_period(project)  # a move between accounts at the same tier changes who pays
    return link


def unlink_project(project: Project, *, by):
    """Back to the free tier (R18)."""
    with transaction.atomic():
        deleted, _ = ProjectBilling.objects.filter(project=project).delete()
        if deleted:
            AuditEvent.record(actor=by, action="project.billing_unlink", obj=project)
            tiers.set_project_tier(
                project, Tier.FREE, BillingState.NONE, by=by, reason=gettext_noop("Billing account unlinked")
            )


# Payments profile and payment methods


def save_contact(user, **fields) -> PaymentsProfile:
    profile, created = PaymentsProfile.objects.update_or_create(owner=user, defaults=fields)
    AuditEvent.record(
        actor=user, action="payments_profile.create" if created else "payments_profile.update", obj=profile
    )
    return profile


def add_card(
    profile: PaymentsProfile, *, number: str, exp_month: int, exp_year: int, cvc: str, brand: str, by
) -> PaymentMethod:
    """Verify the card with the processor and keep its token. The number goes no further.

    Raises billing.processor.PaymentError when the processor declines it.
    """
    token = get_processor().tokenize_card(number=number, exp_month=exp_month, exp_year=exp_year, cvc=cvc, brand=brand)
    method = PaymentMethod.objects.create(
        profile=profile,
        brand=token.brand,
        last4=token.last4,
        exp_month=exp_month,
        exp_year=exp_year,
        processor_token=token.token,
    )
    AuditEvent.record(
        actor=by, action="payment_method.add", obj=method, after={"brand": method.brand, "last4": method.last4}
    )
    return method


def make_primary(account: BillingAccount, method: PaymentMethod, *, by):
    with transaction.atomic():
        locked = BillingAccount.objects.select_for_update().get(pk=account.pk)
        before = locked.primary_payment_method_id
        locked.primary_payment_method = method
        locked.save(update_fields=["primary_payment_method"])
        AuditEvent.record(
            actor=by,
            action="billing_account.primary_payment_method",
            obj=locked,
            before={"id": before},
            after={"id": method.pk},
        )


def remove_payment_method(method: PaymentMethod, *, by):
    with transaction.atomic():
        locked = PaymentMethod.objects.select_for_update().get(pk=method.pk)
        if locked.primary_for.exists():
            raise BillingError(
                _("This is the primary payment method of a billing account. Make another one primary first.")
            )
        if locked.removed_at is None:
            locked.removed_at = timezone.now()
            locked.save(update_fields=["removed_at"])
            AuditEvent.record(actor=by, action="payment_method.remove", obj=locked)


# The set-up wizard (R8–R10)


def is_new_billing_user(user) -> bool:
    return not BillingAccount.objects.administered_by(user).exists()


def start_setup(user, *, project: Project | None = None) -> SetupSession:
    """The user's open set-up (a second tab resumes it), created if there is none."""
    flow = SetupFlow.NEW if is_new_billing_user(user) else SetupFlow.EXISTING
    with transaction.atomic():
        session = SetupSession.objects.select_for_update().filter(user=user, finished_at__isnull=True).first()
        if session is None:
            try:
                with transaction.atomic():
                    session = SetupSession.objects.create(user=user, flow=flow)
                    AuditEvent.record(actor=user, action="setup.start", obj=session, after={"flow": flow})
            except IntegrityError:  # another tab created it a moment ago
                session = SetupSession.objects.select_for_update().get(user=user, finished_at__isnull=True)
        if project is not None and project != session.project:
            session.choose_project(project, project.api_keys.active().order_by("created_at").first())
    return session


def finish_setup(session: SetupSession) -> BillingAccount:
    """Create or pick the billing account, link the project, grant the welcome credit. Idempotent.

    Effects, once per set-up however often it is called (double click, retry, two tabs): at most
    one billing account, one link, one welcome credit (only for a person's first account, R10).
    """
    with transaction.atomic():
        session = SetupSession.objects.select_for_update().get(pk=session.pk)
        if session.is_finished:
            return session.result
        user = session.user
        if session.project is None or not Project.objects.writable_by(user).filter(pk=session.project_id).exists():
            raise BillingError(_("Choose a project you can manage."))
        if session.flow == SetupFlow.EXISTING and session.selected_account is not None:
            account = session.selected_account
            if not BillingAccount.objects.administered_by(user).filter(pk=account.pk).exists():
                raise BillingError(_("Choose one of your billing accounts."))
        else:
            account = _create_account(session)
        link_project(session.project, account, by=user)
        session.result = account
        session.finished_at = timezone.now()
        session.save(update_fields=["result", "finished_at", "welcome_credit_granted"])
        AuditEvent.record(
            actor=user,
            action="setup.finish",
            obj=session,
            after={"account": account.account_id, "welcome_credit": session.welcome_credit_granted},
        )
    return account


def _create_account(session: SetupSession) -> BillingAccount:
    user = session.user
    profile = PaymentsProfile.objects.filter(owner=user).first()
    method = session.payment_method
    if session.country is None or not session.terms_accepted:
        raise BillingError(_("Choose your country and accept the terms of service."))
    if profile is None:
        raise BillingError(_("Add your contact information."))
    if method is None or method.profile_id != profile.pk or method.removed_at is not None:
        raise BillingError(_("Add a payment method."))
    first_account = is_new_billing_user(user)
    number = BillingAccount.objects.administered_by(user).count() + 1
    account = BillingAccount.objects.create(
        display_name=_("My billing account %(number)d") % {"number": number},
        country=session.country,
        payments_profile=profile,
        primary_payment_method=method,
        created_by=user,
    )
    BillingAdministrator.objects.create(account=account, user=user)
    decision = required_prepayment(account)
    if decision.amount is not None:
        account.prepayment_status, account.prepayment_amount = PrepaymentStatus.REQUIRED, decision.amount
        account.save(update_fields=["prepayment_status", "prepayment_amount"])
        # Written to the outbox in this transaction: sent by the job runner, it can never fail the set-up.
        emails.prepayment_required(account, decision)
    AuditEvent.record(
        actor=user,
        action="billing_account.create",
        obj=account,
        after={"account_id": account.account_id, "prepayment": account.prepayment_status},
    )
    if first_account and not hasattr(user, "welcome_credit"):
        credit = ledger.grant_credit(
            account,
            kind=CreditKind.WELCOME,
            amount=settings.WELCOME_CREDIT_AMOUNT,
            expires_at=timezone.now() + timedelta(days=settings.WELCOME_CREDIT_DAYS),
            source=_("Welcome credit for your first billing account"),
            welcome_for=user,
            by=user,
        )
        AuditEvent.record(
            actor=user,
            action="credit.grant",
            obj=credit,
            after={"kind": credit.kind, "amount": str(credit.original_amount), "expires_at": str(credit.expires_at)},
        )
        session.welcome_credit_granted = True
    return account
