"""Support's decisions (SPEC §10): the quota increase queue, one decision per request (usage.quotas), and tier
overrides (billing.tiers.override_tier). Each decision carries a reason."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods
from django_tables2 import RequestConfig

from billing.services import BillingError
from billing.tiers import override_tier
from staff import quota_forms as forms
from staff import roles
from staff.access import staff_view
from staff.history import for_object
from staff.quota_tables import QuotaRequestTable
from studio.models import Project
from studio.views.rendering import finish, render_dialog, render_page
from usage import quotas
from usage.catalog import get_catalog
from usage.models import QuotaIncreaseRequest, QuotaRequestStatus

PER_PAGE = 50
QUEUE_CHANGED = "queue-changed"  # the queue's table reloads itself after a decision made in the modal


def _quota_request(pk: int) -> QuotaIncreaseRequest:
    related = ("project", "model", "requested_by", "decided_by")
    return get_object_or_404(QuotaIncreaseRequest.objects.select_related(*related), pk=pk)


def _project(project_id: str) -> Project:
    return get_object_or_404(Project, project_id=project_id)


@staff_view(roles.DECIDE_QUOTA)
@require_GET
def quota_requests(request: HttpRequest) -> HttpResponse:
    """The queue: pending requests oldest first (filters: status, model, limit)."""
    models = sorted(get_catalog().models.values(), key=lambda m: m.model_id)
    form = forms.QuotaRequestFilter(request.GET, models=models)
    rows = QuotaIncreaseRequest.objects.select_related("project", "model", "requested_by")
    table = QuotaRequestTable(form.apply(rows).order_by("requested_at", "pk"), request=request)
    RequestConfig(request, paginate={"per_page": PER_PAGE}).configure(table)
    return render_page(request, "staff/quota_requests.html", {"form": form, "table": table}, partial="table")


@staff_view(roles.DECIDE_QUOTA)
@require_http_methods(["GET", "POST"])
def quota_request_decide(request: HttpRequest, pk: int) -> HttpResponse:
    """Approve a figure (the one asked for, or lower) or decline, with a reason the requester reads."""
    ask = _quota_request(pk)
    posted = request.POST if request.method == "POST" else None
    form = forms.QuotaDecisionForm(posted, initial={"value": ask.requested_value})
    if posted is not None and form.is_valid():
        data = form.cleaned_data
        try:
            if data["decision"] == forms.APPROVE:
                decided = quotas.approve(ask, value=data["value"], reason=data["reason"], by=request.user)
            else:
                decided = quotas.decline(ask, reason=data["reason"], by=request.user)
        except quotas.QuotaError as refused:
            form.add_error(refused.field if refused.field in form.fields else None, refused.message)
        else:
            message = _decision_message(ask) if decided else _("This quota request had already been decided.")
            return finish(request, message, redirect_to=reverse("staff:quota-requests"), events=(QUEUE_CHANGED,))
    context = {
        "ask": ask,
        "form": form,
        "in_force": quotas.limit_in_force(ask.project, ask.model_id, ask.metric),
        "history": for_object(ask),
    }
    return render_dialog(request, "staff/quota_request_decide.html", context, status=422 if form.errors else 200)


def _decision_message(ask: QuotaIncreaseRequest) -> str:
    if ask.status == QuotaRequestStatus.APPROVED:
        return _("Approved %(value)s: it applies to the project's next request.") % {"value": f"{ask.approved_value:,}"}
    return _("Quota request declined.")


@staff_view(roles.OVERRIDE_TIER)
@require_http_methods(["GET", "POST"])
def tier_override(request: HttpRequest, project_id: str) -> HttpResponse:
    """Put a project on a tier, with a reason, and say whether automatic evaluation may change it later."""
    project = _project(project_id)
    posted = request.POST if request.method == "POST" else None
    initial = {"tier": project.tier, "keep": forms.KEEP if project.tier_locked else forms.EVALUATE}
    form = forms.TierOverrideForm(posted, initial=initial)
    if posted is not None and form.is_valid():
        data = form.cleaned_data
        try:
            override_tier(
                project, data["tier"], by=request.user, reason=data["reason"], lock=data["keep"] == forms.KEEP
            )
        except BillingError as refused:
            form.add_error(None, str(refused))
        else:
            message = _("Tier set to %(tier)s.") % {"tier": project.get_tier_display()}
            return finish(request, message, redirect_to=reverse("staff:project", args=[project.project_id]))
    context = {"project": project, "form": form, "history": for_object(project, limit=20)}
    return render_dialog(request, "staff/tier_override.html", context, status=422 if form.errors else 200)


urlpatterns = [
    path("quota-requests/", quota_requests, name="quota-requests"),
    path("quota-requests/<int:pk>/", quota_request_decide, name="quota-request-decide"),
    path("projects/<str:project_id>/tier/", tier_override, name="tier-override"),
]
