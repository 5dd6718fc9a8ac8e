"""The one-time prepayment dialog (R13), its outcome, the console notice (R12) and refunds (R16)."""

import uuid
from decimal import ROUND_DOWN

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import trigger_client_event

from billing.forms import BANK_TRANSFER, NEW_CARD, CardForm, PrepaymentForm, RefundForm
from billing.models import PaymentMethod, PaymentsProfile, PaymentStatus, Prepayment
from billing.money import CENTS
from billing.payments import pay_prepayment, refundable, request_refund
from billing.processor import PaymentError
from billing.services import BillingError, dismiss_prepayment_notice
from billing.views.access import get_account_for_user
from studio.models import Project
from studio.views.rendering import BILLING_CHANGED, KEYS_CHANGED, finish, render_dialog


@login_required
def prepayment_for_project(request: HttpRequest) -> HttpResponse:
    """**Action required** on a key row: the prepayment of the project's billing account."""
    project = get_object_or_404(Project.objects.imported_by(request.user), project_id=request.GET.get("project", ""))
    account = getattr(getattr(project, "billing", None), "account", None)
    if account is not None and account.administrators.filter(user=request.user).exists():
        return redirect("billing:prepayment", account_id=account.account_id)
    # Someone who sees the key but does not administer the billing account is told who can pay.
    return render_dialog(request, "billing/prepayment_not_admin.html", {"project": project, "account": account})


@login_required
@sensitive_post_parameters("number", "cvc")
@require_http_methods(["GET", "POST"])
def prepayment(request: HttpRequest, account_id: str) -> HttpResponse:
    account = get_account_for_user(request.user, account_id)
    last = Prepayment.objects.filter(account=account).first()
    if not account.prepayment_outstanding:
        if last is not None:
            return redirect("billing:prepayment-attempt", account_id=account.account_id, attempt_id=last.pk)
        return redirect("billing:page")
    data = request.POST if request.method == "POST" else None
    form = _prepayment_form(request, account, data)
    card_form = CardForm(data if data is not None and data.get("method") == NEW_CARD else None)
    error = None
    if data is not None and form.is_valid() and (not card_form.is_bound or card_form.is_valid()):
        repeated = Prepayment.objects.filter(pk=form.cleaned_data["attempt"], account=account).first()
        if repeated is not None:  # a double submit: show the attempt, add no second card
            return _show_attempt(request, account, repeated)
        try:
            method = _chosen_method(request, account, form.cleaned_data["method"], card_form)
            attempt = pay_prepayment(
                account,
                attempt_id=form.cleaned_data["attempt"],
                amount=form.cleaned_data["amount"],
                payment_method=method,
                bank_transfer=method is None,
                by=request.user,
            )
        except (BillingError, PaymentError) as refused:
            # A card refused when added: nothing was charged and nothing else is lost.
            error = refused.reason if isinstance(refused, PaymentError) else str(refused)
        else:
            return _show_attempt(request, account, attempt)
    context = {"account": account, "form": form, "card_form": card_form, "error": error}
    failed = form.errors or (card_form.is_bound and card_form.errors) or error
    return render_dialog(request, "billing/prepayment.html", context, status=422 if failed else 200)


def _prepayment_form(request, account, data, *, amount=None):
    methods = list(
        PaymentMethod.objects.usable().filter(profile__owner=request.user, kind="card").order_by("created_at")
    )
    initial = {"attempt": uuid.uuid4(), "amount": amount or account.prepayment_amount}
    return PrepaymentForm(data, account=account, methods=methods, initial=initial)


def _chosen_method(request, account, choice, card_form):
    """The payment method to charge: an existing card, a new one (verified now), or None for a
    bank transfer."""
    if choice == BANK_TRANSFER:
        return None
    if choice == NEW_CARD:
        profile = PaymentsProfile.objects.filter(owner=request.user).first()
        if profile is None:  # a card belongs to its holder's own payments profile, never to another's
            raise BillingError(_("Add your contact information on the billing page before adding a card."))
        return card_form.add_to(profile, by=request.user)
    return choice


@login_required
def prepayment_attempt(request: HttpRequest, account_id: str, attempt_id) -> HttpResponse:
    account = get_account_for_user(request.user, account_id)
    attempt = get_object_or_404(Prepayment, pk=attempt_id, account=account)
    return _show_attempt(request, account, attempt)


def _show_attempt(request, account, attempt) -> HttpResponse:
    retry = None
    if attempt.status == PaymentStatus.FAILED and account.prepayment_outstanding:
        retry = _prepayment_form(request, account, None, amount=attempt.amount)
    context = {"account": account, "attempt": attempt, "form": retry, "card_form": CardForm()}
    response = render_dialog(request, "billing/prepayment_result.html", context)
    if attempt.status == PaymentStatus.SUCCEEDED:
        # Every part of the page that depends on the payment reloads: the keys table and the
        # terms sentence, or the billing page; the notice goes (out-of-band, in the template).
        for event in (KEYS_CHANGED, BILLING_CHANGED):
            response = trigger_client_event(response, event)
    return response


@login_required
@require_POST
def dismiss_notice(request: HttpRequest, account_id: str) -> HttpResponse:
    account = get_account_for_user(request.user, account_id)
    dismiss_prepayment_notice(account, by=request.user)
    if request.htmx:
        return HttpResponse("")
    next_url = request.POST.get("next", "")
    safe = url_has_allowed_host_and_scheme(
        next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return redirect(next_url if safe else "api-keys")


@login_required
@require_http_methods(["GET", "POST"])
def refund(request: HttpRequest, account_id: str) -> HttpResponse:
    account = get_account_for_user(request.user, account_id)
    available = refundable(account).quantize(CENTS, rounding=ROUND_DOWN)
    form = RefundForm(request.POST if request.method == "POST" else None, initial={"amount": available})
    if request.method == "POST" and form.is_valid():
        try:
            request_refund(
                account, amount=form.cleaned_data["amount"], reason=form.cleaned_data["reason"], by=request.user
            )
        except BillingError as refused:
            form.add_error("amount", str(refused))
        else:
            message = _("Refund requested. Our billing team reviews it and tells you by email.")
            return finish(request, message, redirect_to="billing:page", events=(BILLING_CHANGED,))
    context = {"account": account, "form": form, "available": available}
    return render_dialog(request, "billing/refund.html", context, status=422 if form.errors else 200)
