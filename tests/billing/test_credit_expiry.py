"""X2: what an expired credit had left is written off once, dated at its expiry, without moving a
balance; its account's administrators are reminded 14 and 3 days before, once each, in their
language and time zone; the billing page counts the days down."""

import io
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
import time_machine
from django.core.management import call_command
from django.db import IntegrityError, transaction

from billing import ledger
from billing.credits import WRITE_OFF_AFTER, expire_credits, send_reminders
from billing.models import (
    AccountStatus,
    BillingAdministrator,
    CreditExpiry,
    CreditKind,
    CreditReminder,
    EntryKind,
    LedgerEntry,
)
from studio.models import OutboundEmail
from tests.concurrency import at_once
from tests.factories import deliver_mail, make_account, make_user

SECOND = timedelta(seconds=1)
DAY = timedelta(days=1)
# 15:00 UTC is already the next day in Tokyo (00:00 on 21 June), still 08:00 on the 20th in Los Angeles.
EXPIRES = datetime(2026, 6, 20, 15, 0, tzinfo=UTC)
GRANTED = EXPIRES - timedelta(days=30)


@pytest.fixture
def account(owner):
    return make_account(owner, name="Main")


def grant(account, amount, *, expires_at=EXPIRES, kind=CreditKind.PROMOTIONAL, at=GRANTED):
    return ledger.grant_credit(account, kind=kind, amount=D(amount), expires_at=expires_at, at=at)


def credit_entries(credit):
    return [
        (entry.kind, entry.amount, entry.created_at)
        for entry in LedgerEntry.objects.filter(credit=credit).order_by("created_at", "pk")
    ]


def run_job(at) -> str:
    out = io.StringIO()
    with time_machine.travel(at, tick=False):
        call_command("expire_credits", stdout=out)
    return out.getvalue()


# The write-off


def test_write_off_is_what_the_credit_had_left_at_its_expiry_dated_then(account):
    credit = grant(account, "50")
    prepayment = grant(account, "10", kind=CreditKind.PREPAYMENT, expires_at=None)
    ledger.record_usage_charge(account, amount=D("12.345678"), idempotency_key="u1", at=EXPIRES - SECOND)
    later = EXPIRES + WRITE_OFF_AFTER
    before = ledger.balances(account, at=later)

    with time_machine.travel(later, tick=False):
        made = expire_credits()

    assert [(expiry.credit_id, expiry.amount, expiry.processed_at) for expiry in made] == [
        (credit.pk, D("37.654322"), later)
    ]
    assert credit_entries(credit) == [
        (EntryKind.CREDIT_GRANT, D("50"), GRANTED),
        (EntryKind.CREDIT_APPLICATION, D("-12.345678"), EXPIRES - SECOND),
        (EntryKind.CREDIT_EXPIRY, D("-37.654322"), EXPIRES),
    ]
    assert made[0].entry.amount == D("-37.654322")
    # Not a charge: nothing becomes owed, and the expired credit already counted for nothing.
    assert ledger.balances(account, at=later) == before == ledger.Balances(D("10"), D("0"), D("12.345678"))
    remaining = {c.pk: c.remaining for c in ledger.credits_with_remaining(account)}
    assert remaining == {credit.pk: D("0"), prepayment.pk: D("10")}


def test_the_write_off_waits_for_charge_runs_that_started_before_the_expiry(account):
    credit = grant(account, "50")

    for moment in (EXPIRES - SECOND, EXPIRES, EXPIRES + WRITE_OFF_AFTER - SECOND):
        with time_machine.travel(moment, tick=False):
            assert expire_credits() == []
    # A run stamped a second before the expiry still draws on the credit, even after it.
    ledger.record_usage_charge(account, amount=D("5"), idempotency_key="late run", at=EXPIRES - SECOND)
    with time_machine.travel(EXPIRES + WRITE_OFF_AFTER, tick=False):
        (expiry,) = expire_credits()

    assert expiry.amount == D("45")
    assert not CreditExpiry.objects.exclude(credit=credit).exists()


def test_running_the_job_twice_writes_off_once(account):
    credit = grant(account, "20")
    other = grant(make_account(make_user("other@example.com")), "7.5", expires_at=EXPIRES + DAY)

    first = run_job(EXPIRES + DAY + WRITE_OFF_AFTER)
    second = run_job(EXPIRES + DAY + WRITE_OFF_AFTER + SECOND)

    assert first.splitlines() == [
        "1/2 expired credits",
        "2/2 expired credits",
        f"{account.account_id} credit {credit.pk} expired: USD 20.000000 written off",
        f"{other.account.account_id} credit {other.pk} expired: USD 7.500000 written off",
        "Wrote off 2 expired credit(s); sent 0 reminder(s).",
    ]
    assert second.splitlines() == ["Wrote off 0 expired credit(s); sent 0 reminder(s)."]
    expiries = LedgerEntry.objects.filter(kind=EntryKind.CREDIT_EXPIRY).order_by("pk")
    assert [(e.credit_id, e.amount) for e in expiries] == [(credit.pk, D("-20")), (other.pk, D("-7.5"))]
    # Called again directly: the row already written, nothing new.
    expiry, created = ledger.write_off_expired_credit(credit)
    assert (expiry.amount, created) == (D("20"), False)
    assert LedgerEntry.objects.filter(kind=EntryKind.CREDIT_EXPIRY).count() == 2


def test_a_credit_used_up_before_its_expiry_is_marked_done_without_an_entry(account):
    credit = grant(account, "3")
    ledger.record_usage_charge(account, amount=D("4"), idempotency_key="u1", at=EXPIRES - DAY)

    with time_machine.travel(EXPIRES + WRITE_OFF_AFTER, tick=False):
        (expiry,) = expire_credits()
        assert expire_credits() == []

    assert (expiry.credit_id, expiry.amount, expiry.entry) == (credit.pk, D("0"), None)
    assert not LedgerEntry.objects.filter(kind=EntryKind.CREDIT_EXPIRY).exists()
    assert ledger.balances(account, at=EXPIRES + DAY) == ledger.Balances(D("0"), D("1"), D("4"))


def test_credits_that_never_expire_or_have_not_expired_are_left_alone(account):
    grant(account, "10", kind=CreditKind.PREPAYMENT, expires_at=None)
    credit = grant(account, "10", expires_at=EXPIRES + DAY)

    with time_machine.travel(EXPIRES + WRITE_OFF_AFTER, tick=False):
        assert expire_credits() == []
        with pytest.raises(ValueError, match="only an expired credit is written off"):
            ledger.write_off_expired_credit(credit)

    assert not CreditExpiry.objects.exists()


def test_the_database_refuses_a_second_write_off(account):
    credit = grant(account, "10")
    with time_machine.travel(EXPIRES + WRITE_OFF_AFTER, tick=False):
        (expiry,) = expire_credits()

    with pytest.raises(IntegrityError), transaction.atomic():
        CreditExpiry.objects.create(credit=credit, amount=D("0"))
    with pytest.raises(IntegrityError), transaction.atomic():
        ledger.LedgerEntry.objects.create(
            account=account,
            kind=EntryKind.CREDIT_EXPIRY,
            amount=D("-1"),
            credit=credit,
            idempotency_key=f"credit-expiry:{credit.pk}",
        )
    assert expiry.entry.idempotency_key == f"credit-expiry:{credit.pk}"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_runners_at_once_write_off_each_credit_once():
    """Without the job's lock: two runners take the same credits; the account lock and the unique
    row let exactly one of them write each write-off."""
    accounts = [make_account(make_user(f"runner{n}@example.com")) for n in range(3)]
    credits = [grant(accounts[n % 3], f"{n + 1}.25", expires_at=EXPIRES + n * SECOND) for n in range(6)]
    later = EXPIRES + WRITE_OFF_AFTER + DAY

    def run(_):
        return [expiry.credit_id for expiry in expire_credits(now=later)]

    runs, errors = at_once(run, 2)

    assert errors == []
    assert sorted(runs[0] + runs[1]) == [credit.pk for credit in credits]  # each by exactly one runner
    expiries = LedgerEntry.objects.filter(kind=EntryKind.CREDIT_EXPIRY).order_by("credit_id")
    assert [(e.credit_id, e.amount, e.created_at) for e in expiries] == [
        (credit.pk, -D(f"{n + 1}.25"), EXPIRES + n * SECOND) for n, credit in enumerate(credits)
    ]
    assert CreditExpiry.objects.count() == 6


# Reminders


def sent_mail():
    return [(message.to, message.subject) for message in deliver_mail()]


def test_reminders_go_out_14_and_3_days_before_the_expiry_once_each(account, owner):
    credit = grant(account, "40")
    steps = [
        (EXPIRES - 14 * DAY - SECOND, []),
        (EXPIRES - 14 * DAY, [14]),
        (EXPIRES - 14 * DAY + SECOND, []),
        (EXPIRES - 10 * DAY, []),
        (EXPIRES - 3 * DAY - SECOND, []),
        (EXPIRES - 3 * DAY, [3]),
        (EXPIRES - DAY, []),
        (EXPIRES - SECOND, []),
        (EXPIRES, []),
    ]

    for moment, expected in steps:
        with time_machine.travel(moment, tick=False):
            assert [reminder.days_before for reminder in send_reminders()] == expected, moment

    rows = CreditReminder.objects.filter(credit=credit).order_by("sent_at")
    assert [(r.days_before, r.remaining, r.recipients, r.sent_at) for r in rows] == [
        (14, D("40"), 1, EXPIRES - 14 * DAY),
        (3, D("40"), 1, EXPIRES - 3 * DAY),
    ]
    assert sent_mail() == [
        ([owner.email], "Your Promotional credit expires in 14 days"),
        ([owner.email], "Your Promotional credit expires in 3 days"),
    ]


def test_the_reminder_tells_what_is_left_when_and_what_happens_then(account, owner):
    grant(account, "40")
    ledger.record_usage_charge(account, amount=D("9.876"), idempotency_key="u1", at=EXPIRES - 20 * DAY)
    owner.time_zone = "America/Los_Angeles"
    owner.save()

    out = run_job(EXPIRES - 14 * DAY)

    assert out.splitlines()[-2:] == [
        f"{account.account_id} credit {account.credits.get().pk}: 14-day reminder to 1 administrator(s)",
        "Wrote off 0 expired credit(s); sent 1 reminder(s).",
    ]
    (message,) = deliver_mail()
    assert message.body == (
        f"USD 30.12 of your Promotional credit on Main ({account.account_id}) is still unused. The credit expires "
        "on June 20, 2026, 8 a.m. (America/Los_Angeles); until then it pays for your usage automatically.\n\n"
        "When it expires, what is left of it is written off. From then on it pays for nothing, not even for "
        "usage that happened earlier but is reported after the expiry: your other credits pay for that, or it "
        "is charged to the account's primary payment method on the monthly statement.\n\n"
        "— The Studio Console team\n\n"
    )


def test_each_administrator_gets_the_reminder_in_their_language_and_time_zone(account, owner):
    colleague = make_user("kenji@example.com", language="ja", time_zone="Asia/Tokyo")
    BillingAdministrator.objects.create(account=account, user=colleague)
    grant(account, "40")

    with time_machine.travel(EXPIRES - 3 * DAY, tick=False):
        (reminder,) = send_reminders()

    assert reminder.recipients == 2
    messages = {message.to[0]: message for message in deliver_mail()}
    assert messages[owner.email].subject == "Your Promotional credit expires in 3 days"
    assert "expires on June 20, 2026, 3 p.m. (UTC)" in messages[owner.email].body
    japanese = messages[colleague.email]
    # The credit's kind, the date and the signature as the Japanese catalogue has them, in Tokyo's time.
    assert "プロモーション クレジット" in japanese.subject
    assert "2026年6月21日0:00" in japanese.body
    assert "2026年6月21日0:00（Asia/Tokyo）" in japanese.body
    assert japanese.body.endswith("— Studio Console チーム\n\n")


def test_a_credit_first_seen_within_3_days_gets_only_the_3_day_reminder(account, owner):
    grant(account, "5", at=EXPIRES - 2 * DAY)

    with time_machine.travel(EXPIRES - 2 * DAY, tick=False):
        assert [reminder.days_before for reminder in send_reminders()] == [3]
    with time_machine.travel(EXPIRES - DAY, tick=False):
        assert send_reminders() == []

    assert sent_mail() == [([owner.email], "Your Promotional credit expires in 2 days")]


def test_no_reminder_for_a_credit_with_nothing_left_or_on_a_closed_account(account, owner):
    grant(account, "5")
    ledger.record_usage_charge(account, amount=D("5"), idempotency_key="u1", at=EXPIRES - 20 * DAY)
    closed = make_account(owner, name="Closed")
    grant(closed, "5")
    closed.status = AccountStatus.CLOSED
    closed.save(update_fields=["status"])
    grant(account, "5", kind=CreditKind.PREPAYMENT, expires_at=None)

    with time_machine.travel(EXPIRES - 3 * DAY, tick=False):
        assert send_reminders() == []

    assert not OutboundEmail.objects.exists()


def test_the_database_refuses_a_second_reminder_of_one_stage(account):
    credit = grant(account, "5")
    CreditReminder.objects.create(credit=credit, days_before=14, remaining=D("5"), recipients=1)

    with pytest.raises(IntegrityError), transaction.atomic():
        CreditReminder.objects.create(credit=credit, days_before=14, remaining=D("5"), recipients=1)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_reminder_runners_at_once_send_each_reminder_once():
    owners = [make_user(f"admin{n}@example.com") for n in range(3)]
    credits = [grant(make_account(user), "5") for user in owners]

    def run(_):
        return [reminder.credit_id for reminder in send_reminders(now=EXPIRES - 3 * DAY)]

    runs, errors = at_once(run, 2)

    assert errors == []
    assert sorted(runs[0] + runs[1]) == [credit.pk for credit in credits]
    assert CreditReminder.objects.count() == 3
    assert sorted(row.to[0] for row in OutboundEmail.objects.all()) == [user.email for user in owners]


# The billing page's countdown

NOW = datetime(2026, 6, 8, 12, 0, tzinfo=UTC)  # 21:00 in Tokyo, 05:00 in Los Angeles


def credit_rows(html):
    """[(kind, remaining, expiry cell as text)] of the credits table."""
    rows = re.findall(
        r"<tr><td>([^<]+)</td><td>USD [0-9.,]+</td><td>(USD [0-9.,]+)</td>\s*<td>(.*?)</td></tr>", html, re.S
    )
    return [(kind, remaining, " ".join(re.sub(r"<[^>]+>", " ", cell).split())) for kind, remaining, cell in rows]


def test_billing_page_counts_down_to_each_credits_expiry_in_days(client_for, owner, account):
    grant(account, "40", expires_at=datetime(2026, 6, 20, 20, 0, tzinfo=UTC), at=NOW - DAY)
    grant(account, "5", kind=CreditKind.GOODWILL, expires_at=datetime(2026, 7, 20, 20, 0, tzinfo=UTC), at=NOW - DAY)
    grant(account, "1", kind=CreditKind.GOODWILL, expires_at=datetime(2026, 6, 8, 18, 30, tzinfo=UTC), at=NOW - DAY)
    grant(account, "2", kind=CreditKind.GOODWILL, expires_at=datetime(2026, 6, 9, 9, 0, tzinfo=UTC), at=NOW - DAY)
    grant(account, "3", kind=CreditKind.GOODWILL, expires_at=NOW - SECOND, at=NOW - DAY)
    grant(account, "10", kind=CreditKind.PREPAYMENT, expires_at=None, at=NOW - DAY)

    with time_machine.travel(NOW, tick=False):
        html = client_for(owner).get("/billing/").content.decode()

    assert credit_rows(html) == [
        ("Promotional credit", "USD 40.00", "June 20, 2026 expires in 12 days"),
        ("Goodwill credit", "USD 5.00", "July 20, 2026 expires in 42 days"),
        ("Goodwill credit", "USD 1.00", "June 8, 2026 expires today at 6:30 p.m."),
        ("Goodwill credit", "USD 2.00", "June 9, 2026 expires tomorrow at 9 a.m."),
        ("Goodwill credit", "USD 3.00", "June 8, 2026 expired"),
        ("Prepayment credit", "USD 10.00", "Never"),
    ]
    # Within the first reminder's window the countdown stands out; further away it does not.
    assert '<span class="countdown badge warning">expires in 12 days</span>' in html
    assert '<span class="countdown">expires in 42 days</span>' in html
    assert '<time datetime="2026-06-20T20:00:00+0000">June 20, 2026</time>' in html
    assert "Expiry dates are in your time zone, UTC." in html


@pytest.mark.parametrize(
    ("setting", "cookie", "expected"),
    [
        ("Asia/Tokyo", "America/Los_Angeles", "June 21, 2026 expires in 13 days"),  # the setting wins
        ("", "Asia/Tokyo", "June 21, 2026 expires in 13 days"),  # else the browser's zone
        ("", "", "June 20, 2026 expires in 12 days"),  # else UTC
        ("", "America/Los_Angeles", "June 20, 2026 expires in 12 days"),
    ],
)
def test_the_countdown_counts_days_in_the_readers_time_zone(client_for, owner, account, setting, cookie, expected):
    owner.time_zone = setting
    owner.save()
    grant(account, "40", expires_at=datetime(2026, 6, 20, 20, 0, tzinfo=UTC), at=NOW - DAY)
    client = client_for(owner)
    if cookie:
        client.cookies["tz"] = cookie

    with time_machine.travel(NOW, tick=False):
        html = client.get("/billing/").content.decode()

    assert [cell for _, _, cell in credit_rows(html)] == [expected]
    assert f"Expiry dates are in your time zone, {setting or cookie or 'UTC'}." in html


def test_after_the_write_off_the_page_shows_the_credit_expired_with_nothing_left(client_for, owner, account):
    grant(account, "40")
    with time_machine.travel(EXPIRES + WRITE_OFF_AFTER, tick=False):
        expire_credits()
        html = client_for(owner).get("/billing/").content.decode()

    assert credit_rows(html) == [("Promotional credit", "USD 0.00", "June 20, 2026 expired")]
    assert "Credit expired · Promotional credit" in html
    assert "<dt>Credit remaining</dt><dd>USD 0.00</dd>" in html


def test_write_offs_and_reminders_are_read_only_rows_in_the_admin(client, account):
    grant(account, "40")
    with time_machine.travel(EXPIRES - 3 * DAY, tick=False):
        send_reminders()
    with time_machine.travel(EXPIRES + WRITE_OFF_AFTER, tick=False):
        expire_credits()
    client.force_login(make_user("staff@example.com", is_staff=True, is_superuser=True))

    for model, expected in [("creditexpiry", "40.000000"), ("creditreminder", "3 days before expiry")]:
        html = client.get(f"/admin/billing/{model}/").content.decode()
        assert 'id="result_list"' in html and expected in html
        assert client.get(f"/admin/billing/{model}/add/").status_code == 403
