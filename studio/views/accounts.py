import math

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import authenticate, login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import PasswordResetForm, SetPasswordForm
from django.core import signing
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import translation
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from studio import signup as signup_flow
from studio.forms import LanguageForm, SettingsForm, SignUpForm
from studio.models import User
from studio.services import provision_defaults
from studio.throttling import throttle_address, throttle_client
from studio.views.rendering import render_page


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Step one: e-mail and terms. Every valid request answers the same (no hint of who has an account)."""
    if request.user.is_authenticated:
        return redirect("api-keys")
    form = SignUpForm(request.POST if request.method == "POST" else None)
    if request.method == "POST":
        if wait := throttle_client(request, scope="signup", rate=settings.THROTTLE_SIGNUP_PER_CLIENT):
            return too_many_requests(request, wait)
        if form.is_valid():
            email = form.cleaned_data["email"]
            # Past the per-address rate the answer stays the same; only the e-mail is held back.
            if not throttle_address(request, scope="signup", email=email, rate=settings.THROTTLE_SIGNUP_PER_ADDRESS):
                signup_flow.request_signup(request, email=email, language=translation.get_language())
            return redirect("signup-sent")
    return render(request, "registration/signup.html", {"form": form}, status=422 if form.errors else 200)


def signup_sent(request: HttpRequest) -> HttpResponse:
    return render(request, "registration/signup_sent.html")


@sensitive_post_parameters("new_password1", "new_password2")
@require_http_methods(["GET", "POST"])
def signup_confirm(request: HttpRequest, token: str) -> HttpResponse:
    """Step two, from the e-mailed link: choose a password; the account is created, signed in and provisioned."""
    try:
        claim = signup_flow.read_token(token)
    except signing.SignatureExpired:
        return render(request, "registration/signup_confirm.html", {"link_problem": "expired"}, status=400)
    except signing.BadSignature:
        return render(request, "registration/signup_confirm.html", {"link_problem": "invalid"}, status=400)
    if User.objects.filter(email=claim.email).exists():
        return _account_exists(request)
    form = SetPasswordForm(User(email=claim.email), request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        password = form.cleaned_data["new_password1"]
        try:
            user = signup_flow.create_account(claim, password=password)
        except IntegrityError:
            # Two submits at once: the other one made the account. The same password signs in.
            user = authenticate(request, username=claim.email, password=password)
            if user is None:
                return _account_exists(request)
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        created = provision_defaults(user)
        if created is None:
            return redirect("api-keys")
        key, raw = created
        return render_page(request, "registration/welcome.html", {"key": key, "raw_key": raw}, secret=True)
    context = {"form": form, "email": claim.email}
    return render(request, "registration/signup_confirm.html", context, status=422 if form.errors else 200)


def _account_exists(request: HttpRequest) -> HttpResponse:
    messages.warning(request, _("An account with this email already exists. Sign in, or reset your password."))
    return redirect("login")


@require_http_methods(["GET", "POST"])
def password_reset(request: HttpRequest) -> HttpResponse:
    """Django's reset form and e-mail, throttled per client (429) and per address (no e-mail, same answer)."""
    form = PasswordResetForm(request.POST if request.method == "POST" else None)
    if request.method == "POST":
        if wait := throttle_client(request, scope="password-reset", rate=settings.THROTTLE_PASSWORD_RESET_PER_CLIENT):
            return too_many_requests(request, wait)
        if form.is_valid():
            email = form.cleaned_data["email"]
            rate = settings.THROTTLE_PASSWORD_RESET_PER_ADDRESS
            if not throttle_address(request, scope="password-reset", email=email, rate=rate):
                form.save(request=request, use_https=request.is_secure())
            return redirect("password_reset_done")
    return render(request, "registration/password_reset_form.html", {"form": form}, status=422 if form.errors else 200)


def too_many_requests(request: HttpRequest, wait: int) -> HttpResponse:
    """429 with the minutes to wait, rounded up."""
    response = render(request, "registration/throttled.html", {"minutes": math.ceil(wait / 60)}, status=429)
    response["Retry-After"] = str(wait)
    return response


@login_required
@require_http_methods(["GET", "POST"])
def settings_page(request: HttpRequest) -> HttpResponse:
    form = SettingsForm(request.POST if request.method == "POST" else None, instance=request.user)
    if request.method == "POST" and form.is_valid():
        form.save()
        translation.activate(request.user.language)
        messages.success(request, _("Settings saved."))
        response = redirect("settings")
        response.set_cookie(
            "django_language", request.user.language, samesite="Lax", secure=request.is_secure(), max_age=31536000
        )
        return response
    return render(request, "studio/settings.html", {"form": form}, status=422 if form.errors else 200)


@require_POST
def set_language(request: HttpRequest) -> HttpResponse:
    """The top bar's English/日本語 switch: a cookie for everyone, saved on the user when signed in."""
    next_url = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        next_url = "/"
    response = redirect(next_url)
    form = LanguageForm(request.POST)
    if form.is_valid():
        language = form.cleaned_data["language"]
        if request.user.is_authenticated:
            request.user.update_settings(language=language, by=request.user)  # audited when it changes
        response.set_cookie("django_language", language, samesite="Lax", secure=request.is_secure(), max_age=31536000)
    return response
