"""A small team with a project in every quota state and a person in every role, for the walks
over every page (accessibility, HTML validity, the link crawl)."""

from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from billing import ledger
from billing.models import CreditKind
from studio.models import Role, Tier
from tests.factories import add_member, make_account, make_key, make_project, make_user


def the_world(language: str) -> dict:
    """One team's projects in every quota state, and a person for each role."""
    owner = make_user("owner@a11y.example", language=language, full_name="Olivia Owner")
    paid = make_project(owner, name="Paid app", tier=Tier.TIER_1)
    free = make_project(owner, name="Free app")
    prepaid = make_project(owner, name="Prepaid app")
    for project in (paid, free, prepaid):
        make_key(project, name=f"{project.name} key")
    main = make_account(owner, name="Main billing", projects=[paid])
    # Money history, to be shown in the reader's language.
    ledger.grant_credit(
        main,
        kind=CreditKind.WELCOME,
        amount=Decimal("300"),
        welcome_for=owner,
        expires_at=timezone.now() + timedelta(days=90),
    )
    ledger.record_usage_charge(main, amount=Decimal("1.25"), idempotency_key="world-usage")
    make_account(owner, country="IN", name="India billing", prepayment_due=True, projects=[prepaid])
    people = {"owner": owner}
    for role in (Role.EDITOR, Role.VIEWER):
        person = make_user(f"{role}@a11y.example", language=language)
        for project in (paid, free):
            add_member(project, person, role)
        people[role] = person
    _usage(paid)
    staff = make_user("staff@a11y.example", language=language, is_staff=True, is_superuser=True)
    make_key(make_project(staff, name="Staff app"), name="Staff key")
    people["staff"] = staff
    return {"people": people, "paid": paid, "free": free}


def _usage(project):
    """A week of requests of every outcome and a few denials the day before, for the usage
    dashboard's charts and tables. Only the latest requests come after the project's billing began,
    so only they cost."""
    from usage.admission import quota_ids
    from usage.denials import record_past
    from usage.ingest import ingest

    key, now = project.api_keys.get(), timezone.now()
    ingest(
        [
            {
                "event_id": f"world-{n}",
                "key_id": str(key.pk),
                "model": "gemini-2.5-pro" if n % 3 == 0 else "gemini-2.5-flash",
                "kind": "generate",
                "status_code": (200, 200, 200, 429, 500)[n % 5],
                "input_tokens": 1000 + 37 * n,
                "output_tokens": 200 + n,
                "cached_tokens": 100 * (n % 4),
                "occurred_at": (now - timedelta(hours=7 * max(n - 2, 0))).isoformat(),
            }
            for n in range(26)
        ],
        now=now,
    )
    record_past(project, "gemini-2.5-flash", quota_ids(project.tier)["rpm"], now - timedelta(hours=30), 4)
