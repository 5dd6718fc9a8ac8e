"""The billing page (R19): accounts, linked projects, credits, transactions, payment methods."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, F, FilteredRelation, Prefetch, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from billing import ledger, tiers
from billing.budgets import statuses_by_account
from billing.credits import countdown
from billing.forms import CardForm, MoveProjectForm
from billing.models import (
    AccountStatus,
    BillingAccount,
    PaymentsProfile,
    Prepayment,
    ProjectBilling,
    RefundRequest,
    TierRule,
)
from billing.payments import refundable_from
from billing.processor import PaymentError
from billing.services import BillingError, link_project, make_primary, remove_payment_method, unlink_project
from billing.statements import running_month_for_accounts, statements_by_account
from billing.views.access import get_account_for_user, get_linked_project_for_user, get_payment_method_for_user
from studio.models import WRITE_ROLES
from studio.views.rendering import BILLING_CHANGED, finish, render_dialog, render_page
from studio.zones import reader_zone

RECENT_ENTRIES = 20


def _accounts_for(user):
    # Each linked project with the person's role on it, if they imported it (same query): only an
    # Owner or Editor may move, unlink or upgrade it; anyone else is told whom to ask.
    mine = FilteredRelation(
        "project__memberships",
        condition=Q(project__memberships__user=user, project__memberships__imported_at__isnull=False),
    )
    links = (
        ProjectBilling.objects.select_related("project")
        .annotate(mine=mine)
        .annotate(role=F("mine__role"))
        .order_by("project__name")
    )
    return (
        BillingAccount.objects.administered_by(user)
        .select_related("country", "primary_payment_method")
        .prefetch_related(Prefetch("project_links", queryset=links))
        .order_by("created_at")
    )


@login_required
def billing_page(request: HttpRequest) -> HttpResponse:
    accounts = list(_accounts_for(request.user))
    profile = PaymentsProfile.objects.filter(owner=request.user).first()
    methods = (
        list(profile.payment_methods.usable().annotate(primary_count=Count("primary_for")).order_by("created_at"))
        if profile
        else []
    )
    credits, zone, now = {}, reader_zone(request), timezone.now()
    for credit in ledger.credits_with_remaining_for_accounts(accounts):
        credit.countdown = countdown(credit, now=now, zone=zone)
        credits.setdefault(credit.account_id, []).append(credit)
    entries = {}
    for entry in ledger.recent_entries_for_accounts(accounts, limit=RECENT_ENTRIES):
        entries.setdefault(entry.account_id, []).append(entry)
    balances = ledger.balances_for_accounts(accounts)
    issued, running = statements_by_account(accounts), running_month_for_accounts(accounts)
    standings = tiers.standings(accounts, balances=balances)
    budgets = statuses_by_account(accounts)
    rules = list(TierRule.objects.all())
    prepayments, refunds = {}, {}
    for attempt in Prepayment.objects.filter(account__in=accounts).order_by("-created_at"):
        prepayments.setdefault(attempt.account_id, []).append(attempt)
    for refund in RefundRequest.objects.filter(account__in=accounts).order_by("-requested_at"):
        refunds.setdefault(refund.account_id, []).append(refund)
    rows = []
    for account in accounts:
        credit_list = credits.get(account.pk, [])
        links = [
            (
                link,
                tiers.progress(link.project, standing=standings[account.pk], rules=rules),
                link.role not in WRITE_ROLES,
            )
            for link in account.project_links.all()
        ]
        rows.append(
            {
                "account": account,
                "credits": credit_list,
                "credits_expire": any(credit.expires_at for credit in credit_list),
                "entries": entries.get(account.pk, []),
                "balances": balances[account.pk],
                "statements": issued.get(account.pk, []),
                "running": running[account.pk],
                "budgets": budgets.get(account.pk, []),
                "links": links,
                "prepayments": prepayments.get(account.pk, [])[:5],
                "refunds": refunds.get(account.pk, [])[:5],
                "refundable": refundable_from(credit_list, refunds.get(account.pk, [])),
            }
        )
    context = {"rows": rows, "methods": methods, "profile": profile, "zone": zone}
    return render_page(request, "billing/billing.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def unlink(request: HttpRequest, account_id: str, project_id: str) -> HttpResponse:
    account = get_account_for_user(request.user, account_id)
    project = get_linked_project_for_user(request.user, account, project_id)
    if request.method == "POST":
        unlink_project(project, by=request.user)
        message = _("Billing disabled for %(project)s. It is back on the free tier.") % {"project": project.name}
        return finish(request, message, redirect_to="billing:page", events=(BILLING_CHANGED,))
    return render_dialog(request, "billing/unlink.html", {"account": account, "project": project})


@login_required
@require_http_methods(["GET", "POST"])
def move(request: HttpRequest, account_id: str, project_id: str) -> HttpResponse:
    account = get_account_for_user(request.user, account_id)
    project = get_linked_project_for_user(request.user, account, project_id)
    others = (
        BillingAccount.objects.administered_by(request.user)
        .filter(status=AccountStatus.ACTIVE)
        .exclude(pk=account.pk)
        .order_by("created_at")
    )
    form = MoveProjectForm(request.POST if request.method == "POST" else None, accounts=others)
    if request.method == "POST" and form.is_valid():
        target = form.cleaned_data["account"]
        link_project(project, target, by=request.user)
        message = _("%(project)s now bills to %(account)s.") % {"project": project.name, "account": target.display_name}
        return finish(request, message, redirect_to="billing:page", events=(BILLING_CHANGED,))
    context = {"account": account, "project": project, "form": form, "others": others}
    return render_dialog(request, "billing/move.html", context, status=422 if form.errors else 200)


@login_required
@sensitive_post_parameters("number", "cvc")
@require_http_methods(["GET", "POST"])
def add_payment_method(request: HttpRequest) -> HttpResponse:
    profile = PaymentsProfile.objects.filter(owner=request.user).first()
    if profile is None:
        return redirect("billing:setup")
    form = CardForm(request.POST if request.method == "POST" else None)
    error = None
    if request.method == "POST" and form.is_valid():
        try:
            form.add_to(profile, by=request.user)
        except PaymentError as declined:
            error = declined.reason
        else:
            return finish(request, _("Payment method added."), redirect_to="billing:page", events=(BILLING_CHANGED,))
    status = 422 if form.errors or error else 200
    return render_dialog(request, "billing/add_payment_method.html", {"form": form, "error": error}, status=status)


@login_required
@require_POST
def make_primary_method(request: HttpRequest, account_id: str, method_id: int) -> HttpResponse:
    account = get_account_for_user(request.user, account_id)
    method = get_payment_method_for_user(request.user, method_id)
    make_primary(account, method, by=request.user)
    message = _("%(method)s is now the primary payment method of %(account)s.") % {
        "method": method,
        "account": account.display_name,
    }
    return finish(request, message, redirect_to="billing:page", events=(BILLING_CHANGED,))


@login_required
@require_POST
def remove_method(request: HttpRequest, method_id: int) -> HttpResponse:
    method = get_payment_method_for_user(request.user, method_id)
    try:
        remove_payment_method(method, by=request.user)
    except BillingError as error:
        return finish(request, str(error), redirect_to="billing:page", level=messages.ERROR)
    return finish(request, _("Payment method removed."), redirect_to="billing:page", events=(BILLING_CHANGED,))
