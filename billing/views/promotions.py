"""Redeeming a promotional code on the billing page: a dialog for the account's billing administrators
(anyone else gets 404, as for every part of a billing account). Attempts are throttled per person."""

import math

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.utils.translation import ngettext
from django.views.decorators.http import require_http_methods

from billing.forms import RedeemCodeForm
from billing.promotions import redeem
from billing.services import BillingError
from billing.views.access import get_account_for_user
from studio.templatetags.money import usd
from studio.throttling import throttle
from studio.views.rendering import BILLING_CHANGED, finish, render_dialog


@login_required
@require_http_methods(["GET", "POST"])
def redeem_code(request: HttpRequest, account_id: str) -> HttpResponse:
    account = get_account_for_user(request.user, account_id)
    form = RedeemCodeForm(request.POST if request.method == "POST" else None)
    status = 200
    if request.method == "POST":
        # Every attempt counts, right or wrong: guessing codes costs the same as typing one.
        rate = settings.THROTTLE_PROMO_REDEEM_PER_USER
        if wait := throttle(request, scope="promo-redeem:user", key=str(request.user.pk), rate=rate):
            return _throttled(request, account, form, wait)
        if form.is_valid():
            try:
                credit = redeem(account, form.cleaned_data["code"], by=request.user)
            except BillingError as refused:
                form.add_error("code", str(refused))
            else:
                return finish(request, _success(credit, account), redirect_to="billing:page", events=(BILLING_CHANGED,))
        status = 422
    return render_dialog(request, "billing/redeem_code.html", {"account": account, "form": form}, status=status)


def _success(credit, account) -> str:
    days = (credit.expires_at - credit.granted_at).days
    return ngettext(
        "A promotional credit of %(amount)s was added to %(account)s. It pays for usage for %(days)d day.",
        "A promotional credit of %(amount)s was added to %(account)s. It pays for usage for %(days)d days.",
        days,
    ) % {"amount": usd(credit.original_amount), "account": account.display_name, "days": days}


def _throttled(request: HttpRequest, account, form: RedeemCodeForm, wait: int) -> HttpResponse:
    """429: the dialog again, with the minutes to wait (rounded up) and nothing redeemed."""
    minutes = math.ceil(wait / 60)
    form.errors.clear()
    form.add_error(
        None,
        ngettext(
            "Too many attempts to redeem a code. Try again in %(minutes)d minute.",
            "Too many attempts to redeem a code. Try again in %(minutes)d minutes.",
            minutes,
        )
        % {"minutes": minutes},
    )
    context = {"account": account, "form": form}
    response = render_dialog(request, "billing/redeem_code.html", context, status=429)
    response["Retry-After"] = str(wait)
    return response
