"""The fleet API answers in JSON, always: its body limit, and no HTML error page under /api/v1/.

Django alone would answer an HTML 400 for a body above DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB), read
a chunked body as empty, and answer unknown routes and wrong methods with HTML or plain text.
"""

import logging
from http import HTTPStatus
from io import BytesIO
from uuid import uuid4

import orjson
from django.http import HttpRequest, HttpResponse

API_PREFIX = "/api/v1/"
MAX_BODY_BYTES = 4 * 1024 * 1024
READ_CHUNK = 64 * 1024

log = logging.getLogger(__name__)


def problem(status: int, detail: str, **more) -> HttpResponse:
    """The fleet API's error shape: {"detail": "…"} and, for some, more keys (error_id, errors)."""
    return HttpResponse(orjson.dumps({"detail": detail, **more}), status=status, content_type="application/json")


def too_large() -> HttpResponse:
    return problem(413, f"Request body too large: at most {MAX_BODY_BYTES} bytes.")


class FleetApiMiddleware:
    """For requests under API_PREFIX: read the body with the API's own limit (MAX_BODY_BYTES, 413
    beyond it, whatever the Content-Length says or whether there is one), and turn any error
    response that is not JSON (Django's 404 page, a 405, a 500 from another middleware) into the
    API's error shape with the same status. Every answer says its Content-Length (as the console's
    CommonMiddleware does), so that the fleet's clients keep their connections without chunking."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        if not request.path_info.startswith(API_PREFIX):
            return self.get_response(request)
        if not read_body(request):
            return too_large()
        response = self.get_response(request)
        if response.status_code >= 400 and not response.get("Content-Type", "").startswith("application/json"):
            response = self._as_json(request, response)
        if not response.streaming and not response.has_header("Content-Length"):
            response.headers["Content-Length"] = str(len(response.content))
        return response

    @staticmethod
    def _as_json(request: HttpRequest, response: HttpResponse) -> HttpResponse:
        status = response.status_code
        if status >= 500:
            # Django has logged the exception already (django.request), with the same request id.
            error_id = getattr(request, "request_id", None) or uuid4().hex
            log.error("fleet API: %s %s answered %d, error id %s", request.method, request.path, status, error_id)
            return problem(status, f"Internal error (error id {error_id}).", error_id=error_id)
        try:
            detail = f"{HTTPStatus(status).phrase}."
        except ValueError:
            detail = "Error."
        answer = problem(status, detail)
        if "Allow" in response:
            answer["Allow"] = response["Allow"]
        return answer


def read_body(request: HttpRequest) -> bool:
    """Read the request's body into `request.body`, up to MAX_BODY_BYTES; False when it is larger.

    A declared length above the limit is refused before reading. Without a length (chunked
    transfer), the body is read from the server's stream, which gunicorn ends where the body ends
    (`wsgi.input_terminated`); Django would read it as empty.
    """
    meta = request.META
    if meta.get("CONTENT_LENGTH"):
        try:
            if int(meta["CONTENT_LENGTH"]) > MAX_BODY_BYTES:
                return False
        except ValueError:
            pass  # Django reads such a body as empty
        body = request.read()  # in one piece: Django's stream stops at the declared length
    elif "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower() and meta.get("wsgi.input_terminated"):
        chunks, size = [], 0
        while size <= MAX_BODY_BYTES and (chunk := meta["wsgi.input"].read(min(READ_CHUNK, MAX_BODY_BYTES + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_BODY_BYTES:
            return False
        body = b"".join(chunks)
    else:
        body = b""
    # What HttpRequest.body itself keeps once read: later readers (ninja, the views) get these
    # bytes, and Django's DATA_UPLOAD_MAX_MEMORY_SIZE no longer applies to the fleet API.
    request._body = body
    request._stream = BytesIO(body)
    return True
