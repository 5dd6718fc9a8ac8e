"""Demo fleet data (the usage part of `manage.py seed_demo`). Idempotent.

Demo only: the fleet token below is public, like the demo passwords. Never seed production.
"""

from studio import keyformat
from usage.models import FleetToken

DEMO_FLEET_TOKEN = "flt_demo-fleet-token-for-make-run-only"


def seed_usage():
    FleetToken.objects.get_or_create(
        secret_hash=keyformat.hash_key(DEMO_FLEET_TOKEN),
        defaults={"name": "Demo fleet (make run)", "prefix": DEMO_FLEET_TOKEN[:12]},
    )
    return DEMO_FLEET_TOKEN
