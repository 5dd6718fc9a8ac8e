"""Demo billing data (the billing part of `manage.py seed_demo`). Idempotent.

The developer is an existing billing user with two accounts (one with a prepayment due); the
colleague pays for the project the developer edits. Project tiers in studio/demo.py match them.
"""

from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from billing import ledger, tiers
from billing.models import (
    BillingAccount,
    BillingAdministrator,
    Country,
    CreditKind,
    PaymentMethod,
    PaymentsProfile,
    PrepaymentStatus,
    ProjectBilling,
)
from studio.demo import COLLEAGUE, DEVELOPER
from studio.models import Project

# (administrator, account name, country, prepayment due, linked project ids)
ACCOUNTS = [
    (
        DEVELOPER,
        "Main billing account",
        "US",
        False,
        ["gen-lang-client-0100000002", "gen-lang-client-0100000005", "gen-lang-client-0100000006"],
    ),
    (DEVELOPER, "India team billing", "IN", True, ["gen-lang-client-0100000003"]),
    (COLLEAGUE, "Colleague's billing account", "GB", False, ["gen-lang-client-0100000004"]),
    (DEVELOPER, "Prototype billing", "US", False, ["gen-lang-client-0100000008"]),
]
# The prototype's account has only this promotional credit: a minute of `simulate_traffic` uses it up
# (credits going down on the billing page), and then the account owes for the monthly statement.
PROTOTYPE_CREDIT = Decimal("0.10")
LINKED_DAYS_AGO = 70  # the demo's projects have been billed since then (their billing history)
# History of the developer's main account, (days ago, what, USD): the welcome credit paid the first
# 300, a statement was paid 38 days ago (the first payment), so the account qualifies for Tier 2.
WELCOME_GRANTED_DAYS_AGO = 70
DEMO_CHARGES = [(60, Decimal("180.00")), (45, Decimal("140.00")), (10, Decimal("12.40"))]
DEMO_PAYMENTS = [(38, Decimal("20.00"))]


def seed_billing(users):
    for email, name, country, prepayment_due, project_ids in ACCOUNTS:
        user = users[email]
        profile = _profile(user, country)
        account = BillingAccount.objects.filter(administrators__user=user, display_name=name).first()
        if account is None:
            first = not BillingAccount.objects.administered_by(user).exists()
            account = BillingAccount.objects.create(
                display_name=name,
                country_id=country,
                payments_profile=profile,
                primary_payment_method=profile.payment_methods.first(),
                created_by=user,
                prepayment_status=PrepaymentStatus.REQUIRED if prepayment_due else PrepaymentStatus.NOT_REQUIRED,
                prepayment_amount=Decimal("10.00") if prepayment_due else None,
            )
            BillingAdministrator.objects.create(account=account, user=user)
            if first:
                granted = timezone.now() - timedelta(days=WELCOME_GRANTED_DAYS_AGO)
                ledger.grant_credit(
                    account,
                    kind=CreditKind.WELCOME,
                    amount=settings.WELCOME_CREDIT_AMOUNT,
                    expires_at=granted + timedelta(days=settings.WELCOME_CREDIT_DAYS),
                    source="Welcome credit for your first billing account",
                    welcome_for=user,
                    at=granted,
                )
        if name == "Prototype billing" and not account.credits.exists():
            ledger.grant_credit(
                account,
                kind=CreditKind.PROMOTIONAL,
                amount=PROTOTYPE_CREDIT,
                expires_at=timezone.now() + timedelta(days=28),
                source="Launch promotion",
            )
        linked_at = timezone.now() - timedelta(days=LINKED_DAYS_AGO)
        for project_id in project_ids:
            project = Project.objects.get(project_id=project_id)
            ProjectBilling.objects.get_or_create(
                project=project, defaults={"account": account, "linked_by": user, "linked_at": linked_at}
            )
            tiers.note_billing_period(project, at=linked_at)  # billed since the link (once: it adds nothing after)
    main = BillingAccount.objects.get(display_name="Main billing account", administrators__user=users[DEVELOPER])
    now = timezone.now()
    for days, amount in DEMO_CHARGES:
        ledger.record_usage_charge(
            main, amount=amount, idempotency_key=f"demo:charge:{days}", at=now - timedelta(days=days)
        )
    for days, amount in DEMO_PAYMENTS:
        ledger.record_payment(
            main, amount=amount, idempotency_key=f"demo:payment:{days}", at=now - timedelta(days=days)
        )
    for account in BillingAccount.objects.all():
        tiers.refresh_upgrade_flags(account)


def _profile(user, country_code):
    profile, _ = PaymentsProfile.objects.get_or_create(
        owner=user,
        defaults={
            "profile_type": "individual",
            "name": user.full_name,
            "address_line1": "1600 Example Avenue",
            "city": "Mountain View",
            "postal_code": "94043",
            "country": Country.objects.get(code=country_code),
            "email": user.email,
            "phone": "+1 650 555 0100",
        },
    )
    if not profile.payment_methods.exists():
        PaymentMethod.objects.create(
            profile=profile,
            brand="visa",
            last4="4242",
            exp_month=12,
            exp_year=timezone.now().year + 3,
            processor_token="tok_demo",
        )
    return profile
