"""E-mails about billing, each in the recipient's language (X11).

Call these inside the transaction of the change they tell about: `send_mail` writes an outbox row
(studio.outbox), which commits or rolls back with the change and is delivered by the job runner.
"""

from django.conf import settings
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.utils import translation

from billing.models import RefundStatus
from studio.models import Role


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
