"""Audit rows cannot be edited or deleted (X10), as ledger rows cannot: in Python (instance and QuerySet), and on
PostgreSQL by a trigger that refuses raw UPDATE and DELETE. People who acted are deactivated, never deleted."""

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.models import ProtectedError

from studio.models import ActorKind, AuditEvent, User
from tests.factories import make_user


@pytest.fixture
def event(owner, project):
    return AuditEvent.record(actor=owner, action="project.spend_cap", obj=project, after={"monthly_spend_cap": "5"})


def _unchanged(event):
    row = AuditEvent.objects.values("action", "actor_id", "reason", "after").get(pk=event.pk)
    return row == {"action": "project.spend_cap", "actor_id": event.actor_id, "reason": "", "after": event.after}


def test_an_audit_event_records_who_what_and_on_which_object(event, owner, project):
    assert (event.actor, event.actor_kind, event.action, event.object_type, event.object_id) == (
        owner,
        ActorKind.USER,
        "project.spend_cap",
        "studio.project",
        str(project.pk),
    )
    assert (event.before, event.after, event.reason) == ({}, {"monthly_spend_cap": "5"}, "")


def test_an_actor_less_event_is_the_systems(project):
    event = AuditEvent.record(actor=None, action="project.tier", obj=project)
    assert event.actor_kind == ActorKind.SYSTEM


def test_saving_an_audit_event_again_is_refused(event):
    event.reason = "rewritten"
    with pytest.raises(TypeError, match="append-only"):
        event.save()
    assert _unchanged(event)


def test_deleting_an_audit_event_is_refused(event):
    with pytest.raises(TypeError, match="append-only"):
        event.delete()
    assert _unchanged(event)


def test_queryset_update_and_delete_are_refused(event):
    with pytest.raises(TypeError, match="append-only"):
        AuditEvent.objects.filter(pk=event.pk).update(reason="rewritten")
    with pytest.raises(TypeError, match="append-only"):
        AuditEvent.objects.all().delete()
    assert _unchanged(event)


def test_bulk_update_is_refused(event):
    event.reason = "rewritten"
    with pytest.raises(TypeError, match="append-only"), transaction.atomic():
        AuditEvent.objects.bulk_update([event], ["reason"])
    assert _unchanged(event)


@pytest.mark.postgres
def test_postgres_refuses_raw_updates_and_deletes_of_audit_rows(event):
    for statement in (
        f"UPDATE studio_auditevent SET reason = 'rewritten' WHERE id = {event.pk}",
        f"UPDATE studio_auditevent SET actor_id = NULL WHERE id = {event.pk}",
        f"DELETE FROM studio_auditevent WHERE id = {event.pk}",
        "DELETE FROM studio_auditevent",
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)
    assert _unchanged(event)


@pytest.mark.postgres
def test_postgres_still_takes_new_audit_rows(event, project):
    AuditEvent.record(actor=None, action="project.tier", obj=project)
    assert AuditEvent.objects.count() == 2


def test_a_user_who_acted_cannot_be_deleted_only_deactivated(event, owner):
    """Deleting would set the rows' actor to NULL (SET_NULL): refused before anything is deleted, on every database."""
    with pytest.raises(ProtectedError), transaction.atomic():
        owner.delete()
    with pytest.raises(ProtectedError), transaction.atomic():
        User.objects.filter(pk=owner.pk).delete()
    assert User.objects.filter(pk=owner.pk).exists()
    assert AuditEvent.objects.get(pk=event.pk).actor_id == owner.pk

    owner.is_active = False
    owner.save(update_fields=["is_active"])
    assert AuditEvent.objects.get(pk=event.pk).actor == owner


def test_a_user_who_never_acted_can_be_deleted(db):
    user = make_user("nobody@example.com")
    user.delete()
    assert not User.objects.filter(email="nobody@example.com").exists()


@pytest.mark.postgres
def test_postgres_refuses_the_set_null_of_a_deleted_actor_too(event, owner):
    """Even past the Python guard (a raw DELETE's SET NULL as Django would issue it), the trigger keeps the actor."""
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"UPDATE studio_auditevent SET actor_id = NULL WHERE actor_id = {owner.pk}")
    assert AuditEvent.objects.get(pk=event.pk).actor_id == owner.pk


def test_the_admin_offers_no_deleting_of_users(client, db):
    from tests.factories import make_staff

    root = make_staff("root@staff.example", superuser=True)
    client.force_login(root)
    user = make_user("someone@example.com")
    assert client.get(f"/admin/studio/user/{user.pk}/delete/").status_code == 403
    changelist = client.get("/admin/studio/user/").content.decode()
    assert 'value="delete_selected"' not in changelist
