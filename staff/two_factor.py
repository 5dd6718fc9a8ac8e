"""The staff second factor (SPEC §10): a TOTP authenticator and ten recovery codes, with django-otp.

Each staff member has at most one confirmed TOTP device and one StaticDevice holding the recovery
codes. Every change for one member locks that member's user row first, so enrolment, a new set of
recovery codes and verification never interleave (two requests with one recovery code: one wins).
Wrong codes are throttled by django-otp per device (exponential back-off: 1, 2, 4, 8 … seconds,
kept in the database) and logged; enrolment, new recovery codes and verifications are audited,
never with a secret in the row.
"""

import base64
import io
import logging
import re
from base64 import b32encode
from dataclasses import dataclass
from datetime import datetime

import segno
from django.db import transaction
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from studio.models import ActorKind, AuditEvent, User

log = logging.getLogger(__name__)

RECOVERY_CODE_COUNT = 10
TOTP_CODE = re.compile(r"\d{6}")
RECOVERY_CODE = re.compile(r"[a-z2-7]{8}")  # StaticToken.random_token(): 5 random bytes in base32


@dataclass(frozen=True)
class Outcome:
    """What a code did: the device that accepted it, or when the next try is allowed (throttled)."""

    device: TOTPDevice | StaticDevice | None = None
    locked_until: datetime | None = None


def _lock(user: User) -> User:
    return User.objects.select_for_update().get(pk=user.pk)


def has_authenticator(user: User) -> bool:
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


def recovery_codes_left(user: User) -> int:
    return StaticToken.objects.filter(device__user=user, device__confirmed=True).count()


def pending_device(user: User) -> TOTPDevice:
    """The member's unconfirmed authenticator, created once: reloading the set-up page shows the same QR code."""
    with transaction.atomic():
        _lock(user)
        device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
        return device or TOTPDevice.objects.create(user=user, name="Authenticator", confirmed=False)


def secret_for_display(device: TOTPDevice) -> str:
    """The key in base32, as authenticator apps take it when typed: groups of four."""
    secret = b32encode(device.bin_key).decode()
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def qr_data_uri(device: TOTPDevice) -> str:
    """The otpauth:// URL as an SVG QR code in a data: URI (CSP allows data: images, no inline style)."""
    buffer = io.BytesIO()
    segno.make(device.config_url, error="m").save(
        buffer, kind="svg", scale=5, border=4, dark="#000", light="#fff", xmldecl=False
    )
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()


def enrol(user: User, code: str) -> tuple[TOTPDevice, list[str]] | None:
    """Confirm the pending authenticator with `code`: the device and its recovery codes, or None if wrong.

    Effects: the pending device becomes the member's one authenticator (any earlier one, e.g. on a lost
    phone, is deleted), the recovery codes are replaced by fresh ones, an audit row
    "staff.two_factor.enrol". Safe to repeat: a second call finds no pending device and returns None.
    """
    with transaction.atomic():
        _lock(user)
        device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
        if device is None or not device.verify_token(code):
            _log_failure(user, device)
            return None
        replaced = list(TOTPDevice.objects.filter(user=user, confirmed=True).values_list("pk", flat=True))
        TOTPDevice.objects.filter(pk__in=replaced).delete()
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        codes = _replace_recovery_codes(user)
        AuditEvent.record(
            actor=user,
            actor_kind=ActorKind.STAFF,
            action="staff.two_factor.enrol",
            obj=user,
            before={"authenticators": replaced},
            after={"authenticator": device.pk, "recovery_codes": len(codes)},
        )
    return device, codes


def regenerate_recovery_codes(user: User) -> list[str]:
    """New recovery codes; the old ones stop working. Audited as "staff.two_factor.recovery_codes"."""
    with transaction.atomic():
        _lock(user)
        before = recovery_codes_left(user)
        codes = _replace_recovery_codes(user)
        AuditEvent.record(
            actor=user,
            actor_kind=ActorKind.STAFF,
            action="staff.two_factor.recovery_codes",
            obj=user,
            before={"recovery_codes": before},
            after={"recovery_codes": len(codes)},
        )
    return codes


def verify(user: User, code: str) -> Outcome:
    """Check a 6-digit authenticator code or a recovery code (normalised by the form) for `user`.

    A recovery code works once. A device that has just refused codes refuses every code until its
    back-off has passed (django-otp's throttling); the outcome says until when. A success is audited
    as "staff.two_factor.verify" with the method used; a failure is logged.
    """
    model = TOTPDevice if TOTP_CODE.fullmatch(code) else StaticDevice
    with transaction.atomic():
        _lock(user)
        device = model.objects.select_for_update().filter(user=user, confirmed=True).order_by("pk").first()
        if device is None:
            _log_failure(user, None)
            return Outcome()
        allowed, details = device.verify_is_allowed()
        if not allowed:
            log.warning("staff second factor throttled user=%s device=%s", user.pk, device.persistent_id)
            return Outcome(locked_until=details and details.get("locked_until"))
        if not device.verify_token(code):
            _log_failure(user, device)
            return Outcome()
        AuditEvent.record(
            actor=user,
            actor_kind=ActorKind.STAFF,
            action="staff.two_factor.verify",
            obj=user,
            after={"method": "authenticator" if model is TOTPDevice else "recovery_code"},
        )
    return Outcome(device=device)


def _replace_recovery_codes(user: User) -> list[str]:
    StaticDevice.objects.filter(user=user).delete()
    device = StaticDevice.objects.create(user=user, name="Recovery codes", confirmed=True)
    codes = [StaticToken.random_token() for _ in range(RECOVERY_CODE_COUNT)]
    StaticToken.objects.bulk_create(StaticToken(device=device, token=code) for code in codes)
    return codes


def _log_failure(user: User, device) -> None:
    failures = getattr(device, "throttling_failure_count", None)
    log.warning(
        "staff second factor refused user=%s device=%s failures=%s",
        user.pk,
        device.persistent_id if device else None,
        failures,
    )
