"""The WSGI entry (gunicorn studio.wsgi): the fleet API (/api/v1/) through its own short middleware stack
(settings.FLEET_MIDDLEWARE), everything else through the console's (settings.MIDDLEWARE).

quota:check is the fleet's hottest path; the console's sessions, locale, CSRF, authentication, messages, CSP,
htmx and sign-in throttling middleware did nothing for it but cost about a third of its CPU (bench/README.md).
"""

import gc
import os

from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
FLEET_PREFIX = "/api/v1/"

console = get_wsgi_application()  # sets Django up


class FleetHandler(WSGIHandler):
    """A request handler whose middleware chain is settings.FLEET_MIDDLEWARE, resolving in studio.fleet_urls."""

    urlconf = "studio.fleet_urls"

    def get_response(self, request):
        request.urlconf = self.urlconf  # read by BaseHandler.resolve_request
        return super().get_response(request)

    def load_middleware(self, is_async=False):
        # BaseHandler builds its chain from settings.MIDDLEWARE; it is built once, here, at import, before any
        # request is served (no other thread reads the setting meanwhile).
        console_middleware = settings.MIDDLEWARE
        settings.MIDDLEWARE = settings.FLEET_MIDDLEWARE
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = console_middleware


fleet = FleetHandler()

# What was loaded until now (Django, the apps, the URLconfs: ~100,000 objects) lives as long as the process: out of
# the garbage collector's sight, its full collections take ~1 ms instead of ~70 ms. A usage:report batch allocates
# enough to cause one every ~25 batches: ~2.7 ms of CPU per 1,000-event batch (bench/README.md).
gc.collect()  # nothing start-up left unreachable is kept for the life of the process
gc.freeze()


def application(environ, start_response):
    if environ.get("PATH_INFO", "").startswith(FLEET_PREFIX):
        return fleet(environ, start_response)
    return console(environ, start_response)
