"""Demo billing data (the billing part of `manage.py seed_demo`). Idempotent.

The developer is an existing billing user with two accounts (one with a prepayment due); the
colleague pays for the project the developer edits. Project tiers in studio/demo.py match them.
"""

from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from billing import budgets, ledger, tiers
from billing.models import (
    BillingAccount,
    BillingAdministrator,
    Budget,
    Country,
    CreditKind,
    PaymentMethod,
    PaymentsProfile,
    PrepaymentStatus,
    ProjectBilling,
    TestProcessorToken,
)
from billing.models.budgets import default_thresholds
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
# A goodwill credit on the main account that expires within the 14-day reminder window (X2): the
# billing page shows its countdown, and the expire_credits job e-mails the developer its reminder.
GOODWILL_CREDIT = Decimal("25.00")
GOODWILL_GRANTED_DAYS_AGO, GOODWILL_EXPIRES_IN_DAYS = 5, 10


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
    if not main.credits.filter(kind=CreditKind.GOODWILL).exists():
        ledger.grant_credit(
            main,
            kind=CreditKind.GOODWILL,
            amount=GOODWILL_CREDIT,
            expires_at=now + timedelta(days=GOODWILL_EXPIRES_IN_DAYS),
            source="Apology for the outage",
            at=now - timedelta(days=GOODWILL_GRANTED_DAYS_AGO),
        )
    seed_past_due(users[DEVELOPER])
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


# Budgets (X3), seeded after the usage history (`seed_budgets`): the main account's monthly budget
# is below what its projects spend in a month, so the forecast (and later in the month actual
# spend) has crossed thresholds and the developer was e-mailed; the Checkout assistant's own
# budget is well above its spend, so none of its thresholds is reached.
DEMO_BUDGETS = [(None, Decimal("60.00")), ("gen-lang-client-0100000002", Decimal("200.00"))]


def seed_budgets(users):
    """The demo's budgets, then the check_budgets job once (idempotent: it e-mails nothing twice)."""
    developer = users[DEVELOPER]
    main = BillingAccount.objects.get(display_name="Main billing account", administrators__user=developer)
    for project_id, amount in DEMO_BUDGETS:
        project = Project.objects.get(project_id=project_id) if project_id else None
        if not Budget.objects.filter(account=main, project=project).exists():
            budgets.save_budget(
                main, budget=None, project=project, amount=amount, thresholds=default_thresholds(), by=developer
            )
    budgets.check_budgets()


# Dunning (SPEC §9): the developer's agency account pays with a card that was fine when added and is
# declined since (the processor's own record says so). Its usage charge of PAST_DUE_DAYS_AGO is on a
# past month's statement, whose charge on the 2nd failed; usage/demo.py's `seed_statements` then
# makes the retries due by now (1, 3, 7 days later), so the billing page shows the statement past due
# and, once the last retry has failed, the account suspended with a link to pay.
PAST_DUE_ACCOUNT = "Agency billing"
PAST_DUE_CHARGE = Decimal("48.20")
PAST_DUE_DAYS_AGO = 40  # always in a month whose statement was charged (on the 2nd of a later month)
DECLINED_TOKEN = "tok_demo_declined"


def seed_past_due(developer):
    """The agency account with its declined card and the usage charge its statement will not collect."""
    TestProcessorToken.objects.get_or_create(token=DECLINED_TOKEN, defaults={"behaviour": "card_declined"})
    profile = PaymentsProfile.objects.get(owner=developer)
    card = profile.payment_methods.filter(processor_token=DECLINED_TOKEN).first()
    if card is None:
        card = PaymentMethod.objects.create(
            profile=profile,
            brand="visa",
            last4="0341",
            exp_month=9,
            exp_year=timezone.now().year + 2,
            processor_token=DECLINED_TOKEN,
        )
    account = BillingAccount.objects.filter(administrators__user=developer, display_name=PAST_DUE_ACCOUNT).first()
    if account is None:
        account = BillingAccount.objects.create(
            display_name=PAST_DUE_ACCOUNT,
            country_id="US",
            payments_profile=profile,
            primary_payment_method=card,
            created_by=developer,
        )
        BillingAdministrator.objects.create(account=account, user=developer)
    ledger.record_usage_charge(
        account,
        amount=PAST_DUE_CHARGE,
        idempotency_key="demo:agency:charge",
        description="Usage",
        at=timezone.now() - timedelta(days=PAST_DUE_DAYS_AGO),
    )
    return account
