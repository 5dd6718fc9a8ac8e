"""Work across several studio models: sign-up defaults, new projects, imports."""

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from studio.models import ApiKey, AuditEvent, Membership, Project, Role, User

DEFAULT_PROJECT_NAME = gettext_lazy("Default Gemini Project")
DEFAULT_KEY_NAME = gettext_lazy("Default API key")


class StudioError(Exception):
    """A request that cannot be carried out; the message is translated and safe to show."""


def create_project(owner: User, *, name: str) -> Project:
    """Create a Cloud project owned by `owner` and imported into their studio."""
    project = Project.objects.create(name=name)
    Membership.objects.create(project=project, user=owner, role=Role.OWNER, imported_at=timezone.now())
    AuditEvent.record(actor=owner, action="project.create", obj=project, after={"name": name})
    return project


def provision_defaults(user: User):
    """Give a new user a default project with one API key, exactly once.

    Effects: locks the user row; if defaults were never made, creates the project, its owner
    membership and a key, and stamps `defaults_provisioned_at`. Returns (key, raw secret) when
    it made them, None when they already existed (a retried sign-up, a concurrent request).
    """
    with transaction.atomic():
        locked = User.objects.select_for_update().get(pk=user.pk)
        if locked.defaults_provisioned_at is not None:
            return None
        project = create_project(locked, name=str(DEFAULT_PROJECT_NAME))
        key, raw = ApiKey.issue(project=project, name=str(DEFAULT_KEY_NAME), created_by=locked)
        locked.defaults_provisioned_at = user.defaults_provisioned_at = timezone.now()
        locked.save(update_fields=["defaults_provisioned_at"])
        return key, raw


def import_projects(user: User, *, project_ids: list[str]) -> list[Project]:
    """Import the user's not-yet-imported Cloud projects named by `project_ids`.

    All or nothing: an id that is not one of the user's importable projects raises StudioError
    and imports none.
    """
    wanted = set(project_ids)
    if not wanted:
        raise StudioError(_("Select at least one project to import."))
    with transaction.atomic():
        memberships = list(
            Membership.objects.select_for_update()
            .select_related("project")
            .filter(user=user, imported_at__isnull=True, project__project_id__in=wanted)
        )
        if len(memberships) != len(wanted):
            raise StudioError(_("Some of the selected projects can no longer be imported. Refresh and try again."))
        now = timezone.now()
        for membership in memberships:
            membership.imported_at = now
            membership.save(update_fields=["imported_at"])
            AuditEvent.record(actor=user, action="project.import", obj=membership.project)
    return [m.project for m in memberships]
