from django.core.management.base import BaseCommand, CommandError

from studio.models import WRITE_ROLES, ApiKey, Project, User


class Command(BaseCommand):
    help = "Create an API key for a user (in their default project unless --project). The key is printed last."

    def add_arguments(self, parser):
        parser.add_argument("email")
        parser.add_argument("--project", help="project ID, e.g. gen-lang-client-0123456789")
        parser.add_argument("--name", default="API key")

    def handle(self, *args, email, project, name, **options):
        user = User.objects.filter(email=email.strip().lower()).first()
        if user is None:
            raise CommandError(f"No user with the email {email}.")
        projects = Project.objects.imported_by(user, roles=WRITE_ROLES)
        chosen = (
            projects.filter(project_id=project).first() if project else projects.order_by("created_at", "pk").first()
        )
        if chosen is None:
            raise CommandError("No such project that this user may create keys in.")
        key, raw = ApiKey.issue(project=chosen, name=name, created_by=user)
        self.stdout.write(f"API key {key.name!r} created in {chosen.project_id}. Store it now: it is not shown again.")
        self.stdout.write(raw)
