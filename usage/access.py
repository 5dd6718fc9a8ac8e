"""One access helper per dashboard resource: the object if the user may see it, else 404."""

from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404

from studio.models import Project


def get_projects_for_user(user, project_id: str | None) -> tuple[list[Project], Project | None]:
    """The projects the user imported (any role: Owners, Editors and Viewers see usage), for the
    picker, and the one `project_id` names, or the first when none is named (None: no projects).

    One query. A project that is not among them (someone else's, or one the user has not
    imported) is 404, whether it exists or not.
    """
    projects = list(Project.objects.imported_by(user).order_by("name", "project_id"))
    if not project_id:
        return projects, next(iter(projects), None)
    for project in projects:
        if project.project_id == project_id:
            return projects, project
    raise Http404


def get_project_for_user(user, project_id: str, *, write: bool = False) -> Project:
    """The project `project_id` if the user imported it (any role), else 404. `write`: only its Owners and Editors
    may go on; a Viewer gets 403 (they may see that the project exists)."""
    project = get_object_or_404(Project.objects.imported_by(user), project_id=project_id)
    if write and not project.is_writable_by(user):
        raise PermissionDenied
    return project
