"""E-mails about billing, each in the recipient's language (X11).

Call these inside the transaction of the change they tell about: `send_mail` writes an outbox row
(studio.outbox), which commits or rolls back with the change and is delivered by the job runner.
"""

from django.conf import settings
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.utils import timezone, translation

from billing.models import RefundStatus
from studio.models import Role
from studio.zones import days_between, person_zone


def _send(user, template: str, context: dict):
    with translation.override(user.language or settings.LANGUAGE_CODE):
        subject = render_to_string(f"billing/email/{template}_subject.txt", context).strip()
        body = render_to_string(f"billing/email/{template}.txt", {**context, "user": user})
    send_mail(subject, body, None, [user.email])


def _administrators(account):
    return [admin.user for admin in account.administrators.select_related("user")]


def prepayment_required(account, decision):
    for user in _administrators(account):
        _send(user, "prepayment_required", {"account": account, "decision": decision})


def prepayment_succeeded(prepayment):
    account = prepayment.account
    projects = [link.project for link in account.project_links.select_related("project")]
    for user in _administrators(account):
        _send(user, "prepayment_succeeded", {"account": account, "prepayment": prepayment, "projects": projects})


def tier_upgraded(project):
    for membership in project.memberships.filter(role=Role.OWNER).select_related("user"):
        _send(membership.user, "tier_upgraded", {"project": project})


def refund_decided(request):
    """The requester learns whether their refund was approved (and made) or rejected."""
    template = "refund_approved" if request.status == RefundStatus.REFUNDED else "refund_rejected"
    _send(request.requested_by, template, {"request": request, "account": request.account})


def goodwill_granted(grant) -> int:
    """Staff granted a goodwill credit: each administrator reads its amount and expiry in their own
    zone and language. Returns how many were written to."""
    users = _administrators(grant.account)
    for user in users:
        zone = person_zone(user)
        with timezone.override(zone):
            _send(user, "goodwill_granted", {"account": grant.account, "grant": grant, "zone": zone.key})
    return len(users)


def credit_expiring(credit, *, remaining, now) -> int:
    """X2: a credit expires soon. Each administrator reads its expiry in their own zone (their
    setting, else UTC) and language. Returns how many were written to."""
    users = _administrators(credit.account)
    for user in users:
        zone = person_zone(user)
        with timezone.override(zone):
            context = {
                "account": credit.account,
                "credit": credit,
                "remaining": remaining,
                "days": days_between(now, credit.expires_at, zone),
                "zone": zone.key,
            }
            _send(user, "credit_expiring", context)
    return len(users)


def budget_alert(status, alerts) -> int:
    """X3: a budget crossed `alerts` (BudgetAlert rows of one month) on `status` (billing.budgets.BudgetStatus).
    One e-mail per administrator of the account names them all. Returns how many were written to."""
    budget = status.budget
    # The subject names the most pressing threshold: the highest of actual spend, else of the forecast.
    top = max(alerts, key=lambda alert: (alert.basis == "actual", alert.percent))
    users = _administrators(budget.account)
    context = {"budget": budget, "account": budget.account, "status": status, "alerts": alerts, "top": top}
    for user in users:
        _send(user, "budget_alert", context)
    return len(users)


def statement_payment_failed(payment, *, next_retry_at, suspended: bool, url: str) -> list:
    """Dunning (SPEC §9): a charge of a statement failed. Each administrator reads why, when the next
    retry is (in their zone and language) or that the account is now suspended, and the link to pay
    from the statement page. Returns the users written to."""
    statement = payment.statement
    users = _administrators(statement.account)
    for user in users:
        zone = person_zone(user)
        with timezone.override(zone):
            context = {
                "account": statement.account,
                "statement": statement,
                "payment": payment,
                "next_retry_at": next_retry_at,
                "suspended": suspended,
                "url": url,
                "zone": zone.key,
            }
            _send(user, "statement_payment_failed", context)
    return users
