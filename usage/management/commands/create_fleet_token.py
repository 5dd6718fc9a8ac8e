from django.core.management.base import BaseCommand

from studio.models import ActorKind, AuditEvent
from usage.models import FleetToken


class Command(BaseCommand):
    help = "Create a serving-fleet token. The secret is printed once, alone on the last line."

    def add_arguments(self, parser):
        parser.add_argument("name")

    def handle(self, *args, name, **options):
        token, raw = FleetToken.issue(name=name)
        AuditEvent.record(actor=None, actor_kind=ActorKind.SYSTEM, action="fleet_token.create", obj=token)
        self.stdout.write(f"Fleet token {token.name!r} created. Store it now: it is not shown again.")
        self.stdout.write(raw)
