"""Promotional codes (Finance): the list with its states, a new code, and one code's page (its
redemptions, its history, a second Finance member's approval of a code above the two-person threshold,
deactivation with a reason). The rules are in billing.promotions."""

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import path
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST
from django_tables2 import RequestConfig

from billing.models import PromoCode
from billing.promotions import PromoState, approve_code, create_code, deactivate, state_of, with_state
from billing.services import BillingError
from staff import history, roles
from staff.access import staff_view
from staff.promotion_forms import ApproveForm, DeactivateForm, PromoCodeForm, PromoFilterForm
from staff.promotion_tables import PromoCodeTable
from studio.views.rendering import render_page
from studio.zones import reader_zone

PER_PAGE = 50
REDEMPTIONS_SHOWN = 200


@staff_view(roles.MANAGE_PROMOTIONS)
def promotion_list(request: HttpRequest) -> HttpResponse:
    form = PromoFilterForm(request.GET or None)
    codes = with_state(PromoCode.objects.all()).order_by("-created_at", "-pk")
    if form.is_valid() and form.cleaned_data["state"]:
        codes = codes.filter(state=form.cleaned_data["state"])
    table = PromoCodeTable(codes, request=request)
    RequestConfig(request, paginate={"per_page": PER_PAGE}).configure(table)
    context = {"table": table, "form": form, "zone": reader_zone(request)}
    return render_page(request, "staff/promotions/list.html", context, partial="codes-table")


@staff_view(roles.MANAGE_PROMOTIONS)
@require_http_methods(["GET", "POST"])
def promotion_new(request: HttpRequest) -> HttpResponse:
    form = PromoCodeForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            promo = create_code(**form.cleaned_data, by=request.user)
        except BillingError as refused:  # e.g. the same code created a moment ago in another tab
            form.add_error("code", str(refused))
        else:
            if promo.approved_at is None:
                message = _("Promotional code %(code)s created: a second Finance member must approve it.")
            else:
                message = _("Promotional code %(code)s created.")
            messages.success(request, message % {"code": promo.code})
            return redirect("staff:promotion", pk=promo.pk)
    status = 422 if form.errors else 200
    context = {"form": form, "threshold": settings.STAFF_APPROVAL_THRESHOLD}
    return render_page(request, "staff/promotions/new.html", context, status=status)


def _promo(pk: int) -> PromoCode:
    return get_object_or_404(PromoCode.objects.select_related("created_by", "approved_by"), pk=pk)


@staff_view(roles.MANAGE_PROMOTIONS)
@require_http_methods(["GET", "POST"])
def promotion_detail(request: HttpRequest, pk: int) -> HttpResponse:
    promo = _promo(pk)
    form = DeactivateForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and promo.active and form.is_valid():
        deactivate(promo, by=request.user, reason=form.cleaned_data["reason"])
        messages.success(request, _("Promotional code %(code)s deactivated.") % {"code": promo.code})
        return redirect("staff:promotion", pk=promo.pk)
    return _detail(request, promo, form=form, approve_form=ApproveForm())


@staff_view(roles.MANAGE_PROMOTIONS)
@require_POST
def promotion_approve(request: HttpRequest, pk: int) -> HttpResponse:
    promo = _promo(pk)
    form = ApproveForm(request.POST)
    if form.is_valid():
        try:
            approved = approve_code(promo, by=request.user, note=form.cleaned_data["note"])
        except BillingError as refused:
            form.add_error(None, str(refused))
        else:
            if approved.approved_by_id == request.user.pk:
                message = _("Promotional code %(code)s approved: it can be redeemed.")
            else:
                message = _("Promotional code %(code)s had already been decided.")
            messages.success(request, message % {"code": promo.code})
            return redirect("staff:promotion", pk=promo.pk)
    return _detail(request, promo, form=DeactivateForm(), approve_form=form)


def _detail(request: HttpRequest, promo: PromoCode, *, form, approve_form) -> HttpResponse:
    state = state_of(promo)
    context = {
        "promo": promo,
        "state": state,
        "form": form,
        "approve_form": approve_form if state == PromoState.WAITING else None,
        "threshold": settings.STAFF_APPROVAL_THRESHOLD,
        "redemptions": list(
            promo.redemptions.select_related("account", "credit", "redeemed_by").order_by("-redeemed_at", "-pk")[
                :REDEMPTIONS_SHOWN
            ]
        ),
        "events": history.for_object(promo),
        "zone": reader_zone(request),
    }
    status = 422 if form.errors or approve_form.errors else 200
    return render_page(request, "staff/promotions/detail.html", context, status=status)


urlpatterns = [
    path("promotions/", promotion_list, name="promotions"),
    path("promotions/new/", promotion_new, name="promotion-new"),
    path("promotions/<int:pk>/", promotion_detail, name="promotion"),
    path("promotions/<int:pk>/approve/", promotion_approve, name="promotion-approve"),
]
