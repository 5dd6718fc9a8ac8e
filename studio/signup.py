"""Sign-up by e-mail confirmation, without revealing which addresses have an account.

Asking to sign up always answers the same and sends one e-mail: a new address gets a signed link
to choose a password (the account exists only once the mailbox owner has chosen one), a
registered address gets a note that someone tried, in its owner's language.
"""

from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.core.mail import send_mail
from django.db import transaction
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation

from studio.models import AuditEvent, User, normalize_email

SALT = "studio.signup"


@dataclass(frozen=True)
class Claim:
    """What a valid confirmation link says: whose address, and the language they signed up in."""

    email: str
    language: str


def make_token(*, email: str, language: str) -> str:
    return signing.dumps({"email": normalize_email(email), "language": language}, salt=SALT)


def read_token(token: str) -> Claim:
    """The claim of a link made by `make_token` within `SIGNUP_LINK_MAX_AGE`.

    Raises signing.SignatureExpired for an old link, signing.BadSignature for anything else.
    """
    data = signing.loads(token, salt=SALT, max_age=settings.SIGNUP_LINK_MAX_AGE)
    if not isinstance(data, dict) or not isinstance(data.get("email"), str):
        raise signing.BadSignature("unexpected payload")
    language = data.get("language")
    if language not in dict(settings.LANGUAGES):
        language = settings.LANGUAGE_CODE
    return Claim(email=data["email"], language=language)


def request_signup(request: HttpRequest, *, email: str, language: str) -> None:
    """E-mail the owner of `email`: a confirmation link if it has no account, else a "someone tried" note.

    Effects: exactly one e-mail either way, so the two cases cost about the same.
    """
    email = normalize_email(email)
    owner = User.objects.filter(email=email).only("email", "language").first()
    if owner is None:
        token = make_token(email=email, language=language)
        context = {
            "email": email,
            "link": request.build_absolute_uri(reverse("signup-confirm", args=[token])),
            "days": settings.SIGNUP_LINK_MAX_AGE.days,
        }
        _send(email, language, "signup_confirm", context)
    else:
        context = {
            "email": email,
            "login_url": request.build_absolute_uri(reverse("login")),
            "reset_url": request.build_absolute_uri(reverse("password_reset")),
        }
        _send(email, owner.language or settings.LANGUAGE_CODE, "signup_attempt", context)


def create_account(claim: Claim, *, password: str) -> User:
    """The account of a confirmed sign-up, terms accepted (the sign-up form required them).

    Raises IntegrityError when the address has an account already (the unique e-mail).
    """
    with transaction.atomic():
        user = User.objects.create_user(
            claim.email, password, terms_accepted_at=timezone.now(), language=claim.language
        )
        AuditEvent.record(
            actor=user, action="user.signup", obj=user, after={"email": user.email, "terms_accepted": True}
        )
        return user


def _send(email: str, language: str, template: str, context: dict) -> None:
    with translation.override(language):
        subject = render_to_string(f"registration/{template}_subject.txt", context).strip()
        body = render_to_string(f"registration/{template}_email.txt", context)
    send_mail(subject, body, None, [email])
