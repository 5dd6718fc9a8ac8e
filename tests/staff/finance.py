"""Helpers of the Finance queue tests (refunds, transfers, past due, suspension, goodwill)."""

import uuid
from decimal import Decimal

from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.models import PaymentStatus
from billing.payments import pay_prepayment, request_refund
from studio.models import AuditEvent
from tests.factories import make_account, make_project, make_user

D = Decimal


def paid_account(owner, amount="250", *, name=None):
    """A billing account of `owner` whose one-time prepayment of `amount` succeeded (prepayment credit)."""
    account = make_account(owner, name=name, prepayment_due=True, projects=[make_project(owner)])
    attempt = pay_prepayment(
        account,
        attempt_id=uuid.uuid4(),
        amount=D(amount),
        payment_method=account.primary_payment_method,
        by=owner,
    )
    assert attempt.status == PaymentStatus.SUCCEEDED
    return account


def refund_of(amount, *, owner=None, paid="250"):
    """A pending refund request of `amount` on a new account paid `paid`."""
    owner = owner or make_user()
    return request_refund(paid_account(owner, paid), amount=D(amount), reason="Project ended", by=owner)


def audit(obj) -> list[tuple]:
    """Every audit row about `obj`, oldest first: (action, actor e-mail, actor kind, before, after, reason)."""
    rows = AuditEvent.objects.filter(object_type=obj._meta.label_lower, object_id=str(obj.pk)).order_by("pk")
    return [(e.action, e.actor.email if e.actor else None, e.actor_kind, e.before, e.after, e.reason) for e in rows]


def records(response) -> list:
    """The rows a list page's table shows (its records, in order)."""
    return [row.record for row in response.context["table"].paginated_rows]


def queries(client, url) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured)


def nav_count(user, label) -> int | None:
    """The count the staff navigation shows `user` next to `label`."""
    from django.test import RequestFactory

    from staff.nav import navigation

    request = RequestFactory().get("/staff/")
    request.user = user
    return next(item.count for item in navigation(request) if str(item.label) == label)
