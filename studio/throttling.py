"""Sign-in throttling (django-axes): failures are counted per normalised e-mail and address."""

from studio.models import normalize_email


def username_for_throttling(request, credentials) -> str:
    # "Ada@Example.com" and "ada@example.com " are one account, so they share one counter.
    username = (credentials or {}).get("username") or request.POST.get("username", "")
    return normalize_email(username)
