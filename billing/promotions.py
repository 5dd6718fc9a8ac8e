"""Promotional codes (SPEC §10, R25): Finance creates them; a billing administrator redeems one on the
billing page for a promotional credit, which pays for usage in the R24 order (billing.ledger).

Two-person rule (X10): a code whose exposure (amount × redemptions allowed) is above
settings.STAFF_APPROVAL_THRESHOLD waits for a second Finance member, never its creator, to approve it
(`approve_code`) and cannot be redeemed until then.

A code is stored in capitals and matched as typed otherwise: " spring-2026 " is SPRING-2026. A
redemption is written under the code's row lock (then the account's, in billing.ledger: always in
that order), so the last use of a code goes to one account only; one per account is a unique key.
"""

import re
import secrets
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import Case, F, QuerySet, Value, When
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from billing import ledger
from billing.models import AccountStatus, BillingAccount, Credit, CreditKind, PromoCode, PromoRedemption
from billing.payments import needs_second_approval
from billing.services import BillingError
from studio.models import ActorKind, AuditEvent

CODE_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9-]{2,31}$")
# Generated codes avoid characters that read alike (0/O, 1/I/L, 2/Z, 5/S, 8/B).
READABLE = "ACDEFGHJKMNPQRTUVWXY34679"
GROUPS, GROUP_LENGTH = 3, 4
CENTS = Decimal("0.01")


class PromoState(models.TextChoices):
    """What a code is now, deactivated first: a used-up code is exhausted whether or not it expired, an expired
    one is expired whether or not it was approved."""

    WAITING = "waiting", gettext_lazy("Waiting for approval")
    ACTIVE = "active", gettext_lazy("Active")
    EXPIRED = "expired", gettext_lazy("Expired")
    EXHAUSTED = "exhausted", gettext_lazy("Fully redeemed")
    DEACTIVATED = "deactivated", gettext_lazy("Deactivated")


def normalize(raw: str) -> str:
    """The code as stored: surrounding spaces dropped, capitals (dashes are part of a code)."""
    return (raw or "").strip().upper()


def generate_code() -> str:
    """A random readable code such as "K7QM-XWP3-HT9C" (25^12, about 2^56, codes)."""
    groups = ("".join(secrets.choice(READABLE) for _i in range(GROUP_LENGTH)) for _g in range(GROUPS))
    return "-".join(groups)


def with_state(codes: QuerySet[PromoCode], *, now=None) -> QuerySet[PromoCode]:
    """`codes` annotated with `state` (a PromoState value), so that a list can show and filter by it."""
    now = now or timezone.now()
    return codes.annotate(
        state=Case(
            When(active=False, then=Value(PromoState.DEACTIVATED)),
            When(times_redeemed__gte=F("max_redemptions"), then=Value(PromoState.EXHAUSTED)),
            When(redeem_by__lte=now, then=Value(PromoState.EXPIRED)),
            When(approved_at__isnull=True, then=Value(PromoState.WAITING)),
            default=Value(PromoState.ACTIVE),
            output_field=models.CharField(),
        )
    )


def state_of(code: PromoCode, *, now=None) -> PromoState:
    now = now or timezone.now()
    if not code.active:
        return PromoState.DEACTIVATED
    if code.times_redeemed >= code.max_redemptions:
        return PromoState.EXHAUSTED
    if code.redeem_by <= now:
        return PromoState.EXPIRED
    if code.approved_at is None:
        return PromoState.WAITING
    return PromoState.ACTIVE


def exposure(amount: Decimal, max_redemptions: int) -> Decimal:
    """The most credit a code can grant: what the two-person rule weighs."""
    return amount * max_redemptions


def create_code(
    *,
    code: str,
    amount: Decimal,
    redeem_by: datetime,
    credit_valid_days: int,
    max_redemptions: int,
    description: str = "",
    by,
) -> PromoCode:
    """Create a code (a random readable one when `code` is blank).

    Effects: one PromoCode row and its "promo_code.create" audit event (a staff action); the code is
    approved by its creation when its exposure is at most the threshold, else it waits for `approve_code`.
    Raises BillingError for a malformed or taken code, or a figure that is not positive.
    """
    code = normalize(code) or generate_code()
    if not CODE_PATTERN.match(code):
        raise BillingError(_("Use 3 to 32 letters, digits and dashes, starting with a letter or digit."))
    if amount <= 0 or credit_valid_days <= 0 or max_redemptions <= 0:
        raise BillingError(_("The amount, the days and the number of redemptions must be positive."))
    if amount != amount.quantize(CENTS):
        raise BillingError(_("Give the amount in dollars and cents."))
    amount = amount.quantize(CENTS)  # "50" is recorded as "50.00", as the database returns it
    approved = not needs_second_approval(exposure(amount, max_redemptions))
    try:
        with transaction.atomic():
            promo = PromoCode.objects.create(
                code=code,
                amount=amount,
                redeem_by=redeem_by,
                credit_valid_days=credit_valid_days,
                max_redemptions=max_redemptions,
                description=description,
                created_by=by,
                approved_by=by if approved else None,
                approved_at=timezone.now() if approved else None,
            )
            AuditEvent.record(
                actor=by,
                actor_kind=ActorKind.STAFF,
                action="promo_code.create",
                obj=promo,
                after={
                    "code": code,
                    "amount": str(promo.amount),
                    "redeem_by": redeem_by.isoformat(),
                    "credit_valid_days": credit_valid_days,
                    "max_redemptions": max_redemptions,
                },
            )
    except IntegrityError:
        if PromoCode.objects.filter(code=code).exists():
            raise BillingError(_("The code %(code)s already exists.") % {"code": code}) from None
        raise
    return promo


def approve_code(code: PromoCode, *, by, note: str) -> PromoCode:
    """A second Finance member approves a code waiting for approval: it can be redeemed from now on. Its creator
    may not. Under the code's lock: two approvals at once approve once (one audit event "promo_code.approve"), and
    an approved or deactivated code is returned unchanged. Raises BillingError for an expired code."""
    if by.pk == code.created_by_id:
        raise BillingError(_("Nobody may approve a code they created: another Finance member must."))
    with transaction.atomic():
        locked = PromoCode.objects.select_for_update().get(pk=code.pk)
        if locked.approved_at is not None or not locked.active:
            return locked
        if locked.redeem_by <= timezone.now():
            raise BillingError(_("This code has expired: it can no longer be approved."))
        locked.approved_by, locked.approved_at, locked.approval_note = by, timezone.now(), note
        locked.save(update_fields=["approved_by", "approved_at", "approval_note"])
        AuditEvent.record(
            actor=by,
            actor_kind=ActorKind.STAFF,
            action="promo_code.approve",
            obj=locked,
            before={"approved_by": None},
            after={"approved_by": by.email, "exposure": str(exposure(locked.amount, locked.max_redemptions))},
            reason=note,
        )
    return locked


def deactivate(code: PromoCode, *, by, reason: str) -> PromoCode:
    """Stop a code from being redeemed (credits already granted stay). Safe to call twice: an
    inactive code is returned unchanged, without a second audit event."""
    with transaction.atomic():
        locked = PromoCode.objects.select_for_update().get(pk=code.pk)
        if not locked.active:
            return locked
        locked.active = False
        locked.save(update_fields=["active"])
        AuditEvent.record(
            actor=by,
            actor_kind=ActorKind.STAFF,
            action="promo_code.deactivate",
            obj=locked,
            before={"active": True},
            after={"active": False},
            reason=reason,
        )
    return locked


def redeem(account: BillingAccount, raw_code: str, *, by) -> Credit:
    """Redeem a code for `account` on behalf of `by`, one of its billing administrators.

    Effects, under the code's lock: a promotional credit of the code's amount, valid
    `credit_valid_days` days from now (with its grant entry), a PromoRedemption row, the code's
    `times_redeemed` + 1, and a "promo_code.redeem" audit event on the account. Raises BillingError
    (and changes nothing) for an unknown, deactivated, not yet approved, expired or fully redeemed code, a code
    this account already redeemed, or a closed account.
    """
    code, promo, now = normalize(raw_code), None, timezone.now()
    try:
        with transaction.atomic():
            promo = PromoCode.objects.select_for_update().filter(code=code).first() if code else None
            _check(promo, account, now=now)
            return _grant(promo, account, by=by, now=now)
    except IntegrityError:
        # Only the unique key can refuse here: the same account redeeming in another transaction.
        if promo is not None and PromoRedemption.objects.filter(code=promo, account=account).exists():
            raise BillingError(_("This billing account has already redeemed this code.")) from None
        raise


def _check(promo: PromoCode | None, account: BillingAccount, *, now) -> None:
    if promo is None:
        raise BillingError(_("There is no promotional code like this. Check the code and try again."))
    if BillingAccount.objects.filter(pk=account.pk, status=AccountStatus.CLOSED).exists():
        raise BillingError(_("A closed billing account cannot redeem promotional codes."))
    if not promo.active:
        raise BillingError(_("This promotional code is no longer active."))
    if promo.redeem_by <= now:
        raise BillingError(_("This promotional code has expired."))
    if promo.approved_at is None:
        raise BillingError(_("This code is not active yet."))
    if promo.redemptions.filter(account=account).exists():
        raise BillingError(_("This billing account has already redeemed this code."))
    if promo.times_redeemed >= promo.max_redemptions:
        raise BillingError(_("This promotional code has been fully redeemed."))


def _grant(promo: PromoCode, account: BillingAccount, *, by, now) -> Credit:
    expires_at = now + timedelta(days=promo.credit_valid_days)
    with translation.override(settings.LANGUAGE_CODE):  # stored text: the books' language, not the redeemer's
        source = _("Promotional code %(code)s") % {"code": promo.code}
    credit = ledger.grant_credit(
        account,
        kind=CreditKind.PROMOTIONAL,
        amount=promo.amount,
        expires_at=expires_at,
        source=source,
        by=by,
        at=now,
    )
    PromoRedemption.objects.create(code=promo, account=account, credit=credit, redeemed_by=by, redeemed_at=now)
    promo.times_redeemed += 1  # under the code's lock: exactly its redemptions' count
    promo.save(update_fields=["times_redeemed"])
    AuditEvent.record(
        actor=by,
        action="promo_code.redeem",
        obj=account,
        after={
            "code": promo.code,
            "amount": str(promo.amount),
            "credit": credit.pk,
            "expires_at": expires_at.isoformat(),
            "times_redeemed": promo.times_redeemed,
        },
    )
    return credit
