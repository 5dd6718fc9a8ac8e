"""The WSGI entry (studio/wsgi.py) sends the fleet API through its own short middleware stack and the console
through the console's: called here as gunicorn calls it, with a WSGI environ."""

import gc
import io
import json
from contextlib import contextmanager

import pytest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections

from studio import wsgi
from usage.models import FleetToken


@contextmanager
def connections_kept():
    # As the test client does: the test's transaction (its connection) must outlive the request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def call(method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, dict, bytes]:
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/json",
        **{f"HTTP_{name.upper().replace('-', '_')}": value for name, value in (headers or {}).items()},
    }
    answer = {}

    def start_response(status, response_headers, exc_info=None):
        answer["status"], answer["headers"] = int(status.split()[0]), dict(response_headers)

    with connections_kept():
        chunks = wsgi.application(environ, start_response)
        content = b"".join(chunks)
        getattr(chunks, "close", lambda: None)()
    return answer["status"], answer["headers"], content


def test_the_entry_puts_what_it_loaded_out_of_the_garbage_collectors_sight():
    """studio.wsgi freezes the objects loaded at start (Django, the apps, the URLconfs), so that the full collections
    a usage:report batch causes do not walk them each time."""
    assert gc.get_freeze_count() > 50_000  # everything this process had loaded when it imported studio.wsgi
    assert gc.is_tracked(wsgi.fleet)
    assert all(tracked is not wsgi.fleet for tracked in gc.get_objects())  # frozen: no collection walks it


@pytest.fixture
def fleet(db):
    _, raw = FleetToken.issue(name="fleet-a")
    return raw


def test_quota_check_answers_through_the_fleet_stack_without_the_consoles_middleware(fleet, paid_key):
    _key, raw = paid_key
    body = json.dumps({"api_key": raw, "model": "gemini-2.5-flash", "kind": "generate", "estimated_input_tokens": 5})

    status, headers, content = call("POST", "/api/v1/quota:check", body.encode(), {"Authorization": f"Bearer {fleet}"})

    assert status == 200
    assert json.loads(content)["allowed"] is True
    assert headers["Content-Length"] == str(len(content))  # kept-alive clients need it (gunicorn would chunk)
    assert "X-Request-ID" in headers  # the request log's
    # None of the console's: no session cookie or Vary on it, no CSP, no frame options, no language.
    assert not {"Set-Cookie", "Content-Security-Policy", "X-Frame-Options", "Content-Language"} & set(headers)
    assert "Cookie" not in headers.get("Vary", "")


def test_the_fleet_stack_keeps_the_apis_json_errors(fleet):
    status, headers, content = call("POST", "/api/v1/nowhere", b"{}", {"Authorization": f"Bearer {fleet}"})
    assert (status, headers["Content-Type"], json.loads(content)) == (404, "application/json", {"detail": "Not Found."})
    assert headers["Content-Length"] == str(len(content))

    status, _headers, content = call("POST", "/api/v1/quota:check", b"{}")
    assert (status, json.loads(content)) == (401, {"detail": "Unauthorized"})


def test_the_console_keeps_its_own_stack(db):
    status, headers, _content = call("GET", "/accounts/login/")

    assert status == 200
    assert "Content-Security-Policy" in headers and headers["X-Frame-Options"] == "DENY"
    assert "csrftoken" in headers.get("Set-Cookie", "")
