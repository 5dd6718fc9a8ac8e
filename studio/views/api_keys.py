from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods
from django_htmx.http import trigger_client_event
from django_tables2 import RequestConfig

from studio.forms import ApiKeyCreateForm, RenameApiKeyForm
from studio.models import ApiKey, Project, Tier
from studio.services import create_project
from studio.tables import ApiKeyTable
from studio.views.access import get_key_for_user
from studio.views.rendering import KEYS_CHANGED, finish, render_dialog, render_page

KEYS_PER_PAGE = 100


@login_required
def api_key_list(request: HttpRequest) -> HttpResponse:
    table = ApiKeyTable(ApiKey.objects.visible_to(request.user).order_by("-created_at", "-pk"), request=request)
    RequestConfig(request, paginate={"per_page": KEYS_PER_PAGE}).configure(table)
    context = {
        "table": table,
        "can_create": Project.objects.writable_by(request.user).exists(),
        # R7: studio prompts are handled under the paid-services terms while any project is paid.
        "paid_terms": Project.objects.imported_by(request.user).exclude(tier=Tier.FREE).exists(),
    }
    return render_page(request, "studio/api_keys.html", context, partial="keys-table")


def _writable_projects(user):
    return list(Project.objects.writable_by(user).order_by("name", "project_id"))


@login_required
@require_http_methods(["GET", "POST"])
def api_key_create(request: HttpRequest) -> HttpResponse:
    form = ApiKeyCreateForm(
        request.POST if request.method == "POST" else None, projects=_writable_projects(request.user)
    )
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            project = form.cleaned_data["project"] or create_project(
                request.user, name=form.cleaned_data["new_project_name"].strip()
            )
            key, raw = ApiKey.issue(project=project, name=form.cleaned_data["name"], created_by=request.user)
        response = render_dialog(request, "studio/api_key_created.html", {"key": key, "raw_key": raw}, secret=True)
        return trigger_client_event(response, KEYS_CHANGED)
    status = 422 if form.errors else 200
    return render_dialog(request, "studio/api_key_create.html", {"form": form}, status=status)


@login_required
def api_key_detail(request: HttpRequest, key_id: int) -> HttpResponse:
    key = get_key_for_user(request.user, key_id)
    return render_page(request, "studio/api_key_detail.html", {"key": key, "can_write": not key.read_only})


@login_required
@require_http_methods(["GET", "POST"])
def api_key_rename(request: HttpRequest, key_id: int) -> HttpResponse:
    key = get_key_for_user(request.user, key_id, write=True)
    form = RenameApiKeyForm(request.POST if request.method == "POST" else None, initial={"name": key.name})
    if request.method == "POST" and form.is_valid():
        key.rename(form.cleaned_data["name"], by=request.user)
        message = _("Key renamed to “%(name)s”.") % {"name": key.name}
        return finish(request, message, redirect_to="api-keys", events=(KEYS_CHANGED,))
    status = 422 if form.errors else 200
    return render_dialog(request, "studio/api_key_rename.html", {"key": key, "form": form}, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def api_key_revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    key = get_key_for_user(request.user, key_id, write=True)
    if request.method == "POST":
        key.revoke(by=request.user)
        message = _("Key “%(name)s” revoked. It no longer works.") % {"name": key.name}
        return finish(request, message, redirect_to="api-keys", events=(KEYS_CHANGED,))
    return render_dialog(request, "studio/api_key_revoke.html", {"key": key})
