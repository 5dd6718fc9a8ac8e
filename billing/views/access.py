"""One access helper per billing resource: the object if the user may act on it, else 404."""

from django.shortcuts import get_object_or_404

from billing.models import BillingAccount, PaymentMethod, SetupSession
from studio.models import Project


def get_setup_for_user(user, setup_id) -> SetupSession:
    return get_object_or_404(SetupSession.objects.select_related("project", "api_key"), pk=setup_id, user=user)


def get_account_for_user(user, account_id: str) -> BillingAccount:
    """A billing account the user administers."""
    return get_object_or_404(BillingAccount.objects.administered_by(user), account_id=account_id)


def get_payment_method_for_user(user, method_id: int) -> PaymentMethod:
    return get_object_or_404(PaymentMethod.objects.usable(), pk=method_id, profile__owner=user)


def get_linked_project_for_user(user, account: BillingAccount, project_id: str):
    """A project linked to `account` that the user may manage (owner or editor)."""
    return get_object_or_404(Project.objects.writable_by(user), project_id=project_id, billing__account=account)
