"""A promotional code's approval under concurrency (PostgreSQL): the code's row lock decides once."""

from datetime import timedelta
from decimal import Decimal as D

import pytest
from django.utils import timezone

from billing import promotions
from billing.models import PromoCode
from staff import roles
from studio.models import AuditEvent
from tests.concurrency import at_once
from tests.factories import make_staff

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

RUNNERS = 4


def test_approvers_at_once_approve_once():
    creator = make_staff("finance@staff.example", roles.FINANCE)
    approvers = [make_staff(f"finance{i}@staff.example", roles.FINANCE) for i in range(RUNNERS)]
    promo = promotions.create_code(
        code="RACE",
        amount=D("50"),
        redeem_by=timezone.now() + timedelta(days=5),
        credit_valid_days=30,
        max_redemptions=10,
        by=creator,
    )

    results, errors = at_once(lambda i: promotions.approve_code(promo, by=approvers[i], note=f"n{i}"), RUNNERS)

    assert errors == []
    approved = PromoCode.objects.get()
    winner = approvers.index(approved.approved_by)
    assert approved.approval_note == f"n{winner}"
    assert {r.approved_by_id for r in results} == {approved.approved_by_id}  # everyone sees the one approval
    events = AuditEvent.objects.filter(action="promo_code.approve")
    assert list(events.values_list("actor", "reason")) == [(approved.approved_by_id, f"n{winner}")]
