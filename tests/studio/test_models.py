from datetime import timedelta

import pytest
import time_machine
from django.db import IntegrityError
from django.utils import timezone

from studio import keyformat
from studio.models import ApiKey, AuditEvent, BillingState, Project, Tier, User, effective_tier
from tests.factories import make_key, make_project


def test_user_email_is_normalised_and_found_case_insensitively(db):
    user = User.objects.create_user("  Ada@Example.COM ", "pw-123456789")

    assert user.email == "ada@example.com"
    assert User.objects.get_by_natural_key("ADA@example.com ") == user


def test_issue_stores_only_a_keyed_hash(project, owner):
    key, raw = ApiKey.issue(project=project, name="Server", created_by=owner)

    key.refresh_from_db()
    assert key.secret_hash == keyformat.hash_key(raw)
    assert key.prefix == raw[:12]
    assert key.last4 == raw[-4:]
    assert key.masked == f"{raw[:12]}…{raw[-4:]}"
    stored = [str(value) for value in ApiKey.objects.filter(pk=key.pk).values().get().values()]
    assert raw not in stored
    assert AuditEvent.objects.filter(action="api_key.create", object_id=str(key.pk), actor=owner).count() == 1


def test_authenticate_returns_the_key_with_its_project(key, project, django_assert_num_queries):
    key, raw = make_key(project, name="Fleet")

    with django_assert_num_queries(2):  # the lookup, and the first last_used_at stamp
        found = ApiKey.objects.authenticate(raw)
    assert found == key
    assert found.project == project


def test_authenticate_refuses_malformed_keys_without_a_query(db, django_assert_num_queries):
    raw = keyformat.generate()
    typo = raw[:-1] + ("A" if raw[-1] != "A" else "B")

    with django_assert_num_queries(0):
        assert ApiKey.objects.authenticate(typo) is None
        assert ApiKey.objects.authenticate("AIzaSyD-not-ours") is None


def test_authenticate_unknown_well_formed_key_is_one_query(db, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert ApiKey.objects.authenticate(keyformat.generate()) is None


def test_authenticate_refuses_revoked_keys(project, owner):
    key, raw = make_key(project)
    key.revoke(by=owner)

    assert ApiKey.objects.authenticate(raw) is None


def test_authenticate_refuses_a_key_hashed_with_another_pepper(project, settings):
    _, raw = make_key(project)
    settings.API_KEY_PEPPER = "rotated"

    assert ApiKey.objects.authenticate(raw) is None


def test_last_used_at_is_written_at_most_once_a_minute(project, django_assert_num_queries):
    key, raw = make_key(project)
    start = timezone.now()

    with time_machine.travel(start, tick=False):
        ApiKey.objects.authenticate(raw)
    with time_machine.travel(start + timedelta(seconds=59), tick=False), django_assert_num_queries(1):
        ApiKey.objects.authenticate(raw)
    key.refresh_from_db()
    assert key.last_used_at == start

    with time_machine.travel(start + timedelta(seconds=61), tick=False), django_assert_num_queries(2):
        ApiKey.objects.authenticate(raw)
    key.refresh_from_db()
    assert key.last_used_at == start + timedelta(seconds=61)


def test_mark_used_does_not_overwrite_a_newer_stamp_from_another_process(project):
    key, _ = make_key(project)
    start = timezone.now()
    stale_copy = ApiKey.objects.get(pk=key.pk)
    key.mark_used(start)

    stale_copy.mark_used(start + timedelta(seconds=30))

    key.refresh_from_db()
    assert key.last_used_at == start


def test_revoke_is_idempotent(key, owner, editor):
    assert key.revoke(by=owner) is True
    first = ApiKey.objects.get(pk=key.pk).revoked_at

    assert key.revoke(by=editor) is False

    key.refresh_from_db()
    assert key.revoked_at == first
    assert key.revoked_by == owner
    events = AuditEvent.objects.filter(action="api_key.revoke", object_id=str(key.pk))
    assert [(e.actor, e.before, e.after) for e in events] == [(owner, {"revoked": False}, {"revoked": True})]


def test_rename_records_before_and_after(key, editor):
    key.rename("Renamed", by=editor)

    key.refresh_from_db()
    assert key.name == "Renamed"
    event = AuditEvent.objects.get(action="api_key.rename")
    assert (event.actor, event.before, event.after) == (editor, {"name": "Team key"}, {"name": "Renamed"})


def test_rename_to_the_same_name_writes_nothing(key, editor):
    key.rename("Team key", by=editor)

    assert not AuditEvent.objects.filter(action="api_key.rename").exists()


@pytest.mark.parametrize(
    ("tier", "billing_state", "expected_state", "paid"),
    [
        (Tier.FREE, BillingState.NONE, "set_up_billing", False),
        (Tier.FREE, BillingState.PREPAYMENT_DUE, "action_required", False),
        (Tier.TIER_1, BillingState.ACTIVE, "tier_1", True),
        (Tier.TIER_2, BillingState.ACTIVE, "tier_2", True),
        (Tier.TIER_3, BillingState.ACTIVE, "tier_3", True),
    ],
)
def test_project_quota_state(db, tier, billing_state, expected_state, paid):
    project = make_project(tier=tier, billing_state=billing_state)

    assert project.quota_state == expected_state
    assert project.is_paid is paid


def test_paid_tier_without_active_billing_is_refused_by_the_database(db):
    with pytest.raises(IntegrityError):
        Project.objects.create(name="x", tier=Tier.TIER_1, billing_state=BillingState.NONE)


def test_upgrade_flag_on_the_top_tier_is_refused_by_the_database(db):
    with pytest.raises(IntegrityError):
        Project.objects.create(name="x", tier=Tier.TIER_3, billing_state=BillingState.ACTIVE, upgrade_available=True)


def test_project_ids_look_like_cloud_projects(db):
    project = make_project()

    assert project.project_id.startswith("gen-lang-client-")
    assert len(project.project_id) == 26 and project.project_id[16:].isdigit()
    assert len(project.number) == 12 and project.number.isdigit()


@pytest.mark.parametrize(
    ("billing_state", "expected"),
    [("active", "tier_2"), ("none", "free"), ("prepayment_due", "free"), ("suspended", "free")],
)
def test_effective_tier_is_the_tier_only_while_billing_is_active(billing_state, expected):
    assert effective_tier("tier_2", billing_state) == expected
