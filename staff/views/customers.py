"""Customer lookup (SPEC §10): the search, a customer's page, a billing account's and a project's, and "view as
customer" (staff.viewas)."""

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import path, reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_POST

from billing import ledger
from billing.models import (
    BillingAccount,
    GoodwillGrant,
    GoodwillStatus,
    RefundRequest,
    RefundStatus,
    TierChange,
)
from billing.statements import statements_by_account
from staff import history, lookup, roles, viewas
from staff.access import staff_view
from studio.models import ApiKey, Membership, Project, User
from studio.views.rendering import render_page
from usage.models import QuotaIncreaseRequest, QuotaOverride, QuotaRequestStatus

KEYS_SHOWN = 100
STATEMENTS_SHOWN = 3
TIER_CHANGES_SHOWN = 20
HISTORY_SHOWN = 50


class ViewAsForm(forms.Form):
    reason = forms.CharField(
        label=gettext_lazy("Reason (recorded in the audit log, e.g. the support case)"),
        max_length=500,
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )


def get_customer(user_id: int) -> User:
    return get_object_or_404(User, pk=user_id)


def get_account(account_id: str) -> BillingAccount:
    queryset = BillingAccount.objects.select_related("country", "primary_payment_method", "payments_profile__owner")
    return get_object_or_404(queryset, account_id=account_id.upper())


def get_project(project_id: str) -> Project:
    return get_object_or_404(Project.objects.select_related("billing__account"), project_id=project_id)


@staff_view(roles.LOOKUP)
@require_GET
def lookup_page(request: HttpRequest) -> HttpResponse:
    found = lookup.search(request.GET["q"]) if "q" in request.GET else None
    return render_page(request, "staff/customers.html", {"search": found, "kinds": lookup.MatchKind})


def _customer_context(request: HttpRequest, customer: User) -> dict:
    memberships = list(
        Membership.objects.filter(user=customer)
        .select_related("project__billing__account")
        .order_by("project__name", "project__project_id")
    )
    projects = [membership.project for membership in memberships]
    keys = ApiKey.objects.filter(project__in=projects).select_related("project").order_by("-created_at", "-pk")
    accounts = list(BillingAccount.objects.administered_by(customer).order_by("created_at", "pk"))
    balances = ledger.balances_for_accounts(accounts)
    statements = statements_by_account(accounts, limit=STATEMENTS_SHOWN)
    return {
        "customer": customer,
        "memberships": memberships,
        "keys": keys[:KEYS_SHOWN],
        "accounts": [(account, balances[account.pk], statements.get(account.pk, [])) for account in accounts],
        "tier_changes": TierChange.objects.filter(project__in=projects).select_related("project", "actor")[
            :TIER_CHANGES_SHOWN
        ],
        "refunds": RefundRequest.objects.filter(account__in=accounts, status=RefundStatus.PENDING).select_related(
            "account", "requested_by"
        ),
        "quota_requests": QuotaIncreaseRequest.objects.filter(project__in=projects, status=QuotaRequestStatus.PENDING)
        .select_related("project", "model", "requested_by")
        .order_by("-requested_at"),
        "goodwill": GoodwillGrant.objects.filter(account__in=accounts, status=GoodwillStatus.PENDING).select_related(
            "account", "requested_by"
        ),
        "events": history.for_customer(customer)[:HISTORY_SHOWN],
        "viewable": viewas.viewable(customer),
        "viewing_now": viewas.viewing_id(request) == customer.pk,
    }


@staff_view(roles.LOOKUP)
@require_GET
def customer_page(request: HttpRequest, user_id: int) -> HttpResponse:
    customer = get_customer(user_id)
    context = {**_customer_context(request, customer), "form": ViewAsForm()}
    return render_page(request, "staff/customer.html", context)


@staff_view(roles.LOOKUP)
@require_GET
def account_page(request: HttpRequest, account_id: str) -> HttpResponse:
    account = get_account(account_id)
    context = {
        "account": account,
        "balances": ledger.balances(account),
        "credits": ledger.credits_with_remaining(account),
        "statements": statements_by_account([account]).get(account.pk, []),
        "links": account.project_links.select_related("project").order_by("project__name"),
        "administrators": account.administrators.select_related("user").order_by("added_at", "pk"),
        "refunds": account.refund_requests.select_related("requested_by", "reviewed_by").order_by("-requested_at"),
        "goodwill": account.goodwill_grants.select_related("requested_by", "decided_by").order_by("-requested_at"),
        "events": history.for_object(account, limit=HISTORY_SHOWN),
    }
    return render_page(request, "staff/account.html", context)


@staff_view(roles.LOOKUP)
@require_GET
def project_page(request: HttpRequest, project_id: str) -> HttpResponse:
    project = get_project(project_id)
    context = {
        "project": project,
        "members": project.memberships.select_related("user").order_by("role", "user__email"),
        "keys": project.api_keys.order_by("-created_at", "-pk")[:KEYS_SHOWN],
        "tier_changes": project.tier_changes.select_related("actor")[:TIER_CHANGES_SHOWN],
        "overrides": QuotaOverride.objects.filter(project=project)
        .select_related("model", "updated_by")
        .order_by("model_id"),
        "quota_requests": project.quota_requests.select_related("model", "requested_by", "decided_by").order_by(
            "-requested_at"
        )[:TIER_CHANGES_SHOWN],
        "events": history.for_object(project, limit=HISTORY_SHOWN),
    }
    return render_page(request, "staff/project.html", context)


@staff_view(roles.VIEW_AS)
@require_POST
def view_as(request: HttpRequest, user_id: int) -> HttpResponse:
    """Open a read-only view of the customer's console, with a reason (audited: "staff.view_as")."""
    customer = get_customer(user_id)
    if not viewas.viewable(customer):
        messages.error(request, _("Staff members, superusers and deactivated users have no customer console to view."))
        return redirect("staff:customer", user_id=customer.pk)
    form = ViewAsForm(request.POST)
    if not form.is_valid():
        context = {**_customer_context(request, customer), "form": form}
        return render_page(request, "staff/customer.html", context, status=422)
    viewas.start(request, customer, reason=form.cleaned_data["reason"])
    return redirect("api-keys")


@staff_view()
@require_POST
def view_as_stop(request: HttpRequest) -> HttpResponse:
    """End this session's viewing (audited: "staff.view_as_end") and go back to the customer's staff page."""
    customer = viewas.end(request)
    if customer is None:
        return redirect("staff:lookup")
    messages.success(request, _("You are no longer viewing %(customer)s's console.") % {"customer": customer.email})
    return redirect(reverse("staff:customer", args=[customer.pk]))


urlpatterns = [
    path("customers/", lookup_page, name="lookup"),
    path("customers/<int:user_id>/", customer_page, name="customer"),
    path("customers/<int:user_id>/view-as/", view_as, name="view-as"),
    path("view-as/stop/", view_as_stop, name="view-as-stop"),
    path("accounts/<str:account_id>/", account_page, name="account"),
    path("projects/<str:project_id>/", project_page, name="project"),
]
