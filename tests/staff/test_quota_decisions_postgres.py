"""Quota decisions under concurrency (PostgreSQL, real threads): decisions made at once decide once, and approvals
of two limits of one model at once both land in the one override row."""

import pytest

from staff import roles
from studio.models import AuditEvent, Tier
from tests.concurrency import at_once
from tests.factories import deliver_mail, make_project, make_staff, make_user
from usage.models import QuotaIncreaseRequest, QuotaOverride
from usage.quotas import approve, decline, request_increase

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

FLASH = "gemini-2.5-flash"


def support_members(count):
    return [make_staff(f"support{i}@staff.example", roles.SUPPORT) for i in range(count)]


def setting():
    owner = make_user("owner@example.com")
    return make_project(owner, name="Busy", tier=Tier.TIER_1), owner


def decisions(request):
    rows = AuditEvent.objects.filter(object_type="usage.quotaincreaserequest", object_id=str(request.pk))
    return list(rows.exclude(action="quota_request.create").values_list("action", flat=True))


def test_two_support_members_approving_at_once_decide_once():
    project, owner = setting()
    request = request_increase(project, model_id=FLASH, metric="rpm", value=1500, reason="Launch", by=owner)
    members = support_members(2)
    values = [1500, 1200]

    results, errors = at_once(
        lambda i: approve(
            QuotaIncreaseRequest.objects.get(pk=request.pk), value=values[i], reason=f"by {i}", by=members[i]
        ),
        2,
    )

    assert errors == []
    assert sorted(results) == [False, True]
    request.refresh_from_db()
    winner = [m.pk for m in members].index(request.decided_by_id)
    assert (request.status, request.approved_value, request.decision_reason) == (
        "approved",
        values[winner],
        f"by {winner}",
    )
    assert list(QuotaOverride.objects.values_list("rpm", flat=True)) == [values[winner]]
    assert decisions(request) == ["quota_request.approve"]
    assert AuditEvent.objects.filter(action="quota_override.set").count() == 1
    assert len(deliver_mail()) == 1


def test_approve_and_decline_at_once_decide_once():
    project, owner = setting()
    request = request_increase(project, model_id=FLASH, metric="tpm", value=2_000_000, reason="Batch", by=owner)
    members = support_members(2)

    def decide(i):
        fresh = QuotaIncreaseRequest.objects.get(pk=request.pk)
        if i == 0:
            return approve(fresh, value=2_000_000, reason="yes", by=members[0])
        return decline(fresh, reason="no", by=members[1])

    results, errors = at_once(decide, 2)

    assert errors == []
    assert sorted(results) == [False, True]
    request.refresh_from_db()
    assert len(decisions(request)) == 1
    if request.status == "approved":
        assert decisions(request) == ["quota_request.approve"]
        assert list(QuotaOverride.objects.values_list("tpm", flat=True)) == [2_000_000]
    else:
        assert (request.status, decisions(request)) == ("declined", ["quota_request.decline"])
        assert QuotaOverride.objects.count() == 0
    assert len(deliver_mail()) == 1


def test_approvals_of_two_limits_of_one_model_at_once_keep_both():
    project, owner = setting()
    asks = [
        request_increase(project, model_id=FLASH, metric="rpm", value=1500, reason="a", by=owner),
        request_increase(project, model_id=FLASH, metric="rpd", value=20_000, reason="b", by=owner),
    ]
    members = support_members(2)

    results, errors = at_once(
        lambda i: approve(
            QuotaIncreaseRequest.objects.get(pk=asks[i].pk),
            value=asks[i].requested_value,
            reason="ok",
            by=members[i],
        ),
        2,
    )

    assert (errors, results) == ([], [True, True])
    assert list(QuotaOverride.objects.values_list("project", "model", "rpm", "tpm", "rpd")) == [
        (project.pk, FLASH, 1500, None, 20_000)
    ]
