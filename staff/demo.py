"""Demo staff and something in every staff queue (the staff part of `manage.py seed_demo`). Idempotent.

Demo only: the passwords are public. Support and Finance each get a login; a second Finance member makes the
two-person rule (refunds and goodwill above STAFF_APPROVAL_THRESHOLD) something one can try alone.
"""

import uuid
from datetime import timedelta
from decimal import Decimal

from django.contrib.auth.models import Group
from django.utils import timezone

from billing import goodwill, payments, promotions, services
from billing.models import (
    BillingAccount,
    BillingAdministrator,
    GoodwillGrant,
    GoodwillReason,
    PaymentStatus,
    PromoCode,
    RefundRequest,
)
from staff import roles
from studio.demo import COLLEAGUE, DEVELOPER, _user
from studio.models import Project
from usage import quotas
from usage.models import QuotaIncreaseRequest

SUPPORT = "support@example.com"
FINANCE = "finance@example.com"
FINANCE_2 = "finance2@example.com"
PROMO_CODE = "WELCOME-DEMO"
REFUND_ACCOUNT = "Research lab billing"  # the colleague's: a paid prepayment, part of it asked back
PREPAID, REFUND_ASKED = Decimal("250.00"), Decimal("150.00")
GOODWILL_ASKED = Decimal("120.00")


def seed_staff(users):
    """Returns the staff demo users by e-mail."""
    roles.ensure_groups()
    staff = {
        SUPPORT: _user(SUPPORT, "Sam Support", is_staff=True),
        FINANCE: _user(FINANCE, "Fran Finance", is_staff=True),
        FINANCE_2: _user(FINANCE_2, "Fred Finance", is_staff=True),
    }
    staff[SUPPORT].groups.add(Group.objects.get(name=roles.SUPPORT))
    for email in (FINANCE, FINANCE_2):
        staff[email].groups.add(Group.objects.get(name=roles.FINANCE))
    developer, colleague, finance = users[DEVELOPER], users[COLLEAGUE], staff[FINANCE]
    _bank_transfer(developer)
    _refund_request(colleague)
    _quota_request(developer)
    main = BillingAccount.objects.get(display_name="Main billing account", administrators__user=developer)
    if not GoodwillGrant.objects.filter(account=main).exists():
        goodwill.request_goodwill(
            main,
            amount=GOODWILL_ASKED,
            reason_code=GoodwillReason.SERVICE_ISSUE,
            note="Batch jobs failed for six hours on the 3rd; the customer re-ran them.",
            expires_at=timezone.now() + timedelta(days=90),
            by=finance,
        )
    if not PromoCode.objects.filter(code=PROMO_CODE).exists():
        promo = promotions.create_code(
            code=PROMO_CODE,
            amount=Decimal("10.00"),
            redeem_by=timezone.now() + timedelta(days=90),
            credit_valid_days=30,
            max_redemptions=100,
            description="Demo promotional code",
            by=finance,
        )
        # USD 1,000 in all, above the two-person threshold: the second Finance member approves it (redeemable).
        promotions.approve_code(promo, by=staff[FINANCE_2], note="Demo campaign")
    return staff


def _bank_transfer(developer):
    """The India account's prepayment, started by bank transfer: waiting for Finance to see the money."""
    india = BillingAccount.objects.get(display_name="India team billing", administrators__user=developer)
    if india.prepayment_outstanding and not india.prepayments.exists():
        payments.pay_prepayment(
            india, attempt_id=uuid.uuid4(), amount=india.prepayment_amount, by=developer, bank_transfer=True
        )


def _refund_request(colleague):
    """An account without projects whose prepayment was paid by card; the colleague asks for most of it back
    (above the threshold: two Finance members must approve)."""
    account = BillingAccount.objects.filter(display_name=REFUND_ACCOUNT, administrators__user=colleague).first()
    if account is None:
        card_account = BillingAccount.objects.filter(administrators__user=colleague).first()
        profile = card_account.payments_profile
        account = BillingAccount.objects.create(
            display_name=REFUND_ACCOUNT,
            country=card_account.country,
            payments_profile=profile,
            primary_payment_method=card_account.primary_payment_method,
            created_by=colleague,
        )
        BillingAdministrator.objects.create(account=account, user=colleague)
        services.require_prepayment(account, by=None, reason="Demo: a prepayment paid by card")
        account.refresh_from_db()
        payments.pay_prepayment(
            account,
            attempt_id=uuid.uuid4(),
            amount=PREPAID,
            by=colleague,
            payment_method=account.primary_payment_method,
        )
    paid = account.prepayments.filter(status=PaymentStatus.SUCCEEDED).exists()
    if paid and not RefundRequest.objects.filter(account=account).exists():
        payments.request_refund(
            account, amount=REFUND_ASKED, reason="We moved the team to another account.", by=colleague
        )


def _quota_request(developer):
    project = Project.objects.get(project_id="gen-lang-client-0100000002")  # Checkout assistant (Tier 2)
    if QuotaIncreaseRequest.objects.filter(project=project).exists():
        return
    model_id, metric = "gemini-2.5-flash", "rpm"
    current = quotas.limit_in_force(project, model_id, metric)
    if current is not None:
        quotas.request_increase(
            project,
            model_id=model_id,
            metric=metric,
            value=current * 2,
            reason="Black Friday traffic: the checkout assistant needs twice the requests per minute.",
            by=developer,
        )
