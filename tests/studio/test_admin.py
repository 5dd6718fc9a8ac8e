import pytest

from studio.models import AuditEvent
from tests.factories import make_user


@pytest.fixture
def admin_client(client, db):
    client.force_login(make_user("admin@example.com", is_staff=True, is_superuser=True))
    return client


@pytest.mark.parametrize("model", ["user", "project", "apikey", "auditevent"])
def test_admin_changelists_load(admin_client, key, model):
    response = admin_client.get(f"/admin/studio/{model}/")

    assert response.status_code == 200
    assert "result_list" in response.content.decode()


def test_admin_never_shows_the_key_hash_and_cannot_add_or_delete_keys(admin_client, key):
    html = admin_client.get(f"/admin/studio/apikey/{key.pk}/change/").content.decode()

    assert key.secret_hash not in html
    assert admin_client.get("/admin/studio/apikey/add/").status_code == 403
    assert admin_client.get(f"/admin/studio/apikey/{key.pk}/delete/").status_code == 403


def test_admin_search_finds_a_key_by_prefix(admin_client, key):
    html = admin_client.get(f"/admin/studio/apikey/?q={key.prefix}").content.decode()

    assert "\n1 API key\n" in html
    assert key.masked in html


def test_audit_log_is_read_only_in_the_admin(admin_client, key):
    event = AuditEvent.objects.get(action="api_key.create")

    assert admin_client.post(f"/admin/studio/auditevent/{event.pk}/change/", {"reason": "x"}).status_code == 403
    assert admin_client.get(f"/admin/studio/auditevent/{event.pk}/delete/").status_code == 403
