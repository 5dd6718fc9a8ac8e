"""PostgreSQL drops the connections of a running server (restart, failover, idle timeout): the
next requests of every worker are answered, none with a 500 (CONN_HEALTH_CHECKS).

The server is gunicorn with 2 sync workers, production settings and kept connections
(CONN_MAX_AGE=60), on TEST_SERVER_PORT (default: a free port). `CONN_HEALTH_CHECKS=0 pytest …`
passes the variable on to the server: the test then fails, which shows what it guards against.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest
from django.db import connection
from django.test import Client

from studio.models import Tier
from tests.factories import make_key, make_project, make_user
from tests.production import API_KEY_PEPPER, SECRET_KEY, production_environment
from usage.models import FleetToken

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WORKERS = 2
CONCURRENCY = 4  # more requests at once than workers: a busy sync worker leaves the next to the other
MAX_ROUNDS = 50


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def database_url() -> str:
    db = connection.settings_dict
    user = quote(db["USER"], safe="") + (f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else "")
    return f"postgres://{user}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def server_backends() -> set[int]:
    """The server's connections to the test database (every one but this test's own)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return {pid for (pid,) in cursor.fetchall()}


def terminate_server_backends() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture
def server(settings, transactional_db):
    """The base URL of a running gunicorn; stopped (and its log shown on failure) before the
    database is flushed."""
    port = int(os.environ.get("TEST_SERVER_PORT") or free_port())
    environment = production_environment(
        DJANGO_SETTINGS_MODULE="tests.reliability.server_settings",
        DATABASE_URL=database_url(),
        CONN_MAX_AGE="60",
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="0",
        LOG_LEVEL="WARNING",
    )
    if "CONN_HEALTH_CHECKS" in os.environ:
        environment["CONN_HEALTH_CHECKS"] = os.environ["CONN_HEALTH_CHECKS"]
    command = [sys.executable, "-m", "gunicorn", "studio.wsgi", f"--workers={WORKERS}", f"--bind=127.0.0.1:{port}"]
    command.append("--no-control-socket")  # the default one is per user: another gunicorn may hold it
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(command, cwd=settings.BASE_DIR, env=environment, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(url, process)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.seek(0)
            sys.stderr.write(log.read())  # pytest shows it when the test fails


def wait_until_up(url: str, process: subprocess.Popen) -> None:
    for _ in range(300):
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)  # a process starting: nothing to move a clock for
    pytest.fail("gunicorn did not answer /healthz")


def fetch(url: str, *, body: dict | None = None, headers: dict) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def until_every_worker_queried(send, *, known: set[int]) -> tuple[list[tuple[int, str]], set[int]]:
    """Sends requests, send(0)…send(CONCURRENCY - 1) at a time, until each worker has opened a
    connection that is not in `known`; returns the answers and the new connections."""
    answers = []
    for _ in range(MAX_ROUNDS):
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            answers += pool.map(send, range(CONCURRENCY))
        fresh = server_backends() - known
        if len(fresh) == WORKERS:
            return answers, fresh
    pytest.fail(f"after {len(answers)} requests, {len(server_backends() - known)} worker(s) had connected")


def test_no_500_after_postgresql_drops_the_servers_connections(server, settings):
    # The server's secrets: its session signatures and key hashes must match what is written here.
    settings.SECRET_KEY, settings.API_KEY_PEPPER = SECRET_KEY, API_KEY_PEPPER
    owner = make_user("reliable@example.com")
    _, raw_key = make_key(make_project(owner, tier=Tier.TIER_1), name="Reliable key")
    _, fleet_token = FleetToken.issue(name="reliability")
    client = Client()
    client.force_login(owner)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value

    def console_page(_=None):
        return fetch(f"{server}/api-keys/", headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={session}"})

    def quota_check(_=None):
        body = {"api_key": raw_key, "model": "gemini-2.5-flash", "kind": "count_tokens"}
        headers = {"Authorization": f"Bearer {fleet_token}", "Content-Type": "application/json"}
        return fetch(f"{server}/api/v1/quota:check", body=body, headers=headers)

    def mixed(n):
        return console_page() if n % 2 else quota_check()

    warm, first = until_every_worker_queried(mixed, known=set())
    terminate_server_backends()
    checks, second = until_every_worker_queried(quota_check, known=first)
    terminate_server_backends()
    pages, _ = until_every_worker_queried(console_page, known=first | second)

    phases = {"before": warm, "quota:check after": checks, "console page after": pages}
    assert {name: Counter(status for status, _ in answers) for name, answers in phases.items()} == {
        name: {200: len(answers)} for name, answers in phases.items()
    }
    assert {json.loads(text)["allowed"] for _, text in checks} == {True}
    assert all("Reliable key" in text for _, text in pages)
