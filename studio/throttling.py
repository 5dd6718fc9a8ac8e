"""Throttling: the real client address, sign-in lockouts (django-axes) and e-mail-sending requests.

Sign-in failures are counted by django-axes per normalised e-mail and client address (in the
database). Requests that send e-mail (sign-up, password reset) are counted in Django's cache
(Redis in production) per fixed window by django-ratelimit.
"""

import ipaddress
import logging

from django.conf import settings
from django.http import HttpRequest
from django_ratelimit.core import get_usage
from redis.exceptions import RedisError

from studio.models import normalize_email

log = logging.getLogger(__name__)


def client_ip(request: HttpRequest) -> str | None:
    """The address of the client, as the `TRUSTED_PROXY_COUNT` nearest proxies report it.

    Each trusted proxy appends the address it was connected from to X-Forwarded-For, so the real
    client is the entry that many places from the right; anything to its left came from the
    client and may be forged. With no trusted proxy the header is ignored. A header shorter than
    that, or an entry that is not an address (a misconfigured count), falls back to REMOTE_ADDR
    (None if the server gave none, as django-axes expects).
    """
    remote = request.META.get("REMOTE_ADDR") or None
    hops = settings.TRUSTED_PROXY_COUNT
    if hops <= 0:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [part for part in forwarded if part]
    if len(forwarded) < hops:
        return remote
    try:
        return str(ipaddress.ip_address(forwarded[-hops]))
    except ValueError:
        return remote


def username_for_throttling(request, credentials) -> str:
    # "Ada@Example.com" and "ada@example.com " are one account, so they share one counter.
    username = (credentials or {}).get("username") or request.POST.get("username", "")
    return normalize_email(username)


def throttle(request: HttpRequest, *, scope: str, key: str, rate: str) -> int:
    """Count one request for `key` in `scope`; past `rate` ("3/h"), the seconds until it resets, else 0.

    The count lives in the cache. If the cache (Redis) does not answer, the request is allowed and
    a warning logged: throttling guards against abuse and must not stop sign-ups and resets.
    """
    try:
        usage = get_usage(request, group=scope, key=lambda group, request: key, rate=rate, increment=True)
    except RedisError as error:
        log.warning("throttle %s not counted, cache unavailable: %s", scope, error)
        return 0
    if usage is None or not usage["should_limit"]:
        return 0
    return max(usage["time_left"], 1)


def throttle_client(request: HttpRequest, *, scope: str, rate: str) -> int:
    """`throttle` keyed by the client's address."""
    return throttle(request, scope=f"{scope}:client", key=client_ip(request) or "unknown", rate=rate)


def throttle_address(request: HttpRequest, *, scope: str, email: str, rate: str) -> int:
    """`throttle` keyed by a normalised e-mail address."""
    return throttle(request, scope=f"{scope}:address", key=normalize_email(email), rate=rate)
