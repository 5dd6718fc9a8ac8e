from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.utils.translation import ngettext
from django.views.decorators.http import require_http_methods

from studio.forms import ImportProjectsForm
from studio.models import Project
from studio.services import StudioError, import_projects
from studio.views.rendering import KEYS_CHANGED, finish, render_dialog, render_page


@login_required
@require_http_methods(["GET", "POST"])
def project_import(request: HttpRequest) -> HttpResponse:
    importable = Project.objects.not_imported_by(request.user).order_by("name", "project_id")
    form = ImportProjectsForm(request.POST if request.method == "POST" else None, projects=list(importable))
    if request.method == "POST" and form.is_valid():
        try:
            imported = import_projects(request.user, project_ids=form.cleaned_data["projects"])
        except StudioError as error:
            form.add_error("projects", str(error))
        else:
            count = len(imported)
            message = ngettext("%(count)d project imported.", "%(count)d projects imported.", count) % {"count": count}
            return finish(request, message, redirect_to="api-keys", events=(KEYS_CHANGED,))
    query = request.GET.get("q", "").strip()[:100]
    if query:
        importable = importable.filter(Q(name__icontains=query) | Q(project_id__icontains=query))
    context = {"form": form, "query": query, "results": importable}
    status = 422 if form.errors else 200
    if request.htmx and request.htmx.target == "import-results":  # the search box: only the result list
        return render_page(request, "studio/project_import.html", context, partial="results", status=status)
    return render_dialog(request, "studio/project_import.html", context, status=status)
