import contextvars
import logging
import re
import time
import uuid

from django.utils import translation

request_log = logging.getLogger("studio.request")
# The id of the request this thread is serving, for every log record written meanwhile.
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("current_request_id", default="-")
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Load-balancer probes (studio.views.health) never load the session: a cookie sent along costs no
# database query, and the answer does not vary by cookie.
PROBE_PATHS = frozenset({"/healthz", "/readyz"})


class RequestIdFilter(logging.Filter):
    """Gives every record a `request_id`: the current request's, or "-" outside a request.

    Django logs 4xx/5xx answers ("Service Unavailable: /readyz") after the middleware returned,
    with the request attached: its id is taken from there.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request = getattr(record, "request", None)
            record.request_id = getattr(request, "request_id", None) or current_request_id.get()
        return True


class RequestLogMiddleware:
    """One log line per request: method, path, status, duration, request id, user id.

    The request id is the caller's `X-Request-ID` when it is a sane token (a proxy's or the fleet's
    own), else a new one; it is `request.request_id` and the `X-Request-ID` response header. Never
    logged: the query string and the body (either may carry secrets) and URL tokens (reset links).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        supplied = request.META.get("HTTP_X_REQUEST_ID", "")
        request_id = supplied if SANE_REQUEST_ID.fullmatch(supplied) else uuid.uuid4().hex
        request.request_id = request_id
        context = current_request_id.set(request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response["X-Request-ID"] = request_id
            if request_log.isEnabledFor(logging.INFO):
                self.log(request, response, duration_ms=(time.perf_counter() - started) * 1000)
            return response
        finally:
            current_request_id.reset(context)

    @staticmethod
    def log(request, response, *, duration_ms: float) -> None:
        path = request.path
        match = getattr(request, "resolver_match", None)
        if match is not None and match.kwargs.get("token"):
            path = path.replace(str(match.kwargs["token"]), "*****")
        # AuthenticationMiddleware's lazy user was already resolved by UserLanguageMiddleware; if
        # that failed (session store down), the response already is the 500 to log.
        user = None if request.path in PROBE_PATHS else getattr(request, "user", None)
        try:
            user_id = user.pk if user is not None and user.is_authenticated else None
        except Exception:
            user_id = None
        duration_ms = round(duration_ms, 1)
        request_log.info(
            "%s %s %s %.1fms user=%s",
            request.method,
            path,
            response.status_code,
            duration_ms,
            "-" if user_id is None else user_id,
            extra={
                "method": request.method,
                "path": path,
                "status": response.status_code,
                "duration_ms": duration_ms,
                "request_id": request.request_id,
                "user_id": user_id,
            },
        )


class UserLanguageMiddleware:
    """A signed-in user's saved language wins over the cookie and the browser's preference."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path in PROBE_PATHS:
            return self.get_response(request)
        user = request.user
        if user.is_authenticated and user.language and user.language != request.LANGUAGE_CODE:
            translation.activate(user.language)
            request.LANGUAGE_CODE = user.language
        return self.get_response(request)
