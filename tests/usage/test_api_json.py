"""The fleet API answers in JSON, always: body limits, unknown routes, server errors, strict
integers, and an OpenAPI document that states every answer."""

import io
import json
import logging
import re

import jsonschema
import pytest
from django.db import connection
from openapi_spec_validator import validate as validate_openapi

from usage.admission import TIER_SUFFIX, quota_ids
from usage.middleware import MAX_BODY_BYTES
from usage.models import FleetToken, UsageEvent

TOO_LARGE = {"detail": "Request body too large: at most 4194304 bytes."}


@pytest.fixture
def fleet(db):
    _, raw = FleetToken.issue(name="fleet-a")
    return raw


def send(client, path, body: bytes, token, *, chunked=False, method="post", **headers):
    """POST `body` as JSON, with a Content-Length, or chunked as gunicorn passes it on: no
    Content-Length, the decoded body in a stream that ends where it ends."""
    extra = {"HTTP_AUTHORIZATION": f"Bearer {token}", **headers}
    if chunked:
        extra.update(
            {
                "CONTENT_TYPE": "application/json",
                "HTTP_TRANSFER_ENCODING": "chunked",
                "wsgi.input": io.BytesIO(body),
                "wsgi.input_terminated": True,
            }
        )
        return client.generic(method.upper(), path, b"", **extra)
    return client.generic(method.upper(), path, body, content_type="application/json", **extra)


def padded(document: dict, size: int) -> bytes:
    """`document` as JSON, padded with whitespace to exactly `size` bytes."""
    text = json.dumps(document).encode()
    return text[:-1] + b" " * (size - len(text)) + text[-1:]


def assert_json(response, status: int, body: dict):
    assert (response.status_code, response["Content-Type"].split(";")[0], response.json()) == (
        status,
        "application/json",
        body,
    )


# Body limit


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("path", ["/api/v1/usage:report", "/api/v1/quota:check"])
def test_a_body_over_the_limit_is_a_json_413_and_stores_nothing(client, fleet, paid_key, event, path, chunked):
    key, _ = paid_key
    body = padded({"events": [event(key)]}, MAX_BODY_BYTES + 1)

    response = send(client, path, body, fleet, chunked=chunked)

    assert_json(response, 413, TOO_LARGE)
    assert not UsageEvent.objects.exists()


def test_a_declared_length_over_the_limit_is_refused_before_reading(client, fleet):
    response = send(client, "/api/v1/usage:report", b'{"events": []}', fleet, CONTENT_LENGTH=str(MAX_BODY_BYTES + 1))

    assert_json(response, 413, TOO_LARGE)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_between_djangos_upload_limit_and_the_apis_is_accepted(
    client, fleet, paid_key, event, settings, chunked
):
    key, _ = paid_key
    size = 3 * 1024 * 1024
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE < size < MAX_BODY_BYTES
    body = padded({"events": [event(key, event_id="big")]}, size)

    response = send(client, "/api/v1/usage:report", body, fleet, chunked=chunked)

    assert_json(response, 200, {"accepted": 1, "duplicates": 0, "rejected": []})
    assert list(UsageEvent.objects.values_list("event_id", flat=True)) == ["big"]


def test_a_body_of_exactly_the_limit_is_read(client, fleet, paid_key):
    _, raw = paid_key
    body = padded({"api_key": raw, "model": "gemini-2.5-flash", "estimated_input_tokens": 5}, MAX_BODY_BYTES)

    response = send(client, "/api/v1/quota:check", body, fleet, chunked=True)

    assert (response.status_code, response.json()["allowed"]) == (200, True)


# Routes and methods


@pytest.mark.parametrize(
    ("method", "path", "status", "body"),
    [
        ("get", "/api/v1/nothing-here", 404, {"detail": "Not Found."}),
        ("post", "/api/v1/", 404, {"detail": "Not Found."}),
        ("get", "/api/v1/quota:check", 405, {"detail": "Method Not Allowed."}),
        ("delete", "/api/v1/usage:report", 405, {"detail": "Method Not Allowed."}),
    ],
)
def test_unknown_routes_and_wrong_methods_answer_json(client, fleet, method, path, status, body):
    response = getattr(client, method)(path, headers={"Authorization": f"Bearer {fleet}"})

    assert_json(response, status, body)
    if status == 405:
        assert response["Allow"] == "POST"


def test_a_wrong_fleet_token_is_a_json_401(client, db):
    response = send(client, "/api/v1/usage:report", b'{"events": []}', "flt_wrong")

    assert_json(response, 401, {"detail": "Unauthorized"})


def test_pages_outside_the_api_keep_their_html_errors(client, db):
    response = client.get("/no-such-page/")

    assert (response.status_code, response["Content-Type"]) == (404, "text/html; charset=utf-8")


# Server errors


def test_an_unexpected_error_is_a_json_500_whose_error_id_is_in_the_log(client, fleet, paid_key, event, caplog):
    key, _ = paid_key
    with connection.cursor() as cursor:  # a real fault: the events' table is gone (the test's transaction restores it)
        cursor.execute(f"DROP TABLE {UsageEvent._meta.db_table}")

    with caplog.at_level(logging.ERROR, logger="usage.api"):
        response = send(client, "/api/v1/usage:report", json.dumps({"events": [event(key)]}).encode(), fleet)

    error_id = response.json()["error_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", error_id)
    assert_json(response, 500, {"detail": f"Internal error (error id {error_id}).", "error_id": error_id})
    assert response["X-Request-ID"] == error_id  # the request id is the error id
    [record] = [r for r in caplog.records if r.name == "usage.api"]
    assert (record.levelname, record.error_id, record.getMessage()) == (
        "ERROR",
        error_id,
        f"fleet API: POST /api/v1/usage:report failed, error id {error_id}",
    )
    assert UsageEvent._meta.db_table in str(record.exc_info[1])  # the real cause, with its traceback
    assert not any(r.levelname == "WARNING" and r.name == "usage.ingest" for r in caplog.records)  # not retried


# quota:check takes integers only


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (True, "Input should be a valid integer"),
        ("5", "Input should be a valid integer"),
        (5.0, "Input should be a valid integer"),
        (None, "Input should be a valid integer"),
        (-1, "Input should be greater than or equal to 0"),
        (10_000_001, "Input should be less than or equal to 10000000"),
    ],
)
def test_quota_check_takes_token_counts_as_integers_only_and_counts_nothing_else(
    client, fleet, free_key, tokens, message
):
    _, raw = free_key
    body = {"api_key": raw, "model": "gemini-2.5-flash", "estimated_input_tokens": tokens}

    refused = send(client, "/api/v1/quota:check", json.dumps(body).encode(), fleet)
    admitted = send(client, "/api/v1/quota:check", json.dumps({**body, "estimated_input_tokens": 5}).encode(), fleet)

    assert_json(
        refused, 422, {"detail": "The request body is not valid.", "errors": {"estimated_input_tokens": [message]}}
    )
    assert [(q["limit"], q["remaining"]) for q in admitted.json()["limits"]] == [
        (10, 9),
        (250_000, 249_995),
        (250, 249),
    ]


def test_quota_check_names_every_invalid_field(client, fleet):
    body = {"model": 7, "kind": "cache_storage", "estimated_input_tokens": "many"}

    response = send(client, "/api/v1/quota:check", json.dumps(body).encode(), fleet)

    assert_json(
        response,
        422,
        {
            "detail": "The request body is not valid.",
            "errors": {
                "api_key": ["Field required"],
                "model": ["Input should be a valid string"],
                "kind": ["Input should be 'generate', 'count_tokens' or 'batch'"],
                "estimated_input_tokens": ["Input should be a valid integer"],
            },
        },
    )


@pytest.mark.parametrize("body", [b"not json", b""])
def test_quota_check_with_no_json_body(client, fleet, body):
    response = send(client, "/api/v1/quota:check", body, fleet)

    expected = (
        (400, {"detail": "Cannot parse request body"})
        if body
        else (422, {"detail": "The request body is not valid.", "errors": {"body": ["Field required"]}})
    )
    assert_json(response, *expected)


# The OpenAPI document

STATUSES = {
    "/api/v1/quota:check": {"200", "400", "401", "413", "422", "500"},
    "/api/v1/usage:report": {"200", "400", "401", "413", "500"},
}
DENIALS = {
    "API_KEY_INVALID": (400, "INVALID_ARGUMENT"),
    "MODEL_NOT_FOUND": (404, "NOT_FOUND"),
    "BILLING_DISABLED": (403, "PERMISSION_DENIED"),
    "MODEL_NOT_AVAILABLE_ON_TIER": (403, "PERMISSION_DENIED"),
    "RATE_LIMIT_EXCEEDED": (429, "RESOURCE_EXHAUSTED"),
}


@pytest.fixture
def document(client, db):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    return response.json()


def conforms(document: dict, schema: dict, value) -> None:
    """Validate `value` against `schema`, whose references point into the document's components."""
    jsonschema.Draft202012Validator({**schema, "components": document["components"]}).validate(value)


def test_the_openapi_document_is_valid(document):
    validate_openapi(document)

    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == set(STATUSES)
    assert document["components"]["securitySchemes"] == {"FleetTokenAuth": {"type": "http", "scheme": "bearer"}}


def test_every_response_of_every_operation_is_documented_with_examples_that_fit_its_schema(document):
    for path, statuses in STATUSES.items():
        responses = document["paths"][path]["post"]["responses"]
        assert set(responses) == statuses, path
        for status, response in responses.items():
            content = response["content"]["application/json"]
            assert response["description"] and content["examples"], (path, status)
            for name, example in content["examples"].items():
                try:
                    conforms(document, content["schema"], example["value"])
                except jsonschema.ValidationError as error:
                    pytest.fail(f"{path} {status} example {name}: {error.message}")


def test_every_denial_reason_is_documented_with_its_code_and_an_example(document):
    error = document["components"]["schemas"]["ErrorOut"]["properties"]
    examples = document["paths"]["/api/v1/quota:check"]["post"]["responses"]["200"]["content"]["application/json"][
        "examples"
    ]

    assert error["reason"]["enum"] == list(DENIALS)
    assert all(f"`{reason}` ({code})" in error["reason"]["description"] for reason, (code, _) in DENIALS.items())
    assert {
        e["value"]["error"]["reason"]: (e["value"]["error"]["code"], e["value"]["error"]["status"])
        for e in examples.values()
        if e["value"]["error"]
    } == DENIALS
    assert examples["allowed"]["value"]["allowed"] is True


def test_quota_ids_units_and_money_are_stated(document):
    schemas = document["components"]["schemas"]
    limit = schemas["LimitOut"]["properties"]
    every_quota_id = [quota_id for tier in TIER_SUFFIX for quota_id in quota_ids(tier).values()]

    assert all(re.fullmatch(limit["quota_id"]["pattern"], quota_id) for quota_id in every_quota_id)
    assert len(every_quota_id) == 16
    assert limit["unit"]["enum"] == ["requests", "tokens", "micro_usd"]
    assert "1 USD = 1,000,000 micro-USD" in limit["unit"]["description"]
    assert "Seconds" in limit["reset_seconds"]["description"]
    allowed = document["paths"]["/api/v1/quota:check"]["post"]["responses"]["200"]["content"]["application/json"][
        "examples"
    ]["allowed"]["value"]
    assert allowed["limits"][-1] == {
        "quota_id": "GenerateSpendPer10MinutesPerProject-Tier1",
        "limit": 10_000_000,
        "remaining": 9_999_640,
        "unit": "micro_usd",
        "reset_seconds": 600,
    }


UNITS = {
    "input_tokens": "tokens",
    "output_tokens": "tokens",
    "cached_tokens": "tokens",
    "audio_input_tokens": "tokens",
    "cached_audio_tokens": "tokens",
    "cache_token_hours": "token-hours",
    "status_code": "HTTP status",
    "occurred_at": "RFC 3339",
}


def test_every_event_field_is_described_with_its_unit(document):
    schemas = document["components"]["schemas"]
    body = document["paths"]["/api/v1/usage:report"]["post"]["requestBody"]["content"]["application/json"]
    events = body["schema"]["properties"]["events"]

    assert events["maxItems"] == 1000
    assert events["items"]["discriminator"]["propertyName"] == "kind"
    assert set(events["items"]["discriminator"]["mapping"]) == {"generate", "count_tokens", "batch", "cache_storage"}
    for name in ("RequestEventIn", "StorageEventIn"):
        properties = schemas[name]["properties"]
        assert [field for field, schema in properties.items() if not schema.get("description")] == [], name
        for field, unit in UNITS.items():
            if field in properties:
                assert unit in properties[field]["description"], (name, field)
    conforms(document, body["schema"], body["example"])
    # Storage is not a request: no status, and never admitted, so no reservation.
    assert set(schemas["StorageEventIn"]["properties"]) == set(schemas["RequestEventIn"]["properties"]) - {
        "status_code",
        "reservation_id",
    }
