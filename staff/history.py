"""Audit history as staff read it: one object's, or everything about one customer (X10)."""

from django.db.models import Q, QuerySet

from studio.models import AuditEvent


def object_filter(obj) -> Q:
    return Q(object_type=obj._meta.label_lower, object_id=str(obj.pk))


def for_object(obj, *, limit: int = 50) -> list[AuditEvent]:
    """The newest `limit` audit events about `obj`, newest first, with their actors."""
    return list(
        AuditEvent.objects.filter(object_filter(obj)).select_related("actor").order_by("-created_at", "-pk")[:limit]
    )


def customer_filter(user) -> Q:
    """What a customer did, and what anybody did to them, their projects, keys and billing accounts
    (and to the requests they made on those)."""
    from billing.models import BillingAccount, GoodwillGrant, RefundRequest
    from studio.models import ApiKey, Project
    from usage.models import QuotaIncreaseRequest

    projects = list(Project.objects.filter(memberships__user=user).values_list("pk", flat=True))
    accounts = list(BillingAccount.objects.administered_by(user).values_list("pk", flat=True))
    related = {
        "studio.user": [user.pk],
        "studio.project": projects,
        "studio.apikey": ApiKey.objects.filter(project__in=projects).values_list("pk", flat=True),
        "billing.billingaccount": accounts,
        "billing.refundrequest": RefundRequest.objects.filter(account__in=accounts).values_list("pk", flat=True),
        "billing.goodwillgrant": GoodwillGrant.objects.filter(account__in=accounts).values_list("pk", flat=True),
        "usage.quotaincreaserequest": QuotaIncreaseRequest.objects.filter(project__in=projects).values_list(
            "pk", flat=True
        ),
    }
    condition = Q(actor=user)
    for object_type, pks in related.items():
        condition |= Q(object_type=object_type, object_id__in=[str(pk) for pk in pks])
    return condition


def for_customer(user) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(customer_filter(user)).select_related("actor").order_by("-created_at", "-pk")
