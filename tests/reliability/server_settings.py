"""Settings of the gunicorn server the reliability tests start: production settings (DEBUG=0 and
the environment), except static files, served without the manifest collectstatic would write."""

from studio.settings import *  # noqa: F403
from studio.settings import STORAGES

STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
