"""The billing set-up wizard: each step is a real URL; state lives in SetupSession."""

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from billing import ledger
from billing.forms import CardForm, ContactForm, CountryTermsForm, ProjectStepForm, SelectAccountForm
from billing.models import AccountStatus, BillingAccount, PaymentsProfile
from billing.processor import PaymentError
from billing.services import (
    BillingError,
    finish_setup,
    is_new_billing_user,
    required_prepayment,
    save_contact,
    start_setup,
)
from billing.views.access import get_setup_for_user
from studio.models import ApiKey, Project
from studio.views.rendering import render_dialog, render_page


def _redirect(request: HttpRequest, url: str) -> HttpResponse:
    # From a dialog, htmx must load the next page in full rather than swap it into the dialog.
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _step_url(session, step: str) -> str:
    return reverse(f"billing:setup-{step}", args=[session.pk])


def current_step(session) -> str:
    if session.is_finished:
        return "status"
    if session.project is None:
        return "project"
    if session.selected_account is None and not (session.country and session.terms_accepted):
        return "account"
    if session.selected_account is None:
        return "details"
    return "account"


@login_required
def setup_start(request: HttpRequest) -> HttpResponse:
    """Entry from **Set up billing** (`?project=<project id>`) or from the billing page."""
    project = None
    if project_id := request.GET.get("project"):
        project = get_object_or_404(Project.objects.writable_by(request.user), project_id=project_id)
    session = start_setup(request.user, project=project)
    return redirect(_step_url(session, current_step(session)))


def _context(session, step: str, **extra) -> dict:
    return {"session": session, "step": step, "steps": session.steps, **extra}


@login_required
@require_http_methods(["GET", "POST"])
def step_project(request: HttpRequest, setup_id) -> HttpResponse:
    session = get_setup_for_user(request.user, setup_id)
    if session.is_finished:
        return redirect(_step_url(session, "status"))
    projects = Project.objects.writable_by(request.user).order_by("name")
    keys = ApiKey.objects.active().filter(project__in=projects).select_related("project").order_by("name")
    initial = {"project": session.project.project_id if session.project else None, "api_key": session.api_key_id}
    form = ProjectStepForm(
        request.POST if request.method == "POST" else None, projects=projects, keys=keys, initial=initial
    )
    if request.method == "POST" and form.is_valid():
        session.choose_project(form.cleaned_data["project"], form.cleaned_data["api_key"])
        return redirect(_step_url(session, "account"))
    context = _context(session, "project", form=form, keys=keys)
    return render(request, "billing/setup/project.html", context, status=422 if form.errors else 200)


@login_required
@require_http_methods(["GET", "POST"])
def step_account(request: HttpRequest, setup_id) -> HttpResponse:
    """New billing users: country and terms. Existing ones: select an account or add a new one."""
    session = get_setup_for_user(request.user, setup_id)
    if session.is_finished:
        return redirect(_step_url(session, "status"))
    if session.project is None:
        return redirect(_step_url(session, "project"))
    data = request.POST if request.method == "POST" else None
    if is_new_billing_user(request.user):
        form = CountryTermsForm(data, initial={"country": session.country_id, "accept_terms": session.terms_accepted})
        if data is not None and form.is_valid():
            session.choose_country(form.cleaned_data["country"])
            return redirect(_step_url(session, "details"))
        template = "billing/setup/country.html"
    else:
        accounts = list(
            BillingAccount.objects.administered_by(request.user)
            .filter(status=AccountStatus.ACTIVE)
            .select_related("country")
            .order_by("created_at")
        )
        initial = {"account": session.selected_account.account_id} if session.selected_account else {}
        form = SelectAccountForm(data, accounts=accounts, initial=initial)
        if data is not None and form.is_valid():
            account = form.cleaned_data["account"]
            if account is None:  # "Add new billing account": continue at the details step (R9)
                # The new account is in their profile's country (or, for an administrator without a
                # profile, their first account's).
                profile = PaymentsProfile.objects.filter(owner=request.user).first()
                first = BillingAccount.objects.administered_by(request.user).order_by("created_at").first()
                session.choose_new_account(profile.country if profile else first.country)
                return redirect(_step_url(session, "details"))
            session.choose_existing_account(account)
            return _finish(request, session)
        template = "billing/setup/select_account.html"
    return render(request, template, _context(session, "account", form=form), status=422 if form.errors else 200)


@login_required
def step_details(request: HttpRequest, setup_id) -> HttpResponse:
    session = get_setup_for_user(request.user, setup_id)
    if (step := current_step(session)) != "details":
        return redirect(_step_url(session, step))
    profile = PaymentsProfile.objects.filter(owner=request.user).select_related("country").first()
    # R8: an existing payments profile pre-fills the payment method too.
    prefill = profile is not None and session.payment_method is None
    if prefill and (method := profile.payment_methods.usable().order_by("-created_at").first()):
        session.choose_payment_method(method)
    context = _context(session, "details", profile=profile, method=session.payment_method)
    return render(request, "billing/setup/details.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def contact_dialog(request: HttpRequest, setup_id) -> HttpResponse:
    session = get_setup_for_user(request.user, setup_id)
    profile = PaymentsProfile.objects.filter(owner=request.user).first()
    initial = (
        {} if profile else {"email": request.user.email, "name": request.user.full_name, "country": session.country_id}
    )
    form = ContactForm(request.POST if request.method == "POST" else None, instance=profile, initial=initial)
    if request.method == "POST" and form.is_valid():
        save_contact(request.user, **{name: form.cleaned_data[name] for name in form.Meta.fields})
        return _redirect(request, _step_url(session, "details"))
    context = {"session": session, "form": form}
    return render_dialog(request, "billing/setup/contact.html", context, status=422 if form.errors else 200)


@login_required
@sensitive_post_parameters("number", "cvc")
@require_http_methods(["GET", "POST"])
def payment_method_dialog(request: HttpRequest, setup_id) -> HttpResponse:
    session = get_setup_for_user(request.user, setup_id)
    profile = PaymentsProfile.objects.filter(owner=request.user).first()
    methods = list(profile.payment_methods.usable().order_by("-created_at")) if profile else []
    form = CardForm(request.POST if request.method == "POST" and "number" in request.POST else None)
    error = None
    if request.method == "POST" and "use_method" in request.POST:
        chosen = next((m for m in methods if str(m.pk) == request.POST["use_method"]), None)
        if chosen is None:
            raise Http404
        session.choose_payment_method(chosen)
        return _redirect(request, _step_url(session, "details"))
    if form.is_bound and profile is None:
        error = _("Add your contact information first: a payment method belongs to a payments profile.")
    elif form.is_bound and form.is_valid():
        try:
            method = form.add_to(profile, by=request.user)
        except PaymentError as declined:
            error = declined.reason
        else:
            session.choose_payment_method(method)
            return _redirect(request, _step_url(session, "details"))
    context = {"session": session, "form": form, "methods": methods, "error": error}
    status = 422 if (form.is_bound and form.errors) or error else 200
    return render_dialog(request, "billing/setup/payment_method.html", context, status=status)


@login_required
@require_POST
def finish(request: HttpRequest, setup_id) -> HttpResponse:
    session = get_setup_for_user(request.user, setup_id)
    return _finish(request, session)


def _finish(request: HttpRequest, session) -> HttpResponse:
    try:
        finish_setup(session)
    except BillingError as error:
        step = current_step(session)
        context = _context(session, step, finish_error=str(error))
        if step == "details":
            profile = PaymentsProfile.objects.filter(owner=request.user).first()
            context.update(profile=profile, method=session.payment_method)
            return render(request, "billing/setup/details.html", context, status=422)
        return redirect(_step_url(session, step))
    return redirect(_step_url(session, "status"))


@login_required
def status(request: HttpRequest, setup_id) -> HttpResponse:
    session = get_setup_for_user(request.user, setup_id)
    if not session.is_finished:
        return redirect(_step_url(session, current_step(session)))
    account = session.result
    project = session.project
    context = {
        "session": session,
        "account": account,
        "project": project,
        "decision": required_prepayment(account) if account.prepayment_outstanding else None,
        "balances": ledger.balances(account),
        "welcome": getattr(request.user, "welcome_credit", None) if session.welcome_credit_granted else None,
        "read_only": not project.is_writable_by(request.user),
    }
    return render_page(request, "billing/setup/status.html", context)
