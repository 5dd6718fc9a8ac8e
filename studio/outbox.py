"""The e-mail outbox: every e-mail is first a row, then a delivery.

`OutboxBackend` is the project's EMAIL_BACKEND: `send_mail()` and friends store each message as
an `OutboundEmail` row in the caller's transaction, so the e-mail exists exactly when the change
it tells about was committed, and sending can never fail (or undo) that change. `deliver_due()`
(the `deliver_outbox` job) sends due rows through OUTBOX_DELIVERY_BACKEND, the real transport.

Delivery is at least once: a row is claimed with a lease (`claimed_until`) in a short transaction
and sent outside any transaction or lock. A sender killed after sending but before marking the row
sent resends that one message once its lease lapses; a stable Message-ID lets mail systems drop
the copy. Concurrent senders never take the same row: the claim skips locked rows and leased ones.
"""

import base64
import logging
from dataclasses import dataclass
from datetime import timedelta
from email.utils import formatdate

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import make_msgid
from django.core.mail.utils import DNS_NAME
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from studio.models import AuditEvent, EmailStatus, OutboundEmail

log = logging.getLogger(__name__)

BATCH_SIZE = 10  # rows claimed at once
LEASE = timedelta(minutes=5)  # longer than BATCH_SIZE sends at EMAIL_TIMEOUT each
RETRY_FIRST = timedelta(minutes=1)  # then 2, 4, 8 … minutes
RETRY_LONGEST = timedelta(hours=1)


def retry_delay(attempts: int) -> timedelta:
    """Wait after the `attempts`-th failed attempt: doubling from one minute, at most an hour."""
    return min(RETRY_FIRST * 2 ** (attempts - 1), RETRY_LONGEST)


class OutboxBackend(BaseEmailBackend):
    """Stores messages in the outbox, in the current transaction; the job runner sends them."""

    def send_messages(self, email_messages) -> int:
        rows = [_row(message) for message in email_messages if message.recipients()]
        if rows:
            OutboundEmail.objects.bulk_create(rows)
            _deliver_after_commit()
        return len(rows)


def _row(message) -> OutboundEmail:
    headers = dict(message.extra_headers)
    names = {name.lower() for name in headers}
    # Fixed now, so that every retry is the same message: dated when queued, one Message-ID.
    if "message-id" not in names:
        headers["Message-ID"] = make_msgid(domain=DNS_NAME)
    if "date" not in names:
        headers["Date"] = formatdate(localtime=settings.EMAIL_USE_LOCALTIME)
    attachments = []
    for attachment in message.attachments:
        if not isinstance(attachment, tuple):
            raise ValueError("The outbox stores file attachments (name, content, type), not MIME parts.")
        filename, content, mimetype = attachment
        content = content.encode() if isinstance(content, str) else content
        attachments.append([filename, base64.b64encode(content).decode("ascii"), mimetype])
    return OutboundEmail(
        sender=message.from_email,
        to=list(message.to),
        cc=list(message.cc),
        bcc=list(message.bcc),
        reply_to=list(message.reply_to),
        subject=message.subject,
        body=message.body,
        content_subtype=message.content_subtype,
        alternatives=[[content, mimetype] for content, mimetype in getattr(message, "alternatives", [])],
        attachments=attachments,
        headers=headers,
    )


def _message(row: OutboundEmail, connection) -> EmailMultiAlternatives:
    message = EmailMultiAlternatives(
        subject=row.subject,
        body=row.body,
        from_email=row.sender,
        to=row.to,
        cc=row.cc,
        bcc=row.bcc,
        reply_to=row.reply_to,
        headers=row.headers,
        connection=connection,
    )
    message.content_subtype = row.content_subtype
    for content, mimetype in row.alternatives:
        message.attach_alternative(content, mimetype)
    for filename, content, mimetype in row.attachments:
        message.attach(filename, base64.b64decode(content), mimetype)
    return message


def _deliver_after_commit():
    """Once per transaction: ask the job runner to deliver as soon as the rows are committed."""
    if any(callback is _deliver_soon for _, callback, _ in connection.run_on_commit):
        return
    transaction.on_commit(_deliver_soon)


def _deliver_soon():
    # The periodic sweep delivers anyway; this only saves the wait. It must never fail the request
    # that committed (the job runner's queue may be down), hence the broad catch.
    try:
        from studio.jobs import deliver_outbox_now

        deliver_outbox_now()
    except Exception:
        log.warning("outbox: could not ask the job runner to deliver now; the next sweep will", exc_info=True)


@dataclass
class Delivery:
    sent: int = 0
    retrying: int = 0
    failed: int = 0


def deliver_due() -> Delivery:
    """Send every due message once. Effects per message: sent (status, sent_at), or one more
    failed attempt (last_error, next_attempt_at after `retry_delay`, `failed` once
    OUTBOX_MAX_ATTEMPTS is reached), each logged with the real cause. Never holds a lock or a
    transaction while talking to the mail server."""
    result = Delivery()
    transport = get_connection(settings.OUTBOX_DELIVERY_BACKEND, fail_silently=False)
    try:
        while batch := _claim():
            for row in batch:
                if timezone.now() >= row.claimed_until:
                    return result  # our lease lapsed: another sender may have these rows now
                _deliver(row, transport, result)
    finally:
        _close(transport)
    return result


def _claim() -> list[OutboundEmail]:
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            OutboundEmail.objects.select_for_update(skip_locked=True)
            .filter(status=EmailStatus.PENDING, next_attempt_at__lte=now)
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lte=now))
            .order_by("next_attempt_at", "pk")[:BATCH_SIZE]
        )
        OutboundEmail.objects.filter(pk__in=[row.pk for row in rows]).update(claimed_until=now + LEASE)
    for row in rows:
        row.claimed_until = now + LEASE
    return rows


def _deliver(row: OutboundEmail, transport, result: Delivery):
    try:
        transport.open()  # reused across the batch (SMTP); reopened after a failure
        if transport.send_messages([_message(row, transport)]) != 1:
            raise RuntimeError("the delivery backend did not send the message")
    except Exception as error:
        _close(transport)
        _failed(row, error, result)
        return
    with transaction.atomic():
        OutboundEmail.objects.filter(pk=row.pk).update(
            status=EmailStatus.SENT, sent_at=timezone.now(), attempts=F("attempts") + 1, claimed_until=None
        )
        AuditEvent.record(
            actor=None,
            action="outbound_email.sent",
            obj=row,
            before={"status": EmailStatus.PENDING},
            after={"status": EmailStatus.SENT, "attempts": row.attempts + 1},
        )
    result.sent += 1
    log.info("outbox: sent message %s (%d recipients)", row.pk, row.recipient_count)


def _failed(row: OutboundEmail, error: Exception, result: Delivery):
    attempts = row.attempts + 1
    cause = f"{type(error).__name__}: {error}"
    now = timezone.now()
    if attempts >= settings.OUTBOX_MAX_ATTEMPTS:
        status, next_attempt_at = EmailStatus.FAILED, row.next_attempt_at
        result.failed += 1
        log.error(
            "outbox: message %s (%d recipients) failed for good after %d attempts: %s",
            row.pk,
            row.recipient_count,
            attempts,
            cause,
        )
    else:
        status, next_attempt_at = EmailStatus.PENDING, now + retry_delay(attempts)
        result.retrying += 1
        log.warning(
            "outbox: message %s (%d recipients) attempt %d failed, next at %s: %s",
            row.pk,
            row.recipient_count,
            attempts,
            next_attempt_at.isoformat(timespec="seconds"),
            cause,
        )
    with transaction.atomic():
        OutboundEmail.objects.filter(pk=row.pk).update(
            status=status, attempts=attempts, last_error=cause, next_attempt_at=next_attempt_at, claimed_until=None
        )
        if status == EmailStatus.FAILED:  # a retry's attempt and error are on the row; giving up is audited
            AuditEvent.record(
                actor=None,
                action="outbound_email.fail",
                obj=row,
                before={"status": EmailStatus.PENDING},
                after={"status": EmailStatus.FAILED, "attempts": attempts},
                reason=cause,
            )


def _close(transport):
    try:
        transport.close()
    except Exception:  # a broken SMTP connection may refuse a clean QUIT; it is gone either way
        log.debug("outbox: closing the delivery connection failed", exc_info=True)
