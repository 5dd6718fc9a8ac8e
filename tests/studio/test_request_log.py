"""One log line per request (studio.middleware.RequestLogMiddleware), with a request id that every
record written during the request carries; LOG_FORMAT=json for machines."""

import io
import json
import logging
import re
import subprocess
import sys

import pytest
from django.conf import settings

from studio.middleware import RequestIdFilter
from studio.models import Tier
from tests.factories import make_key, make_project, make_user
from tests.production import production_environment
from usage.models import FleetToken

GENERATED_ID = re.compile(r"[0-9a-f]{32}")


def request_lines(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "studio.request"]


def fields(record: logging.LogRecord) -> dict:
    return {name: getattr(record, name) for name in ("method", "path", "status", "request_id", "user_id")}


@pytest.fixture
def console_log():
    """What the configured console handler (text format) writes during the test."""
    [handler] = [h for h in logging.getLogger().handlers if any(isinstance(f, RequestIdFilter) for f in h.filters)]
    written = io.StringIO()
    previous = handler.setStream(written)
    yield written
    handler.setStream(previous)


def test_a_signed_in_page_logs_one_line_with_the_callers_request_id(client_for, owner, caplog):
    client = client_for(owner)

    with caplog.at_level(logging.INFO, logger="studio.request"):
        response = client.get("/api-keys/?sort=name", headers={"X-Request-ID": "lb-7f3a.1_x"})

    assert response.status_code == 200
    assert response["X-Request-ID"] == "lb-7f3a.1_x"
    [line] = request_lines(caplog)
    assert fields(line) == {
        "method": "GET",
        "path": "/api-keys/",
        "status": 200,
        "request_id": "lb-7f3a.1_x",
        "user_id": owner.pk,
    }
    assert isinstance(line.duration_ms, float)
    assert line.getMessage() == f"GET /api-keys/ 200 {line.duration_ms:.1f}ms user={owner.pk}"
    assert line.levelname == "INFO"


@pytest.mark.parametrize("supplied", [None, "", "has space", "a" * 65, "semi;colon", "ünïcode"])
def test_a_404_logs_one_line_with_a_new_request_id_and_no_query_string(client, db, caplog, supplied):
    headers = {} if supplied is None else {"X-Request-ID": supplied}

    with caplog.at_level(logging.INFO, logger="studio.request"):
        response = client.get("/no-such-page/?api_key=AIzaSyLeaked", headers=headers)

    assert response.status_code == 404
    request_id = response["X-Request-ID"]
    assert GENERATED_ID.fullmatch(request_id)
    [line] = request_lines(caplog)
    assert fields(line) == {
        "method": "GET",
        "path": "/no-such-page/",
        "status": 404,
        "request_id": request_id,
        "user_id": None,
    }
    assert line.getMessage() == f"GET /no-such-page/ 404 {line.duration_ms:.1f}ms user=-"
    assert "AIzaSyLeaked" not in caplog.text


def test_a_request_id_of_64_sane_characters_is_kept(client, db):
    sane = "Az09._-" + "x" * 57

    assert client.get("/healthz", headers={"X-Request-ID": sane})["X-Request-ID"] == sane


def test_a_fleet_api_call_logs_one_line_and_never_the_body(client, db, caplog):
    _, raw_key = make_key(make_project(make_user(), tier=Tier.TIER_1), name="Fleet-called key")
    _, token = FleetToken.issue(name="fleet-a")
    body = {"api_key": raw_key, "model": "gemini-2.5-flash", "kind": "count_tokens", "estimated_input_tokens": 7}

    with caplog.at_level(logging.DEBUG):
        response = client.post(
            "/api/v1/quota:check",
            json.dumps(body),
            content_type="application/json",
            headers={"Authorization": f"Bearer {token}", "X-Request-ID": "fleet-0001"},
        )

    assert (response.status_code, response.json()["allowed"]) == (200, True)
    assert response["X-Request-ID"] == "fleet-0001"
    [line] = request_lines(caplog)
    assert fields(line) == {
        "method": "POST",
        "path": "/api/v1/quota:check",
        "status": 200,
        "request_id": "fleet-0001",
        "user_id": None,
    }
    everything = caplog.text + repr([record.__dict__ for record in caplog.records])
    assert raw_key not in everything
    assert token not in everything


def test_a_token_in_the_url_is_not_logged(client, db, caplog):
    with caplog.at_level(logging.INFO, logger="studio.request"):
        response = client.get("/accounts/reset/MQ/c4t-8f2e1a9b7d6c5e4f3a2b/")

    assert response.status_code == 200  # the "invalid link" page
    [line] = request_lines(caplog)
    assert line.path == "/accounts/reset/MQ/*****/"
    assert "8f2e1a9b" not in caplog.text


@pytest.mark.urls("tests.studio.failing_urls")
def test_every_record_written_during_a_request_carries_its_id(client, console_log):
    client.raise_request_exception = False

    response = client.get("/fail/?card=4242424242424242", headers={"X-Request-ID": "req-42"})

    assert response.status_code == 500
    # "<date> <time> LEVEL logger [request id] message"; the traceback's lines do not match.
    lines = re.findall(r"^\S+ \S+ (\w+) (\S+) \[(\S+)\] (.*)$", console_log.getvalue(), re.MULTILINE)
    assert [(level, name, rid, re.sub(r"\d+\.\dms", "…ms", message)) for level, name, rid, message in lines] == [
        ("WARNING", "studio.tests", "req-42", "about to fail"),
        ("ERROR", "django.request", "req-42", "Internal Server Error: /fail/"),
        ("INFO", "studio.request", "req-42", "GET /fail/ 500 …ms user=-"),
    ]
    assert "RuntimeError: boom" in console_log.getvalue()
    assert "4242424242424242" not in console_log.getvalue()


def test_outside_a_request_records_carry_a_dash(console_log):
    logging.getLogger("studio.tests").warning("between requests")

    assert console_log.getvalue().split(" ", 2)[2] == "WARNING studio.tests [-] between requests\n"


JSON_SCRIPT = """
import django
from django.test import Client
from django.test.utils import override_settings

django.setup()
with override_settings(ROOT_URLCONF="tests.studio.failing_urls"):
    Client(raise_request_exception=False).get(
        "/fail/?card=4242424242424242", headers={"X-Request-ID": "req-json-1"}, secure=True
    )
"""


def test_log_format_json_writes_one_object_per_line():
    result = subprocess.run(
        [sys.executable, "-c", JSON_SCRIPT],
        cwd=settings.BASE_DIR,
        env=production_environment(DJANGO_SETTINGS_MODULE="studio.settings", LOG_FORMAT="json"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(r["name"], r["levelname"], r["request_id"]) for r in records] == [
        ("studio.tests", "WARNING", "req-json-1"),
        ("django.request", "ERROR", "req-json-1"),
        ("studio.request", "INFO", "req-json-1"),
    ]
    request_line = records[2]
    assert sorted(request_line) == [
        "asctime",
        "duration_ms",
        "levelname",
        "message",
        "method",
        "name",
        "path",
        "request_id",
        "status",
        "user_id",
    ]
    assert {k: request_line[k] for k in ("method", "path", "status", "user_id")} == {
        "method": "GET",
        "path": "/fail/",
        "status": 500,
        "user_id": None,
    }
    assert request_line["message"] == f"GET /fail/ 500 {request_line['duration_ms']:.1f}ms user=-"
    assert records[1]["message"] == "Internal Server Error: /fail/"
    assert records[1]["status_code"] == 500
    assert "RuntimeError: boom" in records[1]["exc_info"]
    assert "request" not in records[1]
    assert "4242424242424242" not in result.stderr
