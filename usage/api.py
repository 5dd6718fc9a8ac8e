"""The serving-fleet JSON API under /api/v1/ (django-ninja; OpenAPI at /api/v1/openapi.json).

Every answer is JSON. Errors have one shape, {"detail": "…"}, with `errors` ({field: [messages]},
as usage:report names an event's errors) on a 422 and `error_id` on a 500 (the same id is in the
log). The body limit (413) and the JSON form of Django's own errors (unknown route 404, wrong
method 405) are usage.middleware.FleetApiMiddleware's.
"""

import logging
import time
from typing import Literal
from uuid import uuid4

import orjson
from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI, Schema, Status
from ninja.errors import ValidationError as RequestValidationError
from ninja.security import HttpBearer
from pydantic import Field

from usage import admission, spendcap
from usage.ingest import EVENTS, MAX_BATCH, MAX_TOKENS, RESERVATION_ID_PATTERN, ingest, valid_events
from usage.middleware import MAX_BODY_BYTES, problem
from usage.models import FleetToken

log = logging.getLogger(__name__)


class FleetTokenAuth(HttpBearer):
    """`Authorization: Bearer flt_…`. Missing or wrong: 401, and nothing is written.

    A valid token is remembered by this process for FLEET_TOKEN_CACHE_SECONDS (every request of
    the fleet carries one), so a revocation takes effect within that time; unknown tokens are
    never remembered.
    """

    def authenticate(self, request: HttpRequest, token: str):
        now = time.monotonic()
        cached = _valid_tokens.get(token)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            found = FleetToken.objects.authenticate(token)
        except DatabaseError as error:
            if cached is None:
                raise
            # The database is down: a token this process knew stays valid, so that admission goes on from Redis.
            log.warning("fleet API: token check failed (%r); the token this process knew is taken", error)
            return cached[1]
        if found is not None:
            if len(_valid_tokens) > 1000:
                _valid_tokens.clear()
            _valid_tokens[token] = (now + settings.FLEET_TOKEN_CACHE_SECONDS, found)
        return found


_valid_tokens: dict[str, tuple[float, FleetToken]] = {}

# The events of a usage:report body, documented from the models ingestion validates them with.
EVENT_SCHEMA = EVENTS.json_schema(ref_template="#/components/schemas/{model}")
EVENT_DEFINITIONS = EVENT_SCHEMA.pop("$defs")


class FleetAPI(NinjaAPI):
    def get_openapi_schema(self, **kwargs):
        # usage:report reads its body itself (fast, and rejects events one by one), so its event
        # models are not operation parameters: their schemas are added to the components here.
        schema = super().get_openapi_schema(**kwargs)
        schema["components"]["schemas"].update(EVENT_DEFINITIONS)
        return schema


api = FleetAPI(
    title="Studio Console fleet API",
    version="1",
    description="Admission (quota:check) and metering (usage:report) for the serving fleet. "
    'Every answer is JSON; an error is `{"detail": "…"}` (with `errors` on a 422, `error_id` on a 500). '
    f"Request bodies: at most {MAX_BODY_BYTES} bytes (413 beyond). Money is in micro-USD "
    "(1 USD = 1,000,000) in quota figures; token counts are tokens; cache storage is token-hours.",
    auth=FleetTokenAuth(),
    urls_namespace="fleet-api",
    docs_url=None,  # the interactive docs load scripts from a CDN, which our CSP forbids
)


@api.exception_handler(RequestValidationError)
def invalid_request(request: HttpRequest, exc: RequestValidationError) -> HttpResponse:
    """422 with {field: [messages]}, the way usage:report names an event's errors."""
    errors: dict[str, list[str]] = {}
    for item in exc.errors:
        loc = [part for part in item.get("loc", ()) if part not in ("body", "payload")]
        errors.setdefault(str(loc[0]) if loc else "body", []).append(item["msg"])
    return problem(422, "The request body is not valid.", errors=errors)


@api.exception_handler(Exception)
def server_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    """500 with an error id that is also in the log (the request id, when the request has one)."""
    error_id = getattr(request, "request_id", None) or uuid4().hex
    log.exception(
        "fleet API: %s %s failed, error id %s",
        request.method,
        request.path,
        error_id,
        exc_info=exc,
        extra={"error_id": error_id},
    )
    return problem(500, f"Internal error (error id {error_id}).", error_id=error_id)


# --- schemas (documentation of the answers; the hot paths serialise without them) --------------

TIERS = Literal["free", "tier_1", "tier_2", "tier_3"]
DENIAL_REASONS = {
    "API_KEY_INVALID": (400, "INVALID_ARGUMENT", "the API key is malformed, unknown or revoked"),
    "MODEL_NOT_FOUND": (404, "NOT_FOUND", "no such model, or it is retired"),
    "BILLING_DISABLED": (403, "PERMISSION_DENIED", "the project's billing account is suspended or closed"),
    "MODEL_NOT_AVAILABLE_ON_TIER": (403, "PERMISSION_DENIED", "the model is not offered on the free tier"),
    "RATE_LIMIT_EXCEEDED": (429, "RESOURCE_EXHAUSTED", "a quota is used up: `quota_id` names it"),
}
QUOTA_ID_PATTERN = (
    "^((GenerateRequestsPerMinutePerProjectPerModel|GenerateContentInputTokensPerModelPerMinute"
    "|GenerateRequestsPerDayPerProjectPerModel|GenerateSpendPer10MinutesPerProject)-(FreeTier|Tier1|Tier2|Tier3)"
    f"|{spendcap.QUOTA_ID})$"
)
UNIT_TEXT = (
    "`requests` (RPM, RPD), `tokens` (TPM: input tokens), `micro_usd` (the spend limit and the project's monthly "
    "spend cap: 1 USD = 1,000,000 micro-USD)"
)


class CheckIn(Schema):
    api_key: str = Field(max_length=200, description="The API key as the end user sent it.")
    model: str = Field(max_length=64, examples=["gemini-2.5-flash"])
    kind: Literal["generate", "count_tokens", "batch"] = Field(
        "generate",
        description="`count_tokens` is always admitted and never counted. Cache storage is not a request: it is "
        "reported (usage:report, kind `cache_storage`), never admitted.",
    )
    estimated_input_tokens: int = Field(
        0, strict=True, ge=0, le=MAX_TOKENS, description="The prompt's size (tokens; an integer)."
    )


class LimitOut(Schema):
    quota_id: str = Field(
        pattern=QUOTA_ID_PATTERN,
        description="The quota, named as on the dashboard.",
        examples=["GenerateRequestsPerMinutePerProjectPerModel-Tier1"],
    )
    limit: int = Field(description="The quota's limit, in `unit`.")
    remaining: int = Field(description="What is left of it in the current window after this request, in `unit`.")
    unit: Literal["requests", "tokens", "micro_usd"] = Field(
        description=f"The unit of limit and remaining: {UNIT_TEXT}."
    )
    reset_seconds: int = Field(
        description="Seconds until the window rolls (RPD: midnight America/Los_Angeles; the monthly spend cap: "
        "midnight America/Los_Angeles at the end of the month)."
    )


class ErrorOut(Schema):
    code: Literal[400, 403, 404, 429] = Field(description="The HTTP status to answer the end user's request with.")
    status: Literal["INVALID_ARGUMENT", "NOT_FOUND", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED"]
    reason: Literal[
        "API_KEY_INVALID", "MODEL_NOT_FOUND", "BILLING_DISABLED", "MODEL_NOT_AVAILABLE_ON_TIER", "RATE_LIMIT_EXCEEDED"
    ] = Field(
        description="Why the request is denied: "
        + "; ".join(f"`{reason}` ({code}): {text}" for reason, (code, _, text) in DENIAL_REASONS.items())
        + "."
    )
    message: str = Field(description="For the end user, in English.")
    quota_id: str | None = Field(None, pattern=QUOTA_ID_PATTERN, description="RATE_LIMIT_EXCEEDED only.")
    limit: int | None = Field(None, description="RATE_LIMIT_EXCEEDED only: the quota's limit, in `unit`.")
    unit: Literal["requests", "tokens", "micro_usd"] | None = Field(
        None, description=f"RATE_LIMIT_EXCEEDED only: {UNIT_TEXT}."
    )
    retry_delay_seconds: int | None = Field(
        None, description="RATE_LIMIT_EXCEEDED only: seconds until a retry can pass."
    )


class CheckOut(Schema):
    allowed: bool = Field(description="Run the request (true) or answer the end user with `error` (false).")
    key_id: str | None = Field(None, description="The API key's id: report usage with it (`key_id`).")
    project_id: str | None = None
    tier: TIERS | None = Field(None, description="The quota tier the limits are those of.")
    limits: list[LimitOut] = Field([], description="Every limit that applies, after counting this request.")
    reservation_id: str | None = Field(
        None,
        pattern=RESERVATION_ID_PATTERN,
        description="Admitted and counted requests only (not `count_tokens`): the TPM and spend limits (and a capped "
        "project's monthly spend cap) counted an "
        "estimate of this request, reserved under this id. Pass it back as `reservation_id` on the usage event "
        "(usage:report) so that the estimate is replaced by the actual usage; without it the actual usage is "
        f"counted in addition to the estimate. A reservation lapses after {settings.RESERVATION_TTL_SECONDS} "
        "seconds (RESERVATION_TTL_SECONDS). Opaque, at most 64 characters: the id is the reservation itself "
        "(signed), taken only with usage of the same project and model; checks alike in the same second may get "
        "the same id, and each event that carries one settles it.",
        examples=["r1_6b0fed33_4b0_168_327f1df98d20faa9"],
    )
    error: ErrorOut | None = Field(None, description="Why it is denied; null when allowed.")


class RejectedOut(Schema):
    index: int = Field(description="The event's position in `events` (from 0).")
    event_id: str | None
    errors: dict[str, list[str]] = Field(description="Messages by field name (`event`: the event as a whole).")


class ReportOut(Schema):
    accepted: int = Field(description="Events stored by this call (events).")
    duplicates: int = Field(description="Events already stored, or repeated in this call: changed nothing (events).")
    rejected: list[RejectedOut] = Field(description="Invalid events, not stored; the others of the batch are.")


class Problem(Schema):
    detail: str


class Invalid(Schema):
    detail: str
    errors: dict[str, list[str]] = Field(description="Messages by field name.")


class ServerError(Schema):
    detail: str
    error_id: str = Field(description="Also in the server's log: quote it when reporting the problem.")


# --- examples --------------------------------------------------------------------------------

TIER1 = admission.quota_ids("tier_1")
ALLOWED = {
    "allowed": True,
    "key_id": "1234",
    "project_id": "gen-lang-client-0123456789",
    "tier": "tier_1",
    "limits": [
        {"quota_id": TIER1["rpm"], "limit": 1000, "remaining": 999, "unit": "requests", "reset_seconds": 42},
        {"quota_id": TIER1["tpm"], "limit": 1_000_000, "remaining": 998_800, "unit": "tokens", "reset_seconds": 42},
        {"quota_id": TIER1["rpd"], "limit": 10_000, "remaining": 9_999, "unit": "requests", "reset_seconds": 30_000},
        {
            "quota_id": TIER1["spend"],
            "limit": 10_000_000,
            "remaining": 9_999_640,
            "unit": "micro_usd",
            "reset_seconds": 600,
        },
    ],
    "reservation_id": "r1_6b0fed33_4b0_168_327f1df98d20faa9",
    "error": None,
}


def _denied(reason: str, message: str, admitted_key: bool = True, **more) -> dict:
    code, status, _ = DENIAL_REASONS[reason]
    known = {"key_id": "1234", "project_id": "gen-lang-client-0123456789", "tier": "tier_1"}
    return {
        "summary": f"Denied: {reason}",
        "value": {
            "allowed": False,
            **(known if admitted_key else dict.fromkeys(known)),
            "limits": more.pop("limits", []),
            "reservation_id": None,
            "error": {"code": code, "status": status, "reason": reason, "message": message, **more},
        },
    }


CHECK_EXAMPLES = {
    "allowed": {"summary": "Allowed", "value": ALLOWED},
    "API_KEY_INVALID": _denied(
        "API_KEY_INVALID", "API key not valid. Please pass a valid API key.", admitted_key=False
    ),
    "MODEL_NOT_FOUND": _denied("MODEL_NOT_FOUND", "Model gpt-9 is not found.", admitted_key=False),
    "BILLING_DISABLED": _denied(
        "BILLING_DISABLED",
        "The billing account of this project is suspended or closed: paid usage is stopped.",
        admitted_key=False,
    ),
    "MODEL_NOT_AVAILABLE_ON_TIER": _denied(
        "MODEL_NOT_AVAILABLE_ON_TIER",
        "Model gemini-2.5-pro is not available on the free tier. Set up billing to use it.",
        admitted_key=False,
    ),
    "RATE_LIMIT_EXCEEDED": _denied(
        "RATE_LIMIT_EXCEEDED",
        f"You exceeded your current quota: {TIER1['spend']}, limit 10000000. Please retry in 312s.",
        limits=[*ALLOWED["limits"][:3], {**ALLOWED["limits"][3], "remaining": 120_000, "reset_seconds": 312}],
        quota_id=TIER1["spend"],
        limit=10_000_000,
        unit="micro_usd",
        retry_delay_seconds=312,
    ),
    "ProjectMonthlySpendCap": {
        **_denied(
            "RATE_LIMIT_EXCEEDED",
            f"You exceeded your current quota: {spendcap.QUOTA_ID}, limit 50000000. Please retry in 1036800s.",
            limits=[
                *ALLOWED["limits"],
                {
                    "quota_id": spendcap.QUOTA_ID,
                    "limit": 50_000_000,
                    "remaining": 1_200,
                    "unit": "micro_usd",
                    "reset_seconds": 1_036_800,
                },
            ],
            quota_id=spendcap.QUOTA_ID,
            limit=50_000_000,
            unit="micro_usd",
            retry_delay_seconds=1_036_800,
        ),
        "summary": "Denied: the project's monthly spend cap (RATE_LIMIT_EXCEEDED)",
    },
}
ERROR_ID = "0f3c8e2a9b7d4c1e8a6f5b3d2c1e0f9a"


def _response(description: str, **examples) -> dict:
    named = {name: ({"value": value} if "value" not in value else value) for name, value in examples.items()}
    return {"description": description, "content": {"application/json": {"examples": named}}}


UNAUTHORIZED = _response(
    "No fleet token, or not a valid one (`Authorization: Bearer flt_…`). Nothing was done.",
    unauthorized={"detail": "Unauthorized"},
)
TOO_LARGE = f"Request body too large: at most {MAX_BODY_BYTES} bytes."
SERVER_ERROR = _response(
    "An unexpected error; nothing of the call may be assumed done (retrying is safe: usage:report is "
    "idempotent by event_id).",
    server_error={"detail": f"Internal error (error id {ERROR_ID}).", "error_id": ERROR_ID},
)

CHECK_RESPONSES = {
    200: {
        "description": "The decision: allowed, or denied with the reason to relay to the end user "
        "(`error.code` is the HTTP status for them: 400, 403, 404 or 429).",
        "content": {"application/json": {"examples": CHECK_EXAMPLES}},
    },
    400: _response("The body is not JSON.", not_json={"detail": "Cannot parse request body"}),
    401: UNAUTHORIZED,
    413: _response("The body is too large.", too_large={"detail": TOO_LARGE}),
    422: _response(
        'A field is missing or not valid; token counts are integers only (not `true`, `"5"` or `5.0`).',
        not_an_integer={
            "detail": "The request body is not valid.",
            "errors": {"estimated_input_tokens": ["Input should be a valid integer"]},
        },
    ),
    500: SERVER_ERROR,
}

REPORT_EXAMPLE = {
    "events": [
        {
            "event_id": "evt-7f3c2a",
            "key_id": "1234",
            "model": "gemini-2.5-flash",
            "kind": "generate",
            "status_code": 200,
            "input_tokens": 1200,
            "output_tokens": 300,
            "cached_tokens": 200,
            "audio_input_tokens": 400,
            "occurred_at": "2026-11-28T05:00:00Z",
        },
        {
            "event_id": "evt-7f3c2b",
            "key_id": "1234",
            "model": "gemini-2.5-flash",
            "kind": "cache_storage",
            "cache_token_hours": "1500000.5",
            "occurred_at": "2026-11-28T05:00:00Z",
        },
    ]
}
REPORT_BODY = {
    "description": f"Up to {MAX_BATCH} events: requests (generate, count_tokens, batch) and cache storage "
    "(cache_storage: token-hours, not a request).",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["events"],
                "properties": {"events": {"type": "array", "maxItems": MAX_BATCH, "items": EVENT_SCHEMA["items"]}},
            },
            "example": REPORT_EXAMPLE,
        }
    },
    "required": True,
}
REPORT_RESPONSES = {
    200: _response(
        "What became of each event: stored, duplicate, or rejected with its errors by field.",
        some_rejected={
            "accepted": 1,
            "duplicates": 0,
            "rejected": [
                {
                    "index": 1,
                    "event_id": "evt-7f3c2b",
                    "errors": {"input_tokens": ["A cache_storage event has no tokens: leave this out or send 0."]},
                }
            ],
        },
    ),
    400: _response(
        'The body is not JSON, or not `{"events": [...]}`. Nothing was stored.',
        not_json={"detail": "The body is not valid JSON."},
        no_events={"detail": 'Send {"events": [...]}.'},
    ),
    401: UNAUTHORIZED,
    413: _response(
        "The body or the batch is too large. Nothing was stored.",
        too_large={"detail": TOO_LARGE},
        too_many_events={"detail": f"At most {MAX_BATCH} events per call."},
    ),
    500: SERVER_ERROR,
}


# --- operations ------------------------------------------------------------------------------


@api.post(
    "/quota:check",
    response={200: CheckOut, 400: Problem, 401: Problem, 413: Problem, 422: Invalid, 500: ServerError},
    summary="May this request run now?",
    openapi_extra={"responses": CHECK_RESPONSES},
)
def quota_check(request: HttpRequest, payload: CheckIn):
    """Answers 200 with a decision. Admission counts the request against RPM, TPM (the estimate),
    RPD and the spend limit; `count_tokens` is always admitted and never counted. The TPM and spend
    estimates are reserved under `reservation_id` until the request's usage is reported with it."""
    decision = admission.check(
        raw_key=payload.api_key,
        model_id=payload.model,
        kind=payload.kind,
        estimated_input_tokens=payload.estimated_input_tokens,
    )
    # Serialised directly: the decision already has the documented shape (CheckOut), and this is
    # the hottest path of the fleet.
    return HttpResponse(orjson.dumps({**EMPTY_DECISION, **decision}), content_type="application/json")


EMPTY_DECISION = {"key_id": None, "project_id": None, "tier": None, "limits": [], "reservation_id": None, "error": None}


@api.post(
    "/usage:report",
    response={200: ReportOut, 400: Problem, 401: Problem, 413: Problem, 500: ServerError},
    summary="Report usage events (idempotent by event_id)",
    openapi_extra={"requestBody": REPORT_BODY, "responses": REPORT_RESPONSES},
)
def usage_report(request: HttpRequest):
    """Up to 1,000 events. Valid events are kept when others are rejected; a replayed event id
    is a duplicate and changes nothing. Cache storage (kind `cache_storage`) is rated and rolled up
    but is not a request: it adds nothing to request counts."""
    valid = valid_events(request.body)  # at most MAX_BODY_BYTES: FleetApiMiddleware read it
    if valid is not None:  # the usual case: every event valid, read in one pass
        report = ingest(valid, reporter=request.auth, validated=True)  # request.auth: the fleet token (FleetTokenAuth)
        return _report_response(report)
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        return Status(400, {"detail": "The body is not valid JSON."})
    events = body.get("events") if isinstance(body, dict) else None
    if not isinstance(events, list):
        return Status(400, {"detail": 'Send {"events": [...]}.'})
    if len(events) > MAX_BATCH:
        return Status(413, {"detail": f"At most {MAX_BATCH} events per call."})
    return _report_response(ingest(events, reporter=request.auth))


def _report_response(report) -> HttpResponse:
    return HttpResponse(
        orjson.dumps({"accepted": report.accepted, "duplicates": report.duplicates, "rejected": report.rejected}),
        content_type="application/json",
    )
