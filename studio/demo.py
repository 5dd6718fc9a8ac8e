"""Demo users, projects and API keys (the studio part of `manage.py seed_demo`). Idempotent.

Demo only: the passwords below are public. Never run this against a production database.
"""

from django.utils import timezone

from studio.models import ApiKey, BillingState, Membership, Project, Role, Tier, User

DEMO_PASSWORD = "studio-demo"
DEVELOPER = "dev@example.com"
STAFF = "staff@example.com"
COLLEAGUE = "colleague@example.com"

# (project id, name, role of the developer, imported?, tier, billing state, upgrade available, keys)
PROJECTS = [
    (
        "gen-lang-client-0100000001",
        "Default Gemini Project",
        Role.OWNER,
        True,
        Tier.FREE,
        BillingState.NONE,
        False,
        ["Default API key"],
    ),
    (
        "gen-lang-client-0100000002",
        "Checkout assistant",
        Role.OWNER,
        True,
        Tier.TIER_1,
        BillingState.ACTIVE,
        False,
        ["Production", "Staging"],
    ),
    (
        "gen-lang-client-0100000003",
        "Support bot",
        Role.OWNER,
        True,
        Tier.FREE,
        BillingState.PREPAYMENT_DUE,
        False,
        ["Support bot key"],
    ),
    (
        "gen-lang-client-0100000004",
        "Search ranking",
        Role.EDITOR,
        True,
        Tier.TIER_2,
        BillingState.ACTIVE,
        True,
        ["Ranking service"],
    ),
    (
        "gen-lang-client-0100000005",
        "Research lab",
        Role.OWNER,
        True,
        Tier.TIER_3,
        BillingState.ACTIVE,
        False,
        ["Batch jobs"],
    ),
    (
        "gen-lang-client-0100000006",
        "Upgrade candidate",
        Role.OWNER,
        True,
        Tier.TIER_1,
        BillingState.ACTIVE,
        True,
        ["Mobile app"],
    ),
    (
        "gen-lang-client-0100000007",
        "Shared analytics",
        Role.VIEWER,
        True,
        Tier.FREE,
        BillingState.NONE,
        False,
        ["Dashboards"],
    ),
    # Billed to an account with a small promotional credit: `simulate_traffic` uses it up and the account starts to owe.
    (
        "gen-lang-client-0100000008",
        "Weekend prototype",
        Role.OWNER,
        True,
        Tier.TIER_1,
        BillingState.ACTIVE,
        False,
        ["Prototype key"],
    ),
    ("gen-lang-client-0100000011", "Marketing site", Role.OWNER, False, Tier.FREE, BillingState.NONE, False, []),
    ("gen-lang-client-0100000012", "Data pipeline", Role.OWNER, False, Tier.FREE, BillingState.NONE, False, []),
    ("gen-lang-client-0100000013", "Legacy chatbot", Role.EDITOR, False, Tier.FREE, BillingState.NONE, False, []),
]


def seed_studio():
    """Returns the demo users by e-mail."""
    developer = _user(DEVELOPER, "Dev Example")
    colleague = _user(COLLEAGUE, "Colleague Example")
    staff = _user(STAFF, "Staff Example", is_staff=True, is_superuser=True)
    for number, (project_id, name, role, imported, tier, billing, upgrade, keys) in enumerate(PROJECTS, start=1):
        project, _ = Project.objects.update_or_create(
            project_id=project_id,
            defaults={
                "name": name,
                "number": f"{900000000000 + number}",
                "tier": tier,
                "billing_state": billing,
                "upgrade_available": upgrade,
            },
        )
        Membership.objects.update_or_create(
            project=project,
            user=developer,
            defaults={"role": role, "imported_at": timezone.now() if imported else None},
        )
        if role != Role.OWNER:
            Membership.objects.get_or_create(
                project=project, user=colleague, defaults={"role": Role.OWNER, "imported_at": timezone.now()}
            )
        for key_name in keys:
            if not ApiKey.objects.filter(project=project, name=key_name).exists():
                ApiKey.issue(project=project, name=key_name, created_by=developer if role != Role.VIEWER else colleague)
    return {DEVELOPER: developer, COLLEAGUE: colleague, STAFF: staff}


def _user(email, full_name, **flags):
    user, created = User.objects.get_or_create(email=email, defaults={"full_name": full_name, **flags})
    if created:
        user.set_password(DEMO_PASSWORD)
        user.terms_accepted_at = user.defaults_provisioned_at = timezone.now()
        user.save()
    return user
