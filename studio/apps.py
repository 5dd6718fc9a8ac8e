from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules
from django.utils.translation import gettext_lazy as _


class StudioConfig(AppConfig):
    name = "studio"
    verbose_name = _("Studio")

    def ready(self):
        # Every app's jobs.py registers its jobs with the job runner (the web processes queue some).
        autodiscover_modules("jobs")
