"""/healthz and /readyz: for load balancers, without sessions, login or database access (healthz)."""

import logging
import socket

import pytest
from django.db import connections
from django.db.utils import load_backend
from django.urls import reverse

from studio.middleware import PROBE_PATHS


@pytest.fixture
def closed_port():
    """A local TCP port that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def database_down(closed_port, django_db_blocker):
    """The default connection points at a PostgreSQL server that does not answer."""
    configured = connections.configure_settings(
        {
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": "studio",
                "USER": "studio",
                "PASSWORD": "db-s3cret",
                "HOST": "127.0.0.1",
                "PORT": closed_port,
            }
        }
    )["default"]
    real = connections["default"]
    down = load_backend(configured["ENGINE"]).DatabaseWrapper(configured, "default")
    connections["default"] = down
    try:
        with django_db_blocker.unblock():
            yield
    finally:
        down.close()
        connections["default"] = real


def test_healthz_answers_ok_without_touching_database_session_or_cookies(client):
    # No `db` fixture: any database access (the session of the cookie sent along) would raise.
    client.cookies["sessionid"] = "s" * 32

    response = client.get("/healthz")

    assert (response.status_code, response.content, response["Content-Type"]) == (200, b"ok", "text/plain")
    assert response.cookies == {}
    assert response["Vary"] == "Accept-Language"
    assert response["Cache-Control"] == "max-age=0, no-cache, no-store, must-revalidate, private"


def test_the_probe_paths_are_the_health_urls():
    assert {reverse("healthz"), reverse("readyz")} == PROBE_PATHS


def test_healthz_answers_while_the_database_is_down(client, database_down):
    response = client.get("/healthz")

    assert (response.status_code, response.content) == (200, b"ok")


def test_readyz_is_ok_when_database_and_configured_redis_answer(client, db, settings, django_assert_num_queries):
    client.cookies["sessionid"] = "s" * 32

    with django_assert_num_queries(1):  # SELECT 1; the session is not loaded
        response = client.get("/readyz")

    expected_checks = {"database": "ok", "redis": "ok"} if settings.REDIS_URL else {"database": "ok"}
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": expected_checks, "failed": []}
    assert response.cookies == {}


def test_readyz_is_503_naming_redis_when_redis_is_down(client, db, settings, closed_port, caplog):
    settings.REDIS_URL = f"redis://:redis-s3cret@127.0.0.1:{closed_port}/3"

    with caplog.at_level(logging.WARNING, logger="studio.health"):
        response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "redis": "failed"},
        "failed": ["redis"],
    }
    assert [r.getMessage().split(": ")[:2] for r in caplog.records if r.name == "studio.health"] == [
        ["readiness", "Redis unavailable"]
    ]
    assert "redis-s3cret" not in response.content.decode() + caplog.text


def test_readyz_is_503_naming_the_database_when_it_is_down(client, database_down, settings, caplog):
    settings.REDIS_URL = ""

    with caplog.at_level(logging.WARNING, logger="studio.health"):
        response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "checks": {"database": "failed"}, "failed": ["database"]}
    assert "readiness: database unavailable: OperationalError" in caplog.text
    assert "db-s3cret" not in response.content.decode() + caplog.text


def test_readyz_names_both_when_both_are_down(client, database_down, settings, closed_port):
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port}/3"

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["failed"] == ["database", "redis"]


def test_probes_are_not_redirected_to_https(client, settings):
    settings.SECURE_SSL_REDIRECT = True

    assert client.get("/healthz").status_code == 200
    login = client.get("/accounts/login/")
    assert (login.status_code, login["Location"]) == (301, "https://testserver/accounts/login/")


def test_probes_need_no_login_and_refuse_writes(client):
    assert client.post("/healthz").status_code == 405
    assert client.head("/healthz").status_code == 200


def test_a_probe_for_a_host_not_in_allowed_hosts_is_refused(client, settings):
    # Documented in OPERATIONS ("ALLOWED_HOSTS"): probes must send a listed Host.
    settings.ALLOWED_HOSTS = ["console.example.com"]

    assert client.get("/healthz", headers={"host": "10.0.0.5"}).status_code == 400
    assert client.get("/healthz", headers={"host": "console.example.com"}).status_code == 200
