"""Tier overrides by Support (SPEC §10, R25): the service, what a lock means for automatic evaluation, the owner's
upgrade, suspension, reinstatement and relinking, and the staff view."""

from datetime import timedelta
from decimal import Decimal as D

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from billing import ledger, tiers
from billing.models import AccountStatus, TierChange
from billing.services import BillingError, link_project, set_account_status
from studio.models import ActorKind, AuditEvent, BillingState, Project, Tier
from tests.factories import make_account, make_key, make_project


@pytest.fixture
def spender(customer):
    """A Tier 1 project whose account spent USD 300 and made its first payment today (Tier 2 after 30 days)."""
    project = make_project(customer, name="Spender")
    make_key(project)
    account = make_account(customer, projects=[project])
    ledger.record_usage_charge(account, amount=D("300"), description="usage", idempotency_key="s1")
    ledger.record_payment(account, amount=D("300"), description="Statement paid", idempotency_key="p1")
    project.refresh_from_db()
    return project, account


def audit(project):
    rows = AuditEvent.objects.filter(object_type="studio.project", object_id=str(project.pk)).order_by("pk")
    return [(e.action, e.actor_kind, e.before, e.after, e.reason) for e in rows]


def state(project):
    project = Project.objects.get(pk=project.pk)
    return project.tier, project.billing_state, project.tier_locked


def test_override_sets_the_tier_and_lock_with_history_and_audit(spender, support):
    project, _ = spender
    before = len(audit(project))

    assert tiers.override_tier(project, Tier.TIER_3, by=support, reason="Enterprise pilot", lock=True) is True

    assert state(project) == (Tier.TIER_3, BillingState.ACTIVE, True)
    assert (project.tier, project.tier_locked) == (Tier.TIER_3, True)
    assert audit(project)[before:] == [
        (
            "project.tier",
            ActorKind.STAFF,
            {"tier": Tier.TIER_1, "billing_state": BillingState.ACTIVE},
            {"tier": Tier.TIER_3, "billing_state": BillingState.ACTIVE},
            "Changed by Support",
        ),
        (
            "project.tier_override",
            ActorKind.STAFF,
            {"tier": Tier.TIER_1, "tier_locked": False},
            {"tier": Tier.TIER_3, "tier_locked": True},
            "Enterprise pilot",
        ),
    ]
    change = TierChange.objects.filter(project=project).first()
    assert (change.from_tier, change.to_tier, change.reason, change.actor) == (
        Tier.TIER_1,
        Tier.TIER_3,
        "Changed by Support",
        support,
    )


def test_lock_alone_changes_no_tier_but_is_audited(spender, support):
    project, _ = spender
    changes = TierChange.objects.count()

    assert tiers.override_tier(project, Tier.TIER_1, by=support, reason="Keep it", lock=True) is True
    assert tiers.override_tier(project, Tier.TIER_1, by=support, reason="Again", lock=True) is False

    assert state(project) == (Tier.TIER_1, BillingState.ACTIVE, True)
    assert TierChange.objects.count() == changes
    assert [row[0] for row in audit(project)][-2:] == ["project.tier_override", "project.tier_override"]


def test_paid_tier_needs_active_billing(customer, support):
    project = make_project(customer, name="No billing")

    with pytest.raises(BillingError) as refused:
        tiers.override_tier(project, Tier.TIER_2, by=support, reason="Try", lock=True)

    assert str(refused.value) == "A paid tier needs active billing, and this project's billing is: No billing account."
    assert state(project) == (Tier.FREE, BillingState.NONE, False)
    assert audit(project) == []


def test_override_needs_a_reason(spender, support):
    project, _ = spender
    with pytest.raises(BillingError) as refused:
        tiers.override_tier(project, Tier.TIER_2, by=support, reason="  ", lock=True)
    assert str(refused.value) == "Give a reason for the change."
    assert state(project) == (Tier.TIER_1, BillingState.ACTIVE, False)


def test_locked_tier_survives_evaluate_all(spender, support):
    project, account = spender
    tiers.override_tier(project, Tier.TIER_1, by=support, reason="Abuse review", lock=True)

    with time_machine.travel(timezone.now() + timedelta(days=31)):
        assert tiers.eligible_tier(account) == Tier.TIER_2
        upgraded = list(tiers.evaluate_all())
        tiers.refresh_upgrade_flags(account)

    assert upgraded == []
    project.refresh_from_db()
    assert (project.tier, project.tier_locked, project.upgrade_available) == (Tier.TIER_1, True, False)


def test_unlocked_override_may_be_changed_by_evaluation(spender, support):
    project, _ = spender
    tiers.override_tier(project, Tier.TIER_1, by=support, reason="Reset", lock=False)

    with time_machine.travel(timezone.now() + timedelta(days=31)):
        upgraded = list(tiers.evaluate_all())

    assert [p.pk for p in upgraded] == [project.pk]
    assert state(project) == (Tier.TIER_2, BillingState.ACTIVE, False)


def test_owner_cannot_upgrade_a_locked_tier(spender, support, customer):
    project, _ = spender
    tiers.override_tier(project, Tier.TIER_1, by=support, reason="Abuse review", lock=True)

    with time_machine.travel(timezone.now() + timedelta(days=31)):
        assert tiers.upgrade(project, by=customer) is False

    assert state(project) == (Tier.TIER_1, BillingState.ACTIVE, True)


def test_suspension_frees_a_locked_project_and_reinstatement_brings_its_tier_back(spender, support, finance):
    project, account = spender
    tiers.override_tier(project, Tier.TIER_3, by=support, reason="Pilot", lock=True)

    set_account_status(account, AccountStatus.SUSPENDED, by=finance, reason="Fraud check")
    assert state(project) == (Tier.FREE, BillingState.SUSPENDED, True)

    set_account_status(account, AccountStatus.ACTIVE, by=finance, reason="Cleared")
    assert state(project) == (Tier.TIER_3, BillingState.ACTIVE, True)


def test_relinking_a_locked_project_keeps_its_tier(spender, support, customer):
    project, _ = spender
    tiers.override_tier(project, Tier.TIER_2, by=support, reason="Pilot", lock=True)
    other = make_account(customer, name="Other account")

    link_project(project, other, by=customer)

    assert state(project) == (Tier.TIER_2, BillingState.ACTIVE, True)


def test_unlocked_project_follows_the_account_on_reinstatement(spender, support, finance):
    project, account = spender
    tiers.override_tier(project, Tier.TIER_3, by=support, reason="Short pilot", lock=False)

    set_account_status(account, AccountStatus.SUSPENDED, by=finance, reason="Fraud check")
    set_account_status(account, AccountStatus.ACTIVE, by=finance, reason="Cleared")

    assert state(project) == (Tier.TIER_1, BillingState.ACTIVE, False)


# The staff view


def test_tier_override_page_shows_the_form(client, support, spender):
    project, _ = spender
    client.force_login(support)

    response = client.get(reverse("staff:tier-override", args=[project.project_id]))

    html = response.content.decode()
    assert response.status_code == 200
    assert '<option value="tier_1" selected>Tier 1</option>' in html
    assert '<input type="radio" name="keep" value="evaluate" required id="id_keep_1" checked>' in html
    assert "Automatic evaluation may change it later" in html


def test_tier_override_post_sets_the_tier_and_redirects(client, support, spender):
    project, _ = spender
    client.force_login(support)

    response = client.post(
        reverse("staff:tier-override", args=[project.project_id]),
        {"tier": Tier.TIER_2, "keep": "keep", "reason": "Launch week"},
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("staff:project", args=[project.project_id])
    assert state(project) == (Tier.TIER_2, BillingState.ACTIVE, True)
    assert audit(project)[-1] == (
        "project.tier_override",
        ActorKind.STAFF,
        {"tier": Tier.TIER_1, "tier_locked": False},
        {"tier": Tier.TIER_2, "tier_locked": True},
        "Launch week",
    )


def test_tier_override_post_shows_the_billing_error(client, support, customer):
    project = make_project(customer, name="No billing")
    client.force_login(support)

    response = client.post(
        reverse("staff:tier-override", args=[project.project_id]),
        {"tier": Tier.TIER_2, "keep": "keep", "reason": "Try"},
    )

    assert response.status_code == 422
    assert "A paid tier needs active billing, and this project&#x27;s billing is: No billing account." in (
        response.content.decode()
    )
    assert state(project) == (Tier.FREE, BillingState.NONE, False)


def test_tier_override_post_needs_a_reason(client, support, spender):
    project, _ = spender
    client.force_login(support)

    response = client.post(
        reverse("staff:tier-override", args=[project.project_id]), {"tier": "tier_2", "keep": "keep"}
    )

    assert response.status_code == 422
    assert state(project) == (Tier.TIER_1, BillingState.ACTIVE, False)


@pytest.mark.parametrize("method", ["get", "post"])
def test_tier_override_is_404_but_for_support(client, method, customer, groupless_staff, finance, spender):
    project, _ = spender
    url = reverse("staff:tier-override", args=[project.project_id])
    data = {"tier": Tier.TIER_3, "keep": "keep", "reason": "x"}
    assert getattr(client, method)(url, data).status_code == 404
    for user in (customer, groupless_staff, finance):
        client.force_login(user)
        assert getattr(client, method)(url, data).status_code == 404
    assert state(project) == (Tier.TIER_1, BillingState.ACTIVE, False)


def test_tier_override_of_an_unknown_project_is_404(client, support):
    client.force_login(support)
    assert client.get(reverse("staff:tier-override", args=["no-such-project"])).status_code == 404


def test_superuser_may_override(client, superuser, spender):
    project, _ = spender
    client.force_login(superuser)
    response = client.post(
        reverse("staff:tier-override", args=[project.project_id]),
        {"tier": Tier.TIER_3, "keep": "evaluate", "reason": "Pilot"},
    )
    assert response.status_code == 302
    assert state(project) == (Tier.TIER_3, BillingState.ACTIVE, False)


def test_set_project_tier_keeps_a_locked_tier_whoever_asks(spender, support):
    """What evaluation finds if staff lock the project between its read and its write: the kept tier, no change."""
    project, account = spender
    tiers.override_tier(project, Tier.TIER_2, by=support, reason="Pilot", lock=True)
    changes = TierChange.objects.count()

    changed = tiers.set_project_tier(
        project,
        Tier.TIER_3,
        BillingState.ACTIVE,
        reason="Automatic tier evaluation",
        linked_to=account,
        from_states=(BillingState.ACTIVE,),
    )

    assert changed is False
    assert state(project) == (Tier.TIER_2, BillingState.ACTIVE, True)
    assert TierChange.objects.count() == changes
