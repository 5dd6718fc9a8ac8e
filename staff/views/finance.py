"""Finance queues (SPEC §10): refunds and goodwill credits (two-person rule), bank transfers, past-due accounts,
suspension and reinstatement. Each decision carries a reason and is made by one billing service function."""

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from django.conf import settings
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods
from django_tables2 import RequestConfig

from billing import goodwill, payments
from billing.dunning import upcoming_retry
from billing.models import (
    AccountStatus,
    BillingAccount,
    GoodwillGrant,
    GoodwillStatus,
    PaymentStatus,
    Prepayment,
    RefundRequest,
    RefundStatus,
    Statement,
    StatementStatus,
)
from billing.processor import PaymentError
from billing.services import BillingError, set_account_status
from staff import finance_forms as forms
from staff import finance_tables as tables
from staff import nav, roles
from staff.access import staff_view
from staff.history import for_object
from studio.models import ActorKind
from studio.templatetags.money import usd
from studio.views.rendering import finish, render_dialog, render_page
from studio.zones import reader_zone

PER_PAGE = 50
QUEUE_CHANGED = "queue-changed"  # a queue's table reloads itself after a decision made in the modal


def _table(request: HttpRequest, table_class, rows):
    table = table_class(rows, request=request)
    RequestConfig(request, paginate={"per_page": PER_PAGE}).configure(table)
    return table


def _status(form) -> int:
    return 422 if form.errors else 200


def _posted(request: HttpRequest):
    return request.POST if request.method == "POST" else None


def _two_person_rule() -> dict:
    """What the pages explaining the two-person rule (X10) say: its threshold and its window in days."""
    return {"threshold": settings.STAFF_APPROVAL_THRESHOLD, "window_days": payments.APPROVAL_WINDOW.days}


# One access helper per resource: the object, or 404.


def _refund(pk: int) -> RefundRequest:
    related = ("account", "requested_by", "first_approved_by", "reviewed_by")
    return get_object_or_404(RefundRequest.objects.select_related(*related), pk=pk)


def _transfer(pk) -> Prepayment:
    rows = Prepayment.objects.filter(by_bank_transfer=True).select_related("account__country", "created_by")
    return get_object_or_404(rows, pk=pk)


def _account(account_id: str) -> BillingAccount:
    return get_object_or_404(BillingAccount, account_id=account_id)


def _grant(pk: int) -> GoodwillGrant:
    return get_object_or_404(GoodwillGrant.objects.select_related("account", "requested_by", "decided_by"), pk=pk)


# Refunds


@staff_view(roles.DECIDE_REFUND)
@require_GET
def refunds(request: HttpRequest) -> HttpResponse:
    form = forms.RefundFilter(request.GET)
    rows = RefundRequest.objects.select_related("account", "requested_by", "first_approved_by", "reviewed_by")
    table = _table(request, tables.RefundTable, form.apply(rows).order_by("requested_at", "pk"))
    context = {"form": form, "table": table, **_two_person_rule()}
    return render_page(request, "staff/refunds.html", context, partial="table")


@staff_view(roles.DECIDE_REFUND)
@require_http_methods(["GET", "POST"])
def refund_decide(request: HttpRequest, pk: int) -> HttpResponse:
    refund = _refund(pk)
    form = forms.ApproveRejectForm(_posted(request))
    if request.method == "POST" and form.is_valid():
        reason, approve = form.cleaned_data["reason"], form.cleaned_data["decision"] == forms.APPROVE
        try:
            if approve:
                decided = payments.approve_refund(refund, by=request.user, note=reason)
            else:
                decided = payments.reject_refund(refund, by=request.user, note=reason)
        except (BillingError, PaymentError) as refused:
            form.add_error(None, str(refused))
        else:
            return finish(
                request,
                _refund_message(decided, request.user),
                redirect_to=reverse("staff:refunds"),
                events=(QUEUE_CHANGED,),
            )
    context = {
        "refund": refund,
        "form": form,
        "needs_two": payments.refund_needs_two(refund),
        "history": for_object(refund),
        **_two_person_rule(),
    }
    return render_dialog(request, "staff/refund_decide.html", context, status=_status(form))


def _refund_message(refund: RefundRequest, user) -> str:
    if refund.status == RefundStatus.PENDING:
        return _("First approval recorded: a second Finance member must approve this refund.")
    if refund.reviewed_by_id != user.pk:
        return _("This refund request had already been decided.")
    if refund.status == RefundStatus.REFUNDED:
        return _("Refunded %(amount)s.") % {"amount": usd(refund.amount)}
    return _("Refund request rejected.")


# Bank transfers


@staff_view(roles.DECIDE_TRANSFER)
@require_GET
def transfers(request: HttpRequest) -> HttpResponse:
    form = forms.TransferFilter(request.GET)
    rows = nav.pending_transfers().select_related("account__country", "created_by").order_by("created_at", "pk")
    table = _table(request, tables.TransferTable, form.apply(rows))
    return render_page(request, "staff/transfers.html", {"form": form, "table": table}, partial="table")


@staff_view(roles.DECIDE_TRANSFER)
@require_http_methods(["GET", "POST"])
def transfer_decide(request: HttpRequest, pk) -> HttpResponse:
    transfer = _transfer(pk)
    form = forms.TransferDecisionForm(_posted(request))
    if request.method == "POST" and form.is_valid():
        received, reason = form.cleaned_data["decision"] == forms.RECEIVED, form.cleaned_data["reason"]
        decide = payments.confirm_bank_transfer if received else payments.fail_bank_transfer
        try:
            settled = decide(transfer, by=request.user, reason=reason)
        except (BillingError, PaymentError) as refused:
            form.add_error(None, str(refused))
        else:
            if settled.status == PaymentStatus.SUCCEEDED:
                message = _("Bank transfer confirmed: the prepayment credit is granted.")
            else:
                message = _("Bank transfer marked as not received.")
            return finish(request, message, redirect_to=reverse("staff:transfers"), events=(QUEUE_CHANGED,))
    context = {"transfer": transfer, "form": form, "history": for_object(transfer)}
    return render_dialog(request, "staff/transfer_decide.html", context, status=_status(form))


# Past-due accounts, suspension and reinstatement


@dataclass(frozen=True)
class PastDue:
    """One past-due account as the queue shows it, from its statements whose payment failed."""

    account: BillingAccount
    amount_due: Decimal
    oldest: date
    retries: int
    next_retry_at: datetime | None

    @classmethod
    def of(cls, account: BillingAccount) -> "PastDue":
        statements = account.failed_statements  # oldest first, with their payments (prefetched)
        upcoming = [upcoming_retry(s, s.payments.all()) for s in statements]
        return cls(
            account=account,
            amount_due=sum((s.amount_due for s in statements), Decimal("0")),
            oldest=statements[0].month,
            retries=sum(1 for s in statements for p in s.payments.all() if p.retry),
            next_retry_at=min((at for at in upcoming if at is not None), default=None),
        )


@staff_view(roles.SUSPEND)
@require_GET
def past_due(request: HttpRequest) -> HttpResponse:
    form = forms.PastDueFilter(request.GET)
    failed = Statement.objects.filter(status=StatementStatus.PAYMENT_FAILED).prefetch_related("payments")
    accounts = form.apply(nav.past_due_accounts()).prefetch_related(
        Prefetch("statements", queryset=failed.order_by("month"), to_attr="failed_statements")
    )
    rows = [PastDue.of(account) for account in accounts]
    rows.sort(key=lambda row: (row.oldest, row.account.display_name, row.account.account_id))
    context = {"form": form, "table": _table(request, tables.PastDueTable, rows)}
    return render_page(request, "staff/past_due.html", context, partial="table")


@staff_view(roles.SUSPEND)
@require_http_methods(["GET", "POST"])
def account_status(request: HttpRequest, account_id: str) -> HttpResponse:
    account = _account(account_id)
    suggested = forms.REINSTATE if account.status == AccountStatus.SUSPENDED else forms.SUSPEND
    form = forms.AccountStatusForm(_posted(request), initial={"decision": suggested})
    if request.method == "POST" and form.is_valid():
        suspend = form.cleaned_data["decision"] == forms.SUSPEND
        status = AccountStatus.SUSPENDED if suspend else AccountStatus.ACTIVE
        try:
            set_account_status(
                account, status, by=request.user, reason=form.cleaned_data["reason"], actor_kind=ActorKind.STAFF
            )
        except BillingError as refused:  # a closed account
            form.add_error(None, str(refused))
        else:
            message = _("Billing account suspended.") if suspend else _("Billing account reinstated.")
            return finish(request, message, redirect_to=reverse("staff:past-due"), events=(QUEUE_CHANGED,))
    context = {"account": account, "form": form, "history": for_object(account)}
    return render_dialog(request, "staff/account_status.html", context, status=_status(form))


# Goodwill credits


@staff_view(roles.GRANT_GOODWILL)
@require_GET
def goodwill_list(request: HttpRequest) -> HttpResponse:
    form = forms.GoodwillFilter(request.GET)
    rows = GoodwillGrant.objects.select_related("account", "requested_by", "decided_by")
    table = _table(request, tables.GoodwillTable, form.apply(rows).order_by("requested_at", "pk"))
    context = {"form": form, "table": table, **_two_person_rule()}
    return render_page(request, "staff/goodwill.html", context, partial="table")


@staff_view(roles.GRANT_GOODWILL)
@require_http_methods(["GET", "POST"])
def goodwill_new(request: HttpRequest, account_id: str) -> HttpResponse:
    account = _account(account_id)
    zone = reader_zone(request)
    form = forms.GoodwillForm(_posted(request), zone=zone)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            grant = goodwill.request_goodwill(
                account,
                amount=data["amount"],
                reason_code=data["reason_code"],
                note=data["note"],
                expires_at=form.expires_at,
                by=request.user,
            )
        except BillingError as refused:
            form.add_error(None, str(refused))
        else:
            amount = usd(grant.amount)
            if grant.status == GoodwillStatus.GRANTED:
                message = _("Goodwill credit of %(amount)s granted.") % {"amount": amount}
            else:
                message = _("Goodwill credit of %(amount)s requested: a second Finance member must approve it.") % {
                    "amount": amount
                }
            return finish(request, message, redirect_to=reverse("staff:goodwill"), events=(QUEUE_CHANGED,))
    context = {"account": account, "form": form, "zone": zone.key, **_two_person_rule()}
    return render_dialog(request, "staff/goodwill_new.html", context, status=_status(form))


@staff_view(roles.GRANT_GOODWILL)
@require_http_methods(["GET", "POST"])
def goodwill_decide(request: HttpRequest, pk: int) -> HttpResponse:
    grant = _grant(pk)
    form = forms.ApproveRejectForm(_posted(request))
    if request.method == "POST" and form.is_valid():
        approve, note = form.cleaned_data["decision"] == forms.APPROVE, form.cleaned_data["reason"]
        try:
            decided = (goodwill.approve_goodwill if approve else goodwill.reject_goodwill)(
                grant, by=request.user, note=note
            )
        except BillingError as refused:
            form.add_error(None, str(refused))
        else:
            if decided.decided_by_id != request.user.pk:
                message = _("This goodwill credit had already been decided.")
            elif decided.status == GoodwillStatus.GRANTED:
                message = _("Goodwill credit granted.")
            else:
                message = _("Goodwill credit rejected.")
            return finish(request, message, redirect_to=reverse("staff:goodwill"), events=(QUEUE_CHANGED,))
    context = {"grant": grant, "form": form, "history": for_object(grant)}
    return render_dialog(request, "staff/goodwill_decide.html", context, status=_status(form))


urlpatterns = [
    path("refunds/", refunds, name="refunds"),
    path("refunds/<int:pk>/", refund_decide, name="refund-decide"),
    path("transfers/", transfers, name="transfers"),
    path("transfers/<uuid:pk>/", transfer_decide, name="transfer-decide"),
    path("past-due/", past_due, name="past-due"),
    path("accounts/<str:account_id>/status/", account_status, name="account-status"),
    path("goodwill/", goodwill_list, name="goodwill"),
    path("accounts/<str:account_id>/goodwill/", goodwill_new, name="goodwill-new"),
    path("goodwill/<int:pk>/", goodwill_decide, name="goodwill-decide"),
]
