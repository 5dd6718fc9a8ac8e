"""Budgets on the billing page (X3): create, change and delete, in the modal or as pages.

Who: the billing administrators of the account, for the account's budget and for its projects'
(a budget is part of the billing account, like its payment method); anyone else gets 404, a
project's Owner or Editor included, as for every other part of a billing account.
"""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from billing.budget_forms import BudgetForm
from billing.budgets import delete_budget, save_budget
from billing.models import BillingAccount, Budget
from billing.services import BillingError
from billing.views.access import get_account_for_user, get_budget_for_user
from studio.views.rendering import BILLING_CHANGED, finish, render_dialog


@login_required
@require_http_methods(["GET", "POST"])
def create(request: HttpRequest, account_id: str) -> HttpResponse:
    return _edit(request, get_account_for_user(request.user, account_id), None)


@login_required
@require_http_methods(["GET", "POST"])
def edit(request: HttpRequest, account_id: str, budget_id: int) -> HttpResponse:
    budget = get_budget_for_user(request.user, account_id, budget_id)
    return _edit(request, budget.account, budget)


def _edit(request: HttpRequest, account: BillingAccount, budget: Budget | None) -> HttpResponse:
    form = BudgetForm(request.POST if request.method == "POST" else None, account=account, budget=budget)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            save_budget(
                account,
                budget=budget,
                project=data["project"],
                amount=data["amount"],
                thresholds=form.thresholds,
                by=request.user,
            )
        except BillingError as refused:
            form.add_error("project", str(refused))
        else:
            message = _("Budget saved.") if budget else _("Budget created.")
            return finish(request, message, redirect_to="billing:page", events=(BILLING_CHANGED,))
    context = {"account": account, "budget": budget, "form": form}
    return render_dialog(request, "billing/budgets/edit.html", context, status=422 if form.errors else 200)


@login_required
@require_http_methods(["GET", "POST"])
def delete(request: HttpRequest, account_id: str, budget_id: int) -> HttpResponse:
    budget = get_budget_for_user(request.user, account_id, budget_id)
    if request.method == "POST":
        delete_budget(budget, by=request.user)
        return finish(request, _("Budget deleted."), redirect_to="billing:page", events=(BILLING_CHANGED,))
    return render_dialog(request, "billing/budgets/delete.html", {"account": budget.account, "budget": budget})
