"""/staff/2fa/: the staff second factor (SPEC §10): verify, enrol (QR code + recovery codes), new recovery codes.

These views are open to any active staff member (404 for anyone else) and are not behind staff_view's
second-factor redirect, since they are where it leads. staff.middleware sends the admin here too.
"""

import math
from functools import wraps
from urllib.parse import urlencode, urlsplit

import django_otp
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_http_methods

from staff import two_factor
from staff.access import is_staff_member, needs_second_factor
from staff.security_forms import EnrolForm, VerifyForm
from studio.views.rendering import render_page


def any_staff(view):
    """404 unless the user is active staff. No permission or second factor needed: these pages are the second factor."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not is_staff_member(request.user):
            raise Http404
        return view(request, *args, **kwargs)

    wrapped.staff_permissions = ()  # read by the permission-matrix test, as staff_view's
    return wrapped


def safe_next(request: HttpRequest) -> str:
    """Where to go after verifying: `next` if it is a path of this site under /staff/ or /admin/, else staff home."""
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    allowed = (reverse("staff:home"), reverse("admin:index"))
    parts = urlsplit(candidate)
    if (
        url_has_allowed_host_and_scheme(candidate, allowed_hosts=None)
        and not parts.scheme
        and not parts.netloc
        and parts.path.startswith(allowed)
    ):
        return candidate
    return reverse("staff:home")


def _to(name: str, next_url: str) -> HttpResponse:
    return redirect(f"{reverse(name)}?{urlencode({'next': next_url})}")


def _sign_in(request: HttpRequest, device) -> None:
    # A session that gains a privilege gets a new key (as django.contrib.auth.login does).
    request.session.cycle_key()
    django_otp.login(request, device)


def _refuse(form: VerifyForm | EnrolForm, locked_until=None) -> int:
    """Put the refusal on the code field; the response status: 429 while throttled, else 422."""
    if locked_until is None:
        form.add_error("code", _("That code is not right. Check that your phone's clock is correct and try again."))
        return 422
    seconds = max(math.ceil((locked_until - timezone.now()).total_seconds()), 1)
    message = ngettext(
        "Too many wrong codes. Try again in %(seconds)d second.",
        "Too many wrong codes. Try again in %(seconds)d seconds.",
        seconds,
    )
    form.add_error("code", message % {"seconds": seconds})
    return 429


@require_http_methods(["GET", "POST"])
@any_staff
def verify(request: HttpRequest) -> HttpResponse:
    """Ask for a code (authenticator or recovery); once verified, show the second factor's state."""
    user, next_url = request.user, safe_next(request)
    if not two_factor.has_authenticator(user):
        return _to("staff:two-factor-setup", next_url)
    form, status = VerifyForm(request.POST or None, initial={"next": next_url}), 200
    if form.is_bound:
        status = 422
        if form.is_valid():
            outcome = two_factor.verify(user, form.cleaned_data["code"])
            if outcome.device is not None:
                _sign_in(request, outcome.device)
                return redirect(next_url)
            status = _refuse(form, outcome.locked_until)
    context = {
        "form": form,
        "next_url": next_url,
        "verified": user.is_verified(),
        "gate": needs_second_factor(request),
        "recovery_codes_left": two_factor.recovery_codes_left(user),
    }
    return render_page(request, "staff/two_factor.html", context, status=status)


@require_http_methods(["GET", "POST"])
@any_staff
def setup(request: HttpRequest) -> HttpResponse:
    """Enrol an authenticator: QR code and key, confirmed by a code; then the recovery codes, shown once.

    A member who already has one replaces it (lost phone) only from a session verified with it.
    """
    user, next_url = request.user, safe_next(request)
    replacing = two_factor.has_authenticator(user)
    if replacing and not user.is_verified():
        return _to("staff:two-factor", next_url)
    form, status = EnrolForm(request.POST or None, initial={"next": next_url}), 200
    if form.is_bound:
        status = 422
        if form.is_valid():
            enrolled = two_factor.enrol(user, form.cleaned_data["code"])
            if enrolled is not None:
                device, codes = enrolled
                _sign_in(request, device)
                return _show_codes(request, codes, next_url, enrolled=True)
            status = _refuse(form)
    device = two_factor.pending_device(user)
    context = {
        "form": form,
        "replacing": replacing,
        "gate": needs_second_factor(request),
        "qr_code": two_factor.qr_data_uri(device),
        "secret": two_factor.secret_for_display(device),
    }
    return render_page(request, "staff/two_factor_setup.html", context, status=status, secret=True)


@require_http_methods(["GET", "POST"])
@any_staff
def recovery_codes(request: HttpRequest) -> HttpResponse:
    """POST: new recovery codes (the old ones stop working), from a verified session only. GET: the button."""
    user = request.user
    if request.method == "GET" or not user.is_verified():
        return _to("staff:two-factor", reverse("staff:two-factor"))
    codes = two_factor.regenerate_recovery_codes(user)
    return _show_codes(request, codes, reverse("staff:two-factor"), enrolled=False)


def _show_codes(request: HttpRequest, codes: list[str], next_url: str, *, enrolled: bool) -> HttpResponse:
    # Shown once, in the response to the POST that made them: not kept in the session, never cached.
    context = {"codes": codes, "next_url": next_url, "enrolled": enrolled}
    return render_page(request, "staff/recovery_codes.html", context, secret=True)


urlpatterns = [
    path("2fa/", verify, name="two-factor"),
    path("2fa/setup/", setup, name="two-factor-setup"),
    path("2fa/recovery-codes/", recovery_codes, name="two-factor-recovery"),
]
