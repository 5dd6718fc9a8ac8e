"""The console's URLs plus a view that logs and then fails, for the request-log tests."""

import logging

from django.urls import path

from studio.urls import urlpatterns as console_urlpatterns


def fail(request):
    logging.getLogger("studio.tests").warning("about to fail")
    raise RuntimeError("boom")


urlpatterns = [*console_urlpatterns, path("fail/", fail)]
