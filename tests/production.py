"""Environments for subprocesses that run with production settings (DEBUG=0)."""

import os

# Proper-looking secrets (random, 43+ characters): what a production environment has.
SECRET_KEY = "Tq3-vX9_kLm2Rz8wYp4sNb7cHd1fGj6eUa5oIi0tQrWx"
API_KEY_PEPPER = "pP7_zL2-mK9xQw4rTy8uVb3nCs6dFg1hJk5aSe0oWq"


def production_environment(**variables: str) -> dict[str, str]:
    """A clean environment: DEBUG=0, proper secrets, then `variables` (which may replace them)."""
    return {
        "PATH": os.environ["PATH"],
        "DEBUG": "0",
        "SECRET_KEY": SECRET_KEY,
        "API_KEY_PEPPER": API_KEY_PEPPER,
        # Whitenoise warns that STATIC_ROOT does not exist: nothing here runs collectstatic.
        "PYTHONWARNINGS": "ignore:No directory at:UserWarning",
        **variables,
    }
