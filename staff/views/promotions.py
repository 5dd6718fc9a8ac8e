"""Promotional codes (Finance): the list with its states, a new code, and one code's page (its
redemptions, its history, deactivation with a reason). The rules are in billing.promotions."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import path
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods
from django_tables2 import RequestConfig

from billing.models import PromoCode
from billing.promotions import create_code, deactivate, state_of, with_state
from billing.services import BillingError
from staff import history, roles
from staff.access import staff_view
from staff.promotion_forms import DeactivateForm, PromoCodeForm, PromoFilterForm
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
            messages.success(request, _("Promotional code %(code)s created.") % {"code": promo.code})
            return redirect("staff:promotion", pk=promo.pk)
    status = 422 if form.errors else 200
    return render_page(request, "staff/promotions/new.html", {"form": form}, status=status)


@staff_view(roles.MANAGE_PROMOTIONS)
@require_http_methods(["GET", "POST"])
def promotion_detail(request: HttpRequest, pk: int) -> HttpResponse:
    promo = get_object_or_404(PromoCode.objects.select_related("created_by"), pk=pk)
    form = DeactivateForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and promo.active and form.is_valid():
        deactivate(promo, by=request.user, reason=form.cleaned_data["reason"])
        messages.success(request, _("Promotional code %(code)s deactivated.") % {"code": promo.code})
        return redirect("staff:promotion", pk=promo.pk)
    context = {
        "promo": promo,
        "state": state_of(promo),
        "form": form,
        "redemptions": list(
            promo.redemptions.select_related("account", "credit", "redeemed_by").order_by("-redeemed_at", "-pk")[
                :REDEMPTIONS_SHOWN
            ]
        ),
        "events": history.for_object(promo),
        "zone": reader_zone(request),
    }
    return render_page(request, "staff/promotions/detail.html", context, status=422 if form.errors else 200)


urlpatterns = [
    path("promotions/", promotion_list, name="promotions"),
    path("promotions/new/", promotion_new, name="promotion-new"),
    path("promotions/<int:pk>/", promotion_detail, name="promotion"),
]
