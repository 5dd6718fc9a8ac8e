import logging
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.models import Permission
from django.core import mail
from django.core.mail import EmailMessage, send_mail
from django.db import transaction
from huey.contrib.djhuey import HUEY
from huey.storage import RedisStorage

from studio import outbox
from studio.models import ActorKind, AuditEvent, EmailStatus, OutboundEmail
from tests.concurrency import at_once
from tests.factories import deliver_mail, make_user

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def queue(subject="Hello", to=("ada@example.com",), **kwargs) -> OutboundEmail:
    send_mail(subject, "Body text", "Studio <no-reply@studio.example>", list(to), **kwargs)
    return OutboundEmail.objects.latest("pk")


def test_send_mail_writes_a_pending_row_and_sends_nothing_yet():
    with time_machine.travel(T0, tick=False):
        row = queue(html_message="<p>Body</p>")

    assert (row.sender, row.to, row.cc, row.bcc, row.subject, row.body) == (
        "Studio <no-reply@studio.example>",
        ["ada@example.com"],
        [],
        [],
        "Hello",
        "Body text",
    )
    assert row.alternatives == [["<p>Body</p>", "text/html"]]
    assert (row.status, row.attempts, row.next_attempt_at, row.sent_at) == (EmailStatus.PENDING, 0, T0, None)
    assert sorted(row.headers) == ["Date", "Message-ID"]
    assert row.headers["Date"] == "Mon, 02 Mar 2026 09:00:00 -0000"
    assert mail.outbox == []


def test_delivery_sends_the_stored_message_once_and_marks_it_sent():
    message = EmailMessage(
        "Invoice",
        "Body text",
        "billing@studio.example",
        ["ada@example.com"],
        cc=["bob@example.com"],
        bcc=["audit@example.com"],
        reply_to=["help@studio.example"],
        headers={"X-Kind": "invoice"},
    )
    message.attach("invoice.txt", "USD 10.00", "text/plain")
    with time_machine.travel(T0, tick=False):
        message.send()
        row = OutboundEmail.objects.get()

        (sent,) = deliver_mail()
        assert deliver_mail() == [sent]  # nothing more the second time

    assert (sent.subject, sent.body, sent.from_email, sent.to, sent.cc, sent.bcc, sent.reply_to) == (
        "Invoice",
        "Body text",
        "billing@studio.example",
        ["ada@example.com"],
        ["bob@example.com"],
        ["audit@example.com"],
        ["help@studio.example"],
    )
    assert sent.attachments == [("invoice.txt", "USD 10.00", "text/plain")]
    built = sent.message()
    assert (built["Message-ID"], built["Date"], built["X-Kind"]) == (
        row.headers["Message-ID"],
        "Mon, 02 Mar 2026 09:00:00 -0000",
        "invoice",
    )
    row.refresh_from_db()
    assert (row.status, row.attempts, row.sent_at, row.claimed_until) == (EmailStatus.SENT, 1, T0, None)


def test_mail_of_a_rolled_back_change_never_exists():
    with pytest.raises(RuntimeError), transaction.atomic():
        queue()
        raise RuntimeError("the change failed")

    assert OutboundEmail.objects.count() == 0
    assert deliver_mail() == []


def test_a_message_without_recipients_is_not_stored():
    assert EmailMessage("Nobody", "Body", "a@studio.example", []).send() == 0
    assert OutboundEmail.objects.count() == 0


def test_commit_asks_the_job_runner_to_deliver_at_once_one_request_per_transaction(
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        queue("First")
        queue("Second")
        queue("Third")

    assert len(callbacks) == 1
    # The job ran (in the test's process): delivered without waiting for the minute's sweep.
    assert sorted(m.subject for m in mail.outbox) == ["First", "Second", "Third"]
    assert set(OutboundEmail.objects.values_list("status", flat=True)) == {EmailStatus.SENT}


def test_a_job_queue_that_is_down_never_fails_the_commit_and_the_sweep_sends_later(
    monkeypatch, caplog, django_capture_on_commit_callbacks
):
    # Redis (the job queue) is unreachable: nothing listens on port 1.
    monkeypatch.setattr(HUEY, "_immediate", False)
    monkeypatch.setattr(HUEY, "storage", RedisStorage("down", url="redis://127.0.0.1:1/0"))

    with django_capture_on_commit_callbacks(execute=True):
        queue()

    assert OutboundEmail.objects.get().status == EmailStatus.PENDING
    assert "could not ask the job runner to deliver now" in caplog.text
    assert [m.subject for m in deliver_mail()] == ["Hello"]


def test_retry_delays_double_from_a_minute_up_to_an_hour():
    delays = [outbox.retry_delay(attempts) for attempts in range(1, 10)]

    assert [delay / timedelta(minutes=1) for delay in delays] == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_failed_attempts_back_off_and_the_tenth_marks_the_message_failed(smtp_down, caplog, settings):
    assert settings.OUTBOX_MAX_ATTEMPTS == 10
    with time_machine.travel(T0, tick=False):
        row = queue(to=["ada@example.com", "bob@example.com"])
    caplog.set_level(logging.WARNING, logger="studio.outbox")
    # Minutes after the first attempt at which each attempt is made: 1, 2, 4 … apart, at most 60.
    attempt_minutes = [0, 1, 3, 7, 15, 31, 63, 123, 183, 243]

    for number, minute in enumerate(attempt_minutes, start=1):
        at = T0 + timedelta(minutes=minute)
        with time_machine.travel(at - timedelta(seconds=1), tick=False):
            assert outbox.deliver_due() == outbox.Delivery()  # not due yet
        with time_machine.travel(at, tick=False):
            result = outbox.deliver_due()
        row.refresh_from_db()
        if number < 10:
            assert result == outbox.Delivery(retrying=1)
            next_at = T0 + timedelta(minutes=attempt_minutes[number])
            assert (row.status, row.attempts, row.next_attempt_at) == (EmailStatus.PENDING, number, next_at)
        else:
            assert result == outbox.Delivery(failed=1)
            assert (row.status, row.attempts, row.next_attempt_at) == (EmailStatus.FAILED, 10, at)

    assert row.last_error.startswith("ConnectionRefusedError: [Errno 111]")
    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        assert outbox.deliver_due() == outbox.Delivery()  # failed for good: no more attempts
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 9
    assert warnings[0] == (
        f"outbox: message {row.pk} (2 recipients) attempt 1 failed, next at 2026-03-02T09:01:00+00:00: "
        "ConnectionRefusedError: [Errno 111] Connection refused"
    )
    (error,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert error == (
        f"outbox: message {row.pk} (2 recipients) failed for good after 10 attempts: "
        "ConnectionRefusedError: [Errno 111] Connection refused"
    )
    assert "Body text" not in caplog.text and "ada@example.com" not in caplog.text
    assert mail.outbox == []


def test_a_sender_killed_after_claiming_delays_the_message_by_its_lease_only():
    with time_machine.travel(T0, tick=False):
        row = queue()
        (claimed,) = outbox._claim()  # a sender claims the message and dies before sending it
        assert claimed.pk == row.pk
        assert outbox.deliver_due() == outbox.Delivery()  # leased: nobody else takes it

    with time_machine.travel(T0 + outbox.LEASE - timedelta(seconds=1), tick=False):
        assert outbox.deliver_due() == outbox.Delivery()
    with time_machine.travel(T0 + outbox.LEASE, tick=False):
        assert outbox.deliver_due() == outbox.Delivery(sent=1)

    assert [m.subject for m in mail.outbox] == ["Hello"]


# The admin


@pytest.fixture
def staff():
    return make_user("staff@example.com", is_staff=True, is_superuser=True)


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


def test_admin_lists_filters_and_searches_the_outbox(staff_client):
    queue("Getting started", to=["ada@example.com"])
    failed = queue("Your invoice", to=["bob@example.com"])
    OutboundEmail.objects.filter(pk=failed.pk).update(status=EmailStatus.FAILED, attempts=10)

    listing = staff_client.get("/admin/studio/outboundemail/").content.decode()
    only_failed = staff_client.get("/admin/studio/outboundemail/?status__exact=failed").content.decode()
    found = staff_client.get("/admin/studio/outboundemail/?q=ada@").content.decode()

    assert "\n2 outbound e-mails\n" in listing
    assert ("Getting started" in only_failed, "Your invoice" in only_failed) == (False, True)
    assert ("Getting started" in found, "Your invoice" in found) == (True, False)


def test_admin_shows_a_message_read_only(staff_client):
    row = queue()

    page = staff_client.get(f"/admin/studio/outboundemail/{row.pk}/change/").content.decode()

    assert "Body text" in page and 'name="body"' not in page
    assert staff_client.post(f"/admin/studio/outboundemail/{row.pk}/change/", {"body": "x"}).status_code == 403
    assert staff_client.get(f"/admin/studio/outboundemail/{row.pk}/delete/").status_code == 403
    assert staff_client.get("/admin/studio/outboundemail/add/").status_code == 403


def test_resend_makes_failed_messages_due_now_with_an_audit_entry(staff_client, staff, smtp_down):
    with time_machine.travel(T0, tick=False):
        row = queue()
    OutboundEmail.objects.filter(pk=row.pk).update(status=EmailStatus.FAILED, attempts=10, last_error="SMTP down")
    smtp_back = smtp_down
    smtp_back()

    with time_machine.travel(T0 + timedelta(hours=5), tick=False):
        response = staff_client.post(
            "/admin/studio/outboundemail/", {"action": "resend", "_selected_action": [row.pk]}, follow=True
        )
        row.refresh_from_db()
        assert (row.status, row.attempts, row.next_attempt_at) == (
            EmailStatus.PENDING,
            0,
            T0 + timedelta(hours=5),
        )
        assert [m.subject for m in deliver_mail()] == ["Hello"]

    assert "1 e-mail will be sent again." in response.content.decode()
    event = AuditEvent.objects.get(action="outbound_email.resend")
    assert (event.actor, event.actor_kind, event.object_id, event.before, event.after) == (
        staff,
        ActorKind.STAFF,
        str(row.pk),
        {"status": "failed", "attempts": 10},
        {"status": "pending", "attempts": 0},
    )


def test_resend_leaves_a_message_that_is_being_sent_alone(staff_client):
    row = queue()
    outbox._claim()  # a sender holds it right now

    response = staff_client.post(
        "/admin/studio/outboundemail/", {"action": "resend", "_selected_action": [row.pk]}, follow=True
    )

    assert "1 e-mail is being sent right now; it was left alone." in response.content.decode()
    assert not AuditEvent.objects.filter(action="outbound_email.resend").exists()


def test_resend_needs_the_change_permission(client):
    row = queue()
    OutboundEmail.objects.filter(pk=row.pk).update(status=EmailStatus.FAILED)
    support = make_user("support@example.com", is_staff=True)
    support.user_permissions.add(Permission.objects.get(codename="view_outboundemail"))
    client.force_login(support)

    page = client.get("/admin/studio/outboundemail/").content.decode()
    client.post("/admin/studio/outboundemail/", {"action": "resend", "_selected_action": [row.pk]})

    assert "Hello" in page and 'value="resend"' not in page
    row.refresh_from_db()
    assert row.status == EmailStatus.FAILED
    assert not AuditEvent.objects.filter(action="outbound_email.resend").exists()


# Concurrency


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_senders_never_send_one_message_twice():
    # Rows as the backend writes them (send_mail here would deliver them at once after its commit).
    OutboundEmail.objects.bulk_create(
        OutboundEmail(sender="a@studio.example", to=["ada@example.com"], subject=f"Message {number}")
        for number in range(40)
    )

    results, errors = at_once(lambda _: outbox.deliver_due(), 4)

    assert errors == []
    assert sum(result.sent for result in results) == 40
    assert sorted(m.subject for m in mail.outbox) == sorted(f"Message {number}" for number in range(40))
    assert OutboundEmail.objects.filter(status=EmailStatus.SENT, attempts=1).count() == 40
