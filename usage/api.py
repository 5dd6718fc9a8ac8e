"""The serving-fleet JSON API under /api/v1/ (django-ninja; OpenAPI at /api/v1/openapi.json)."""

import time
from typing import Literal

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI, Schema, Status
from ninja.security import HttpBearer
from pydantic import Field

from usage import admission
from usage.ingest import EVENT, MAX_BATCH, MAX_TOKENS, ingest
from usage.models import FleetToken

MAX_BODY_BYTES = 4 * 1024 * 1024


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
        found = FleetToken.objects.authenticate(token)
        if found is not None:
            if len(_valid_tokens) > 1000:
                _valid_tokens.clear()
            _valid_tokens[token] = (now + settings.FLEET_TOKEN_CACHE_SECONDS, found)
        return found


_valid_tokens: dict[str, tuple[float, FleetToken]] = {}


api = NinjaAPI(
    title="Studio Console fleet API",
    version="1",
    description="Admission (quota:check) and metering (usage:report) for the serving fleet.",
    auth=FleetTokenAuth(),
    urls_namespace="fleet-api",
    docs_url=None,  # the interactive docs load scripts from a CDN, which our CSP forbids
)


class CheckIn(Schema):
    api_key: str = Field(max_length=200, description="The API key as the end user sent it.")
    model: str = Field(max_length=64, examples=["gemini-2.5-flash"])
    kind: Literal["generate", "count_tokens", "batch"] = "generate"
    estimated_input_tokens: int = Field(0, ge=0, le=MAX_TOKENS)


class LimitOut(Schema):
    quota_id: str
    limit: int
    remaining: int
    reset_seconds: int


class ErrorOut(Schema):
    code: int
    status: str
    reason: str
    message: str
    quota_id: str | None = None
    limit: int | None = None
    retry_delay_seconds: int | None = None


class CheckOut(Schema):
    allowed: bool
    key_id: str | None = None
    project_id: str | None = None
    tier: str | None = None
    limits: list[LimitOut] = []
    error: ErrorOut | None = None


@api.post("/quota:check", response=CheckOut, summary="May this request run now?")
def quota_check(request: HttpRequest, payload: CheckIn):
    """Answers 200 with a decision. Admission counts the request against RPM, TPM (the estimate),
    RPD and the spend limit; `count_tokens` is always admitted and never counted."""
    decision = admission.check(
        raw_key=payload.api_key,
        model_id=payload.model,
        kind=payload.kind,
        estimated_input_tokens=payload.estimated_input_tokens,
    )
    # Serialised directly: the decision already has the documented shape (CheckOut), and this is
    # the hottest path of the fleet.
    return HttpResponse(orjson.dumps({**EMPTY_DECISION, **decision}), content_type="application/json")


EMPTY_DECISION = {"key_id": None, "project_id": None, "tier": None, "limits": [], "error": None}


class RejectedOut(Schema):
    index: int
    event_id: str | None
    errors: dict[str, list[str]]


class ReportOut(Schema):
    accepted: int
    duplicates: int
    rejected: list[RejectedOut]


class Problem(Schema):
    detail: str


REPORT_BODY = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["events"],
                "properties": {"events": {"type": "array", "maxItems": MAX_BATCH, "items": EVENT.json_schema()}},
            }
        }
    },
    "required": True,
}


@api.post(
    "/usage:report",
    response={200: ReportOut, 400: Problem, 413: Problem},
    summary="Report usage events (idempotent by event_id)",
    openapi_extra={"requestBody": REPORT_BODY},
)
def usage_report(request: HttpRequest):
    """Up to 1,000 events. Valid events are kept when others are rejected; a replayed event id
    is a duplicate and changes nothing."""
    if len(request.body) > MAX_BODY_BYTES:
        return Status(413, {"detail": "Request body too large."})
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        return Status(400, {"detail": "The body is not valid JSON."})
    events = body.get("events") if isinstance(body, dict) else None
    if not isinstance(events, list):
        return Status(400, {"detail": 'Send {"events": [...]}.'})
    if len(events) > MAX_BATCH:
        return Status(413, {"detail": f"At most {MAX_BATCH} events per call."})
    report = ingest(events)
    return HttpResponse(
        orjson.dumps({"accepted": report.accepted, "duplicates": report.duplicates, "rejected": report.rejected}),
        content_type="application/json",
    )
