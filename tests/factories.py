"""Plain factory functions for test data: explicit, no magic."""

import itertools

from django.utils import timezone

from studio.models import ApiKey, BillingState, Membership, Project, Role, Tier, User

PASSWORD = "correct-horse-battery"
_sequence = itertools.count(1)


def make_user(email=None, **fields) -> User:
    email = email or f"user{next(_sequence)}@example.com"
    return User.objects.create_user(email, PASSWORD, **fields)


def make_project(owner=None, *, name=None, tier=Tier.FREE, billing_state=None, upgrade_available=False, **fields):
    if billing_state is None:
        billing_state = BillingState.NONE if tier == Tier.FREE else BillingState.ACTIVE
    project = Project.objects.create(
        name=name or f"Project {next(_sequence)}",
        tier=tier,
        billing_state=billing_state,
        upgrade_available=upgrade_available,
        **fields,
    )
    if owner is not None:
        add_member(project, owner, Role.OWNER)
    return project


def add_member(project, user, role, *, imported=True) -> Membership:
    return Membership.objects.create(
        project=project, user=user, role=role, imported_at=timezone.now() if imported else None
    )


def make_key(project, *, name=None, created_by=None):
    """Returns (key, raw secret)."""
    return ApiKey.issue(project=project, name=name or f"Key {next(_sequence)}", created_by=created_by)
