"""X2 at the edge: a credit pays for usage charged a second before its expiry, and for nothing charged
a second after, even usage that occurred while it was valid (SPEC §9); the write-off then takes
exactly what it had left, and the late usage stays owed."""

from datetime import timedelta
from decimal import Decimal as D

import pytest
import time_machine
from django.utils import timezone

from billing import ledger
from billing.credits import WRITE_OFF_AFTER, expire_credits
from billing.models import CreditKind, EntryKind, LedgerEntry
from tests.factories import make_billed_project, make_key, make_user
from usage.charging import charge_pending
from usage.ingest import ingest

SECOND = timedelta(seconds=1)
USD_25 = {"input_tokens": 0, "output_tokens": 10_000_000}  # gemini-2.5-flash output at 2.50/M


@pytest.fixture
def billed(db):
    """(account, key, credit): a USD 40 promotional credit that expires an hour from now."""
    project = make_billed_project(make_user("edge@example.com"), since=timezone.now() - timedelta(days=3))
    key, _ = make_key(project)
    account = project.billing.account
    with time_machine.travel(timezone.now() - timedelta(days=2)):
        credit = ledger.grant_credit(
            account, kind=CreditKind.PROMOTIONAL, amount=D("40"), expires_at=timezone.now() + timedelta(days=2, hours=1)
        )
    return account, key, credit


def applications(credit):
    return list(
        LedgerEntry.objects.filter(credit=credit, kind=EntryKind.CREDIT_APPLICATION).values_list("amount", flat=True)
    )


def test_usage_charged_a_second_before_the_expiry_is_paid_by_the_credit(billed, event):
    account, key, credit = billed
    expires = credit.expires_at
    with time_machine.travel(expires - 2 * SECOND, tick=False):
        ingest([event(key, occurred_at=(expires - 2 * SECOND).isoformat(), **USD_25)])
        charge_pending(at=expires - SECOND)

    assert applications(credit) == [D("-25")]
    assert ledger.balances(account, at=expires - SECOND) == ledger.Balances(D("15"), D("0"), D("25"))

    with time_machine.travel(expires + WRITE_OFF_AFTER, tick=False):
        (expiry,) = expire_credits()
    assert expiry.amount == D("15")


def test_usage_that_occurred_before_the_expiry_but_is_charged_a_second_after_is_owed(billed, event):
    account, key, credit = billed
    expires = credit.expires_at
    with time_machine.travel(expires + SECOND, tick=False):
        ingest([event(key, occurred_at=(expires - 2 * SECOND).isoformat(), **USD_25)])  # reported late
        charge_pending(at=expires + SECOND)

    assert applications(credit) == []
    assert ledger.balances(account, at=expires + SECOND) == ledger.Balances(D("0"), D("25"), D("25"))

    with time_machine.travel(expires + WRITE_OFF_AFTER, tick=False):
        (expiry,) = expire_credits()
    # The whole credit is written off; the late usage stays owed for the monthly statement.
    assert expiry.amount == D("40")
    assert ledger.balances(account, at=expires + WRITE_OFF_AFTER) == ledger.Balances(D("0"), D("25"), D("25"))


def test_usage_at_the_instant_of_expiry_is_not_paid(billed, event):
    account, key, credit = billed
    expires = credit.expires_at
    with time_machine.travel(expires, tick=False):
        ingest([event(key, occurred_at=expires.isoformat(), **USD_25)])
        charge_pending(at=expires)

    assert applications(credit) == []
    assert ledger.balances(account, at=expires).amount_due == D("25")
