"""Plain factory functions for test data: explicit, no magic."""

import itertools

from django.utils import timezone

from studio.models import ApiKey, BillingState, Membership, Project, Role, Tier, User

PASSWORD = "correct-horse-battery"
_sequence = itertools.count(1)


def make_user(email=None, **fields) -> User:
    email = email or f"user{next(_sequence)}@example.com"
    return User.objects.create_user(email, PASSWORD, **fields)


def make_project(owner=None, *, name=None, tier=Tier.FREE, billing_state=None, upgrade_available=False, **fields):
    if billing_state is None:
        billing_state = BillingState.NONE if tier == Tier.FREE else BillingState.ACTIVE
    project = Project.objects.create(
        name=name or f"Project {next(_sequence)}",
        tier=tier,
        billing_state=billing_state,
        upgrade_available=upgrade_available,
        **fields,
    )
    if owner is not None:
        add_member(project, owner, Role.OWNER)
    return project


def add_member(project, user, role, *, imported=True) -> Membership:
    return Membership.objects.create(
        project=project, user=user, role=role, imported_at=timezone.now() if imported else None
    )


def make_key(project, *, name=None, created_by=None):
    """Returns (key, raw secret)."""
    return ApiKey.issue(project=project, name=name or f"Key {next(_sequence)}", created_by=created_by)


def make_profile(user, *, country="US", **fields):
    from billing.models import Country, PaymentsProfile

    defaults = {
        "profile_type": "individual",
        "name": "Ada Lovelace",
        "address_line1": "1 Analytical Way",
        "city": "London",
        "postal_code": "N1 9GU",
        "email": user.email,
        "phone": "+44 20 7946 0000",
    }
    return PaymentsProfile.objects.create(
        owner=user, country=Country.objects.get(code=country), **{**defaults, **fields}
    )


def make_card(profile, *, last4="4242", kind="card", brand="visa"):
    from billing.models import PaymentMethod

    return PaymentMethod.objects.create(
        profile=profile,
        kind=kind,
        brand=brand,
        last4=last4,
        exp_month=12,
        exp_year=2099,
        processor_token=f"tok_{last4}",
    )


def make_account(user, *, country="US", name=None, prepayment_due=False, projects=()):
    """A billing account administered by `user` (with a profile and card), linked to `projects`."""
    from billing.models import BillingAccount, BillingAdministrator, PaymentsProfile, PrepaymentStatus
    from billing.services import link_project

    profile = PaymentsProfile.objects.filter(owner=user).first() or make_profile(user, country=country)
    method = profile.payment_methods.first() or make_card(profile)
    account = BillingAccount.objects.create(
        display_name=name or f"Account {next(_sequence)}",
        country_id=country,
        payments_profile=profile,
        primary_payment_method=method,
        created_by=user,
        prepayment_status=PrepaymentStatus.REQUIRED if prepayment_due else PrepaymentStatus.NOT_REQUIRED,
        prepayment_amount=10 if prepayment_due else None,
    )
    BillingAdministrator.objects.create(account=account, user=user)
    for project in projects:
        link_project(project, account, by=user)
    return account


def make_billed_project(owner, *, name=None, since=None):
    """A Tier 1 project linked to a new billing account of `owner` at `since` (default: a day ago),
    so that its billing history bills usage from then on (SPEC §9)."""
    from datetime import timedelta

    import time_machine

    project = make_project(owner, name=name)
    with time_machine.travel(since or timezone.now() - timedelta(days=1)):
        make_account(owner, projects=[project])
    project.refresh_from_db()
    return project


def deliver_mail():
    """Run the outbox's real delivery (the deliver_outbox job) and return what reached the test
    mailbox (`django.core.mail.outbox`, every message delivered so far in this test)."""
    from django.core import mail

    from studio.outbox import deliver_due

    deliver_due()
    return mail.outbox


def make_staff(email, *groups, superuser=False, **fields) -> User:
    """A staff member in the given staff groups (staff.roles.SUPPORT / FINANCE)."""
    from django.contrib.auth.models import Group

    from staff import roles

    roles.ensure_groups()
    user = make_user(email, is_staff=True, is_superuser=superuser, **fields)
    user.groups.set(Group.objects.filter(name__in=groups))
    return user


def approved(promo):
    """`promo` approved by a second Finance member if it waits for one (exposure above the two-person threshold), for
    tests about what follows approval: redemption, states, pages."""
    from billing import promotions
    from staff import roles

    if promo.approved_at is None:
        second = User.objects.filter(email="approver@staff.example").first()
        second = second or make_staff("approver@staff.example", roles.FINANCE)
        promo = promotions.approve_code(promo, by=second, note="Second approval")
    return promo


def approved_code(**fields):
    """billing.promotions.create_code(**fields), approved by a second Finance member if it needs one."""
    from billing import promotions

    return approved(promotions.create_code(**fields))
