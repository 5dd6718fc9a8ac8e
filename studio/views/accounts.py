from django.contrib import messages
from django.contrib.auth import authenticate, login
from django.contrib.auth.decorators import login_required
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone, translation
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from studio.forms import LanguageForm, SettingsForm, SignUpForm
from studio.models import User
from studio.services import provision_defaults
from studio.views.rendering import render_page


@sensitive_post_parameters("password")
@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("api-keys")
    form = SignUpForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        email, password = form.cleaned_data["email"], form.cleaned_data["password"]
        try:
            with transaction.atomic():
                user = User.objects.create_user(
                    email, password, terms_accepted_at=timezone.now(), language=translation.get_language() or "en"
                )
        except IntegrityError:
            # A retried sign-up (same e-mail and password) signs the person in instead of failing.
            user = authenticate(request, username=email, password=password)
            if user is None:
                form.add_error("email", _("An account with this email already exists. Sign in instead."))
                return render(request, "registration/signup.html", {"form": form}, status=422)
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        created = provision_defaults(user)
        if created is None:
            return redirect("api-keys")
        key, raw = created
        return render_page(request, "registration/welcome.html", {"key": key, "raw_key": raw}, secret=True)
    return render(request, "registration/signup.html", {"form": form}, status=422 if form.errors else 200)


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
        if request.user.is_authenticated and request.user.language != language:
            request.user.language = language
            request.user.save(update_fields=["language"])
        response.set_cookie("django_language", language, samesite="Lax", secure=request.is_secure(), max_age=31536000)
    return response
