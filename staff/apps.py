from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _


class StaffConfig(AppConfig):
    name = "staff"
    verbose_name = _("Staff console")

    def ready(self):
        from staff import roles

        # After every migrate (tests included): the groups hold exactly the permissions staff.roles lists.
        post_migrate.connect(roles.on_post_migrate, sender=self)
