"""A lost authenticator is deleted in the admin: never added or edited there, and the deletion is audited."""

from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from studio.models import ActorKind, AuditEvent


def test_a_superuser_deletes_a_lost_authenticator_and_the_deletion_is_audited(client, superuser, support):
    device = TOTPDevice.objects.create(user=support, name="Phone", confirmed=True)
    client.force_login(superuser)

    response = client.post(f"/admin/otp_totp/totpdevice/{device.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not TOTPDevice.objects.exists()
    event = AuditEvent.objects.get(action="totp_device.admin_delete")
    assert (event.actor, event.actor_kind, event.object_type, event.object_id) == (
        superuser,
        ActorKind.STAFF,
        "otp_totp.totpdevice",
        str(device.pk),
    )
    assert "key" not in event.before


def test_devices_cannot_be_added_or_edited_in_the_admin(client, superuser, support):
    totp = TOTPDevice.objects.create(user=support, name="Phone", confirmed=True)
    codes = StaticDevice.objects.create(user=support, name="Backup codes", confirmed=True)
    client.force_login(superuser)

    assert client.get("/admin/otp_totp/totpdevice/add/").status_code == 403
    assert client.get("/admin/otp_static/staticdevice/add/").status_code == 403
    before = totp.key
    client.post(f"/admin/otp_totp/totpdevice/{totp.pk}/change/", {"user": support.pk, "name": "x", "key": "00"})
    totp.refresh_from_db()
    assert (totp.name, totp.key) == ("Phone", before)
    assert client.get(f"/admin/otp_static/staticdevice/{codes.pk}/change/").status_code == 200  # view only
