"""Statements (R19): the statement page (an issued month, or the running month's estimate), its CSV and
PDF, and paying a past-due statement (dunning, SPEC §9)."""

import csv
import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods

from billing.dunning import pay_statement, upcoming_retry
from billing.forms import NEW_CARD, CardForm, StatementPaymentForm
from billing.models import AttemptStatus, PaymentMethod, PaymentsProfile, Statement, StatementPayment
from billing.processor import PaymentError
from billing.services import BillingError
from billing.statement_pdf import render_pdf
from billing.statements import Draft, estimate, month_of, parse_month, statement_draft
from billing.views.access import get_account_for_user, get_statement_for_user
from studio.templatetags.money import usd
from studio.views.rendering import BILLING_CHANGED, KEYS_CHANGED, finish, render_dialog, render_page
from studio.zones import reader_zone


@login_required
def statement(request: HttpRequest, account_id: str, month: str) -> HttpResponse:
    account = get_account_for_user(request.user, account_id)
    first = parse_month(month)
    if first is not None and first == month_of(timezone.now()):
        draft, issued = estimate(account), None
    else:
        issued = get_statement_for_user(request.user, account_id, month)
        draft = statement_draft(issued)
    others = Statement.objects.filter(account=account).order_by("-month").only("month")
    context = {"account": account, "draft": draft, "statement": issued, "others": others, "zone": reader_zone(request)}
    if issued is not None and issued.is_past_due:
        context["next_retry"] = upcoming_retry(issued, draft.payments)
    return render_page(request, "billing/statements/statement.html", context)


@login_required
@sensitive_post_parameters("number", "cvc")
@require_http_methods(["GET", "POST"])
def pay(request: HttpRequest, account_id: str, month: str) -> HttpResponse:
    """Pay a past-due statement with another card (a billing administrator only: anyone else gets 404)."""
    issued = get_statement_for_user(request.user, account_id, month)
    page = reverse("billing:statement", args=[account_id, issued.slug])
    data = request.POST if request.method == "POST" else None
    if data is None and not issued.is_past_due:
        return redirect(page)
    form = _payment_form(request, data)
    card_form = CardForm(data if data is not None and data.get("method") == NEW_CARD else None)
    error = None
    if data is not None and form.is_valid() and (not card_form.is_bound or card_form.is_valid()):
        repeated = StatementPayment.objects.filter(pk=form.cleaned_data["attempt"], statement=issued).first()
        if repeated is not None:  # a double submit: its outcome, and no second card
            return _outcome(request, issued, repeated, page)
        try:
            payment = pay_statement(
                issued,
                attempt_id=form.cleaned_data["attempt"],
                payment_method=_chosen_card(request, form.cleaned_data["method"], card_form),
                by=request.user,
                make_primary=form.cleaned_data["make_primary"],
            )
        except (BillingError, PaymentError) as refused:  # a card refused when added: nothing was charged
            error = refused.reason if isinstance(refused, PaymentError) else str(refused)
        else:
            return _outcome(request, issued, payment, page)
    return _pay_dialog(request, issued, form, card_form, error)


def _payment_form(request, data):
    methods = PaymentMethod.objects.usable().filter(profile__owner=request.user, kind="card").order_by("created_at")
    return StatementPaymentForm(data, methods=list(methods), initial={"attempt": uuid.uuid4()})


def _chosen_card(request, choice, card_form):
    if choice != NEW_CARD:
        return choice
    profile = PaymentsProfile.objects.filter(owner=request.user).first()
    if profile is None:  # a card belongs to its holder's own payments profile, never to another's
        raise BillingError(_("Add your contact information on the billing page before adding a card."))
    return card_form.add_to(profile, by=request.user)


def _pay_dialog(request, issued, form, card_form, error) -> HttpResponse:
    issued.refresh_from_db()
    context = {"account": issued.account, "statement": issued, "form": form, "card_form": card_form, "error": error}
    failed = form.errors or (card_form.is_bound and card_form.errors) or error
    return render_dialog(request, "billing/statements/pay.html", context, status=422 if failed else 200)


def _outcome(request, issued, payment, page) -> HttpResponse:
    if payment.status == AttemptStatus.SUCCEEDED:
        message = _("Payment of %(amount)s received: the %(month)s statement is paid.") % {
            "amount": usd(payment.amount),
            "month": issued.month_label,
        }
        # The billing page, the keys table and the statement reload: a reinstated account's projects changed.
        return finish(request, message, redirect_to=page, events=(BILLING_CHANGED, KEYS_CHANGED))
    if payment.status == AttemptStatus.FAILED:
        # A fresh attempt id: trying again (another card) is a new payment.
        retry = _payment_form(request, None)
        return _pay_dialog(request, issued, retry, CardForm(), payment.failure_reason)
    message = _(
        "We are still waiting for the payment processor's answer. Nothing more will be charged: the payment is "
        "settled automatically within minutes."
    )
    return finish(request, message, redirect_to=page, events=(BILLING_CHANGED,), level=messages.WARNING)


def _filename(issued: Statement, extension: str) -> str:
    return f"statement-{issued.account.account_id}-{issued.slug}.{extension}"


@login_required
def statement_csv(request: HttpRequest, account_id: str, month: str) -> HttpResponse:
    issued = get_statement_for_user(request.user, account_id, month)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{_filename(issued, "csv")}"'
    write_csv(statement_draft(issued), response)
    return response


@login_required
def statement_pdf(request: HttpRequest, account_id: str, month: str) -> HttpResponse:
    issued = get_statement_for_user(request.user, account_id, month)
    response = HttpResponse(
        render_pdf(statement_draft(issued), language=get_language()), content_type="application/pdf"
    )
    response["Content-Disposition"] = f'attachment; filename="{_filename(issued, "pdf")}"'
    return response


def write_csv(draft: Draft, out) -> None:
    """The statement as CSV, in the reader's language: one row per line (the exact amount and the
    amount shown, by the running-total rule), then the totals."""
    writer = csv.writer(out)
    writer.writerow(
        [
            _("Line"),
            _("Kind"),
            _("Usage month"),
            _("Project ID"),
            _("Project"),
            _("Model"),
            _("SKU"),
            _("Price version"),
            _("Batch"),
            _("Long prompt"),
            _("Quantity"),
            _("Events"),
            _("Exact amount (USD)"),
            _("Amount (USD)"),
        ]
    )
    for line in draft.lines:
        project = line.project
        writer.writerow(
            [
                line.position,
                _("Late usage") if line.is_late(draft.month) else line.label,
                f"{line.usage_month:%Y-%m}" if line.usage_month else "",
                project.project_id if project else "",
                project.name if project else "",
                line.model_id,
                line.get_sku_display() if line.sku else "",
                line.price_id or "",
                _("yes") if line.batch else "",
                _("yes") if line.long_prompt else "",
                f"{line.quantity.normalize():f}" if line.kind == "usage" and line.project_id else "",
                line.events if line.kind == "usage" and line.project_id else "",
                f"{line.exact_amount:f}",
                f"{line.amount:.2f}",
            ]
        )
    writer.writerow([])
    writer.writerow([_("Usage total"), *[""] * 12, f"{draft.usage_total:.2f}"])
    writer.writerow([_("Credits applied"), *[""] * 12, f"{draft.credits_total:.2f}"])
    writer.writerow([_("Amount due"), *[""] * 12, f"{draft.amount_due:.2f}"])
