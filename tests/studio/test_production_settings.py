"""With DEBUG=0 the process refuses to start on missing, development or weak secrets."""

import os
import subprocess
import sys

import pytest
from django.conf import settings

from tests.production import API_KEY_PEPPER as GOOD_PEPPER
from tests.production import SECRET_KEY as GOOD_KEY

HOW = (
    "With DEBUG=0 it must be a random value of at least 32 characters; "
    'make one with: python -c "import secrets; print(secrets.token_urlsafe(50))"'
)
PREFIX = "django.core.exceptions.ImproperlyConfigured: "


def manage_check(**variables: str) -> subprocess.CompletedProcess:
    """`manage.py check` in a clean environment: DEBUG=0 and only the given variables."""
    environment = {"PATH": os.environ["PATH"], "DEBUG": "0", **variables}
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"API_KEY_PEPPER": GOOD_PEPPER}, f"SECRET_KEY is not set. {HOW}"),
        ({"SECRET_KEY": "", "API_KEY_PEPPER": GOOD_PEPPER}, f"SECRET_KEY is not set. {HOW}"),
        (
            {"SECRET_KEY": "dev-only-insecure-secret-key-do-not-use-in-production", "API_KEY_PEPPER": GOOD_PEPPER},
            f"SECRET_KEY is the development value. {HOW}",
        ),
        (
            {"SECRET_KEY": "django-insecure-" + GOOD_KEY, "API_KEY_PEPPER": GOOD_PEPPER},
            f"SECRET_KEY is the development value. {HOW}",
        ),
        (
            {"SECRET_KEY": GOOD_KEY[:31], "API_KEY_PEPPER": GOOD_PEPPER},
            f"SECRET_KEY is too weak (fewer than 32 characters, or fewer than 5 different ones). {HOW}",
        ),
        (
            {"SECRET_KEY": "abcd" * 20, "API_KEY_PEPPER": GOOD_PEPPER},
            f"SECRET_KEY is too weak (fewer than 32 characters, or fewer than 5 different ones). {HOW}",
        ),
        ({"SECRET_KEY": GOOD_KEY}, f"API_KEY_PEPPER is not set. {HOW}"),
        (
            {"SECRET_KEY": GOOD_KEY, "API_KEY_PEPPER": "dev-only-api-key-pepper"},
            f"API_KEY_PEPPER is the development value. {HOW}",
        ),
        (
            {"SECRET_KEY": GOOD_KEY, "API_KEY_PEPPER": "ci-pepper"},
            f"API_KEY_PEPPER is too weak (fewer than 32 characters, or fewer than 5 different ones). {HOW}",
        ),
        (
            {"SECRET_KEY": GOOD_KEY, "API_KEY_PEPPER": GOOD_KEY},
            "API_KEY_PEPPER must differ from SECRET_KEY: each is rotated on its own.",
        ),
    ],
)
def test_production_refuses_to_start_without_proper_secrets(variables, message):
    result = manage_check(**variables)

    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == PREFIX + message
    assert result.stdout == ""


def test_production_starts_with_proper_secrets():
    result = manage_check(SECRET_KEY=GOOD_KEY, API_KEY_PEPPER=GOOD_PEPPER)

    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "System check identified no issues (0 silenced).\n",
        "",
    )


def test_an_unknown_log_format_stops_the_process():
    result = manage_check(SECRET_KEY=GOOD_KEY, API_KEY_PEPPER=GOOD_PEPPER, LOG_FORMAT="xml")

    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == PREFIX + "LOG_FORMAT must be text or json, not 'xml'."
