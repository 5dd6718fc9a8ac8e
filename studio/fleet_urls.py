"""The URLs of the fleet entry (studio.wsgi.FleetHandler): the fleet API alone, so that resolving a quota:check
walks one pattern instead of the console's (about a tenth of a check's CPU through the whole URLconf)."""

from django.urls import path

from usage.api import api as fleet_api

urlpatterns = [path("api/v1/", fleet_api.urls)]
