"""Probes for load balancers and orchestrators: no session, no login, no throttling.

/healthz: the process answers (touches nothing else). /readyz: it can serve, i.e. the database
and, when REDIS_URL is set, Redis answer; 503 names what failed (details go to the log only).
"""

import logging

import redis
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

logger = logging.getLogger("studio.health")
REDIS_TIMEOUT_SECONDS = 1


@never_cache
@require_safe
def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _database_answers()}
    if settings.REDIS_URL:
        checks["redis"] = _redis_answers(settings.REDIS_URL)
    failed = [name for name, ok in checks.items() if not ok]
    body = {
        "status": "unavailable" if failed else "ok",
        "checks": {name: "ok" if ok else "failed" for name, ok in checks.items()},
        "failed": failed,
    }
    return JsonResponse(body, status=503 if failed else 200)


def _database_answers() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except DatabaseError as error:
        logger.warning("readiness: database unavailable: %s: %s", type(error).__name__, _one_line(error))
        return False


def _redis_answers(url: str) -> bool:
    try:
        with redis.Redis.from_url(
            url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS, socket_timeout=REDIS_TIMEOUT_SECONDS
        ) as client:
            return client.ping() is True
    except redis.RedisError as error:
        logger.warning("readiness: Redis unavailable: %s: %s", type(error).__name__, _one_line(error))
        return False


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
