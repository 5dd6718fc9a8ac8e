"""One access helper per billing resource: the object if the user may act on it, else 404."""

from django.http import Http404
from django.shortcuts import get_object_or_404

from billing.models import BillingAccount, Budget, PaymentMethod, SetupSession
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


def get_budget_for_user(user, account_id: str, budget_id: int) -> Budget:
    """A budget of a billing account the user administers."""
    budgets = Budget.objects.administered_by(user).select_related("account", "project")
    return get_object_or_404(budgets, pk=budget_id, account__account_id=account_id)


def get_statement_for_user(user, account_id: str, month: str):
    """An issued statement of an account the user administers, by its month ('2026-10')."""
    from billing.models import Statement
    from billing.statements import parse_month

    account = get_account_for_user(user, account_id)
    first = parse_month(month)
    if first is None:
        raise Http404
    return get_object_or_404(Statement.objects.select_related("account"), account=account, month=first)
