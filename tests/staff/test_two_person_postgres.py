"""The two-person rule under concurrency (PostgreSQL, real threads): approvals made at once decide once."""

from datetime import timedelta

import pytest
from django.utils import timezone

from billing.goodwill import approve_goodwill, request_goodwill
from billing.models import (
    Credit,
    EntryKind,
    GoodwillGrant,
    GoodwillReason,
    GoodwillStatus,
    LedgerEntry,
    RefundRequest,
    RefundStatus,
    TestProcessorCharge,
)
from billing.payments import approve_refund
from billing.services import BillingError
from staff import roles
from studio.models import AuditEvent
from tests.concurrency import at_once
from tests.factories import make_account, make_staff, make_user
from tests.staff.finance import D, refund_of

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def finance_members(count):
    return [make_staff(f"finance{i}@staff.example", roles.FINANCE) for i in range(count)]


def actions(obj):
    rows = AuditEvent.objects.filter(object_type=obj._meta.label_lower, object_id=str(obj.pk)).order_by("pk")
    return [(e.action, e.actor.email if e.actor else None) for e in rows]


def refund_effects(refund):
    return (
        list(TestProcessorCharge.objects.filter(status="refunded").values_list("idempotency_key", "amount")),
        list(
            LedgerEntry.objects.filter(account_id=refund.account_id, kind__in=[EntryKind.REFUND, EntryKind.ADJUSTMENT])
            .order_by("pk")
            .values_list("kind", "amount")
        ),
    )


def test_two_second_approvals_at_once_refund_once():
    first, second, third = finance_members(3)
    refund = refund_of("150")
    approve_refund(refund, by=first, note="first")
    approvers = [second, third]

    results, errors = at_once(
        lambda i: approve_refund(RefundRequest.objects.get(pk=refund.pk), by=approvers[i], note="second").status, 2
    )

    assert (errors, results) == ([], [RefundStatus.REFUNDED, RefundStatus.REFUNDED])
    assert refund_effects(refund) == (
        [(f"refund:{refund.pk}", D("-150.00"))],
        [(EntryKind.REFUND, D("-150.000000"))],
    )
    refund.refresh_from_db()
    assert refund.reviewed_by in approvers
    assert actions(refund) == [
        ("refund.request", refund.requested_by.email),
        ("refund.first_approval", first.email),
        ("refund.approve", refund.reviewed_by.email),
    ]


def test_two_first_approvals_at_once_make_one_first_approval_and_one_refund():
    members = finance_members(2)
    refund = refund_of("150")

    _, errors = at_once(
        lambda i: approve_refund(RefundRequest.objects.get(pk=refund.pk), by=members[i], note="at once"), 2
    )

    assert errors == []
    refund.refresh_from_db()
    assert refund.status == RefundStatus.REFUNDED
    assert {refund.first_approved_by, refund.reviewed_by} == set(members)  # two different people decided
    assert refund_effects(refund) == ([(f"refund:{refund.pk}", D("-150.00"))], [(EntryKind.REFUND, D("-150.000000"))])
    assert [action for action, _ in actions(refund)] == ["refund.request", "refund.first_approval", "refund.approve"]


def test_one_member_double_submitting_the_second_approval_refunds_once():
    first, second = finance_members(2)
    refund = refund_of("150")
    approve_refund(refund, by=first, note="first")

    results, errors = at_once(
        lambda _: approve_refund(RefundRequest.objects.get(pk=refund.pk), by=second, note="twice").status, 5
    )

    assert (errors, results) == ([], [RefundStatus.REFUNDED] * 5)
    assert refund_effects(refund) == ([(f"refund:{refund.pk}", D("-150.00"))], [(EntryKind.REFUND, D("-150.000000"))])
    assert [action for action, _ in actions(refund)] == ["refund.request", "refund.first_approval", "refund.approve"]


def test_one_member_double_submitting_a_first_approval_never_refunds():
    (member,) = finance_members(1)
    refund = refund_of("150")

    results, errors = at_once(
        lambda _: approve_refund(RefundRequest.objects.get(pk=refund.pk), by=member, note="twice").status, 4
    )

    assert results == [RefundStatus.PENDING]
    assert len(errors) == 3 and all(isinstance(error, BillingError) for error in errors)
    refund.refresh_from_db()
    assert (refund.status, refund.first_approved_by) == (RefundStatus.PENDING, member)
    assert refund_effects(refund) == ([], [])


def pending_goodwill(requester):
    account = make_account(make_user(), name="Goodwill account")
    return request_goodwill(
        account,
        amount=D("250"),
        reason_code=GoodwillReason.BILLING_ERROR,
        note="Double charge",
        expires_at=timezone.now() + timedelta(days=30),
        by=requester,
    )


def test_two_approvals_of_a_goodwill_credit_at_once_grant_one_credit():
    requester, *approvers = finance_members(3)
    grant = pending_goodwill(requester)

    results, errors = at_once(
        lambda i: approve_goodwill(GoodwillGrant.objects.get(pk=grant.pk), by=approvers[i], note="ok").status, 2
    )

    assert (errors, results) == ([], [GoodwillStatus.GRANTED, GoodwillStatus.GRANTED])
    grant.refresh_from_db()
    assert grant.decided_by in approvers
    assert list(Credit.objects.values_list("account_id", "original_amount")) == [(grant.account_id, D("250.000000"))]
    assert LedgerEntry.objects.filter(kind=EntryKind.CREDIT_GRANT).count() == 1
    assert actions(grant) == [("goodwill.request", requester.email), ("goodwill.grant", grant.decided_by.email)]


def test_one_member_double_submitting_a_goodwill_approval_grants_once():
    requester, approver = finance_members(2)
    grant = pending_goodwill(requester)

    _, errors = at_once(lambda _: approve_goodwill(GoodwillGrant.objects.get(pk=grant.pk), by=approver, note="ok"), 5)

    assert errors == []
    assert Credit.objects.count() == 1
    assert [action for action, _ in actions(grant)] == ["goodwill.request", "goodwill.grant"]
