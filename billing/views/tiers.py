"""Upgrade (R17) and tier progress (X1)."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from billing import tiers
from billing.models import TierChange
from studio.models import Project
from studio.views.rendering import BILLING_CHANGED, KEYS_CHANGED, finish, render_dialog, render_page


@login_required
@require_http_methods(["GET", "POST"])
def upgrade(request: HttpRequest, project_id: str) -> HttpResponse:
    project = get_object_or_404(Project.objects.writable_by(request.user), project_id=project_id)
    if request.method == "POST" and tiers.upgrade(project, by=request.user):
        message = _("%(project)s is now on %(tier)s.") % {"project": project.name, "tier": project.get_tier_display()}
        return finish(request, message, redirect_to="api-keys", events=(KEYS_CHANGED, BILLING_CHANGED))
    context = {"project": project, "progress": tiers.progress(project), "tried": request.method == "POST"}
    return render_dialog(request, "billing/upgrade.html", context, status=422 if request.method == "POST" else 200)


@login_required
def tier_progress(request: HttpRequest, project_id: str) -> HttpResponse:
    """The progress panel; the key detail page loads it (htmx) or links to it (no JS)."""
    project = get_object_or_404(Project.objects.imported_by(request.user), project_id=project_id)
    history = TierChange.objects.filter(project=project).select_related("actor")[:10]
    context = {
        "project": project,
        "progress": tiers.progress(project),
        "history": history,
        "read_only": not project.is_writable_by(request.user),
    }
    return render_page(request, "billing/tier_progress.html", context, partial="panel")
