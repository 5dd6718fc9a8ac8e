"""The second factor's devices in the admin: seen and deleted (a lost phone), never added or edited there, and
every deletion audited like any admin edit (X10). Enrolment happens only on the staff console's own pages."""

from django.contrib import admin
from django_otp.plugins.otp_static import admin as static_admin
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp import admin as totp_admin
from django_otp.plugins.otp_totp.models import TOTPDevice

from studio.admin import AuditedAdmin


class DeleteOnly:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


# django-otp's own admin modules (imported above) registered plain ModelAdmins; these replace them.
admin.site.unregister(TOTPDevice)
admin.site.unregister(StaticDevice)


@admin.register(TOTPDevice)
class TOTPDeviceAdmin(DeleteOnly, AuditedAdmin, totp_admin.TOTPDeviceAdmin):
    pass


@admin.register(StaticDevice)
class StaticDeviceAdmin(DeleteOnly, AuditedAdmin, static_admin.StaticDeviceAdmin):
    pass
