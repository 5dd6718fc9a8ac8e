"""The Usage & Limits dashboard (SPEC §3.7): the Usage tab, its CSV export, and the Limits tab.

Every view of the dashboard is a URL: the project (`?project=<project id>`), the range and the
filters are GET parameters. An htmx request (a filter change) gets the page's `body` partial.
"""

from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from studio.models import ApiKey, Tier
from studio.views.rendering import LIMITS_CHANGED, finish, render_dialog, render_page
from studio.zones import reader_zone, zone_named
from usage import quotas, spendcap
from usage.access import get_project_for_user, get_projects_for_user
from usage.dashboard import limit_rows, other_denials, report_charts, usage_report, write_csv
from usage.forms import QuotaRequestForm, RangeForm, SpendCapForm, UsageFilterForm
from usage.models import CatalogModel, QuotaIncreaseRequest, QuotaRequestStatus
from usage.queries import limits_for_project


def dashboard_zone(request: HttpRequest) -> tuple[ZoneInfo, str]:
    """The zone the dashboard's times are in, and the `tz` parameter its links keep ("" if none):
    `?tz=` if it names a zone, else the reader's zone (studio.zones.reader_zone)."""
    if zone := zone_named(request.GET.get("tz")):
        return zone, zone.key
    return reader_zone(request), ""


def _url(name: str, query: dict) -> str:
    return f"{reverse(name)}?{urlencode(query)}"


def _read_usage(request: HttpRequest, project, zone: ZoneInfo, now):
    """The Usage tab's filters, and what they select: (form, report, key), the report None while the
    form is invalid. Four queries whatever the range: keys, catalog, and the two reads."""
    keys = list(ApiKey.objects.filter(project=project).order_by("name", "pk"))
    catalog = list(CatalogModel.objects.order_by("display_name", "model_id"))
    form = UsageFilterForm(request.GET, today=now.astimezone(zone).date(), models=catalog, keys=keys)
    if not form.is_valid():
        return form, None, None
    key = next((k for k in keys if k.pk == form.cleaned_data["key"]), None)
    window = form.window(now, zone)
    report = usage_report(project, window, catalog=catalog, keys=keys, model=form.cleaned_data["model"], key=key)
    return form, report, key


def _base_context(projects, project, zone: ZoneInfo, tz_param: str, now) -> dict:
    return {
        "projects": projects,
        "project": project,
        "zone": zone.key,
        "zone_offset": _offset(now.astimezone(zone).strftime("%z")),
        "tz_param": tz_param,
    }


def _offset(z: str) -> str:
    """The offset `strftime("%z")` gives ("+0530") as the page shows it ("UTC+05:30")."""
    return f"UTC{z[:3]}:{z[3:]}"


@login_required
def usage_page(request: HttpRequest) -> HttpResponse:
    """R20, X5: the project's usage over the range, as totals, charts and tables."""
    projects, project = get_projects_for_user(request.user, request.GET.get("project"))
    zone, tz_param = dashboard_zone(request)
    now = timezone.now()
    context = _base_context(projects, project, zone, tz_param, now)
    if project is None:
        return render_page(request, "usage/usage.html", context)
    form, report, key = _read_usage(request, project, zone, now)
    context["form"] = form
    if report is None:
        context["links"] = _links(project, tz_param, {}, {})
        return render_page(request, "usage/usage.html", context, status=422)
    context.update(
        report=report,
        charts=report_charts(report),
        key_filter=key,
        links=_links(project, tz_param, form.range_query(), form.filter_query()),
    )
    with timezone.override(zone):
        return render_page(request, "usage/usage.html", context)


def _links(project, tz_param: str, range_query: dict, filter_query: dict) -> dict:
    """The tabs and the export, keeping the project, the zone asked for, the range and the filters."""
    base = {"project": project.project_id, **({"tz": tz_param} if tz_param else {})}
    return {
        "usage": _url("usage:dashboard", {**base, **range_query, **filter_query}),
        "limits": _url("usage:limits", {**base, **range_query}),
        "export": _url("usage:export", {**base, **range_query, **filter_query}),
        "keep": {**({"tz": tz_param} if tz_param else {}), **range_query},  # what the project picker keeps
    }


@login_required
def usage_csv(request: HttpRequest) -> HttpResponse:
    """X5: the Usage tab as CSV, with the same parameters and the same numbers."""
    _projects, project = get_projects_for_user(request.user, request.GET.get("project"))
    if project is None:
        return usage_page(request)
    zone, _tz_param = dashboard_zone(request)
    now = timezone.now()
    _form, report, _key = _read_usage(request, project, zone, now)
    if report is None:
        return usage_page(request)  # the page, with the form's errors
    first, last = report.buckets[0].start.date(), report.buckets[-1].start.date()  # days in the reader's zone
    filename = f"usage-{project.project_id}-{first:%Y%m%d}-{last:%Y%m%d}.csv"
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    write_csv(report, response, zone=zone)
    return response


@login_required
def limits_page(request: HttpRequest) -> HttpResponse:
    """R21, X6: each model's limits at the project's tier, peak and live usage, denials by quota id."""
    projects, project = get_projects_for_user(request.user, request.GET.get("project"))
    zone, tz_param = dashboard_zone(request)
    now = timezone.now()
    context = _base_context(projects, project, zone, tz_param, now)
    if project is None:
        return render_page(request, "usage/limits.html", context)
    form = RangeForm(request.GET, today=now.astimezone(zone).date())
    context["form"] = form
    if not form.is_valid():
        context["links"] = _links(project, tz_param, {}, {})
        return render_page(request, "usage/limits.html", context, status=422)
    limits = limits_for_project(project, form.window(now, zone), now=now)
    context.update(
        models=[(m, limit_rows(m, now=now, zone=zone), other_denials(m)) for m in limits],
        cap=spendcap.cap_status(project, now=now),
        cap_denied=sum(m.denials.get(spendcap.QUOTA_ID, 0) for m in limits),
        cap_quota_id=spendcap.QUOTA_ID,
        tier=Tier(project.effective_tier).label,
        read_only=not project.is_writable_by(request.user),  # the Quota tier cell offers no links then
        next_tier=Tier(limits[0].next_tier).label if limits and limits[0].next_tier else None,
        links=_links(project, tz_param, form.range_query(), {}),
        quota_requests=_quota_requests(project),
    )
    with timezone.override(zone):
        return render_page(request, "usage/limits.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def spend_cap(request: HttpRequest, project_id: str) -> HttpResponse:
    """X4: set, change or remove the project's monthly spend cap (its Owners and Editors; Viewers 403)."""
    project = get_project_for_user(request.user, project_id, write=True)
    limits_url = _url("usage:limits", {"project": project.project_id})
    posted = request.method == "POST"
    if posted and "remove" in request.POST:
        project.set_spend_cap(None, by=request.user)
        return finish(request, _("Spend cap removed."), redirect_to=limits_url, events=(LIMITS_CHANGED,))
    form = SpendCapForm(request.POST if posted else None, initial={"amount": project.monthly_spend_cap})
    if posted and form.is_valid():
        project.set_spend_cap(form.cleaned_data["amount"], by=request.user)
        return finish(request, _("Spend cap saved."), redirect_to=limits_url, events=(LIMITS_CHANGED,))
    context = {"project": project, "form": form, "limits_url": limits_url}
    return render_dialog(request, "usage/spend_cap.html", context, status=422 if form.errors else 200)


RECENT_QUOTA_REQUESTS = 10


def _quota_requests(project) -> list[QuotaIncreaseRequest]:
    """The Limits tab's quota requests: every pending one, then the latest decisions (one query)."""
    requests = list(QuotaIncreaseRequest.objects.filter(project=project).order_by("-requested_at", "-pk")[:50])
    pending = [r for r in requests if r.status == QuotaRequestStatus.PENDING]
    decided = [r for r in requests if r.status != QuotaRequestStatus.PENDING]
    return pending + decided[:RECENT_QUOTA_REQUESTS]


@login_required
@require_http_methods(["GET", "POST"])
def quota_request(request: HttpRequest, project_id: str) -> HttpResponse:
    """SPEC §10: ask Support for a higher RPM, TPM or RPD on one model (Owners and Editors; Viewers 403)."""
    project = get_project_for_user(request.user, project_id, write=True)
    limits_url = _url("usage:limits", {"project": project.project_id})
    models = quotas.usable_models(project)
    posted = request.method == "POST"
    initial = {"model": request.GET.get("model")}
    form = QuotaRequestForm(request.POST if posted else None, models=models, initial=initial)
    if posted and form.is_valid():
        try:
            data = form.cleaned_data
            quotas.request_increase(
                project,
                model_id=data["model"],
                metric=data["metric"],
                value=data["value"],
                reason=data["reason"],
                by=request.user,
            )
        except quotas.QuotaError as error:
            form.add_error(error.field or None, error.message)
        else:
            message = _("Request sent. Support will decide and e-mail you; its state shows on this page.")
            return finish(request, message, redirect_to=limits_url, events=(LIMITS_CHANGED,))
    figures = quotas.figures_in_force(project, models)
    context = {"project": project, "form": form, "limits_url": limits_url, "figures": figures}
    return render_dialog(request, "usage/quota_request.html", context, status=422 if form.errors else 200)
