"""The staff console's navigation: each entry shown to those holding its permission, queues with their counts."""

from dataclasses import dataclass

from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from billing.models import (
    BillingAccount,
    GoodwillGrant,
    GoodwillStatus,
    PaymentStatus,
    Prepayment,
    RefundRequest,
    RefundStatus,
    StatementStatus,
)
from staff import roles
from usage.models import QuotaIncreaseRequest, QuotaRequestStatus


def pending_refunds():
    return RefundRequest.objects.filter(status=RefundStatus.PENDING)


def pending_transfers():
    return Prepayment.objects.filter(status=PaymentStatus.PENDING, by_bank_transfer=True)


def pending_quota_requests():
    return QuotaIncreaseRequest.objects.filter(status=QuotaRequestStatus.PENDING)


def pending_goodwill():
    return GoodwillGrant.objects.filter(status=GoodwillStatus.PENDING)


def past_due_accounts():
    """Accounts with a statement whose payment failed and is still unpaid (billing.dunning)."""
    return BillingAccount.objects.filter(statements__status=StatementStatus.PAYMENT_FAILED).distinct()


@dataclass(frozen=True)
class Entry:
    url_name: str
    label: str
    permission: str
    count: object = None  # a function returning a queryset: its count is shown


ENTRIES = [
    Entry("staff:lookup", _("Customers"), roles.LOOKUP),
    Entry("staff:refunds", _("Refund requests"), roles.DECIDE_REFUND, pending_refunds),
    Entry("staff:transfers", _("Bank transfers"), roles.DECIDE_TRANSFER, pending_transfers),
    Entry("staff:quota-requests", _("Quota increases"), roles.DECIDE_QUOTA, pending_quota_requests),
    Entry("staff:past-due", _("Past-due accounts"), roles.SUSPEND, past_due_accounts),
    Entry("staff:goodwill", _("Goodwill credits"), roles.GRANT_GOODWILL, pending_goodwill),
    Entry("staff:promotions", _("Promotional codes"), roles.MANAGE_PROMOTIONS),
    Entry("staff:audit", _("Audit log"), roles.VIEW_AUDIT),
]


@dataclass(frozen=True)
class Item:
    url: str
    label: str
    count: int | None
    current: bool


def navigation(request) -> list[Item]:
    """The entries `request.user` may open, with the counts of their queues (one query each)."""
    user, items = request.user, []
    for entry in ENTRIES:
        if not user.has_perm(entry.permission):
            continue
        url = reverse(entry.url_name)
        count = entry.count().count() if entry.count else None
        items.append(Item(url, entry.label, count, request.path.startswith(url)))
    return items
