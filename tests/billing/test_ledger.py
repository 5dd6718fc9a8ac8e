from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.django import TestCase

from billing import ledger
from billing.models import Credit, CreditKind, EntryKind, LedgerEntry
from billing.money import round_money
from tests.factories import make_account, make_user

D = Decimal


@pytest.fixture
def account(owner):
    return make_account(owner)


def test_round_money_is_half_up_to_the_micro_dollar():
    assert round_money(D("0.0000005")) == D("0.000001")
    assert round_money(D("0.00000049")) == D("0.000000")
    assert round_money(D("1.2345675")) == D("1.234568")


def test_grant_then_charge_draws_down_the_credit(account):
    credit = ledger.grant_credit(account, kind=CreditKind.PROMOTIONAL, amount=D("50"))

    ledger.record_usage_charge(account, amount=D("20.5"), description="usage", idempotency_key="c1")

    remaining = {c.pk: c.remaining for c in ledger.credits_with_remaining(account)}
    assert remaining == {credit.pk: D("29.5")}
    assert ledger.balances(account) == ledger.Balances(
        credit_remaining=D("29.5"), amount_due=D("0"), total_spend=D("20.5")
    )


def test_charge_beyond_credits_is_owed(account):
    ledger.grant_credit(account, kind=CreditKind.PROMOTIONAL, amount=D("5"))

    ledger.record_usage_charge(account, amount=D("12.25"), description="usage", idempotency_key="c1")

    assert ledger.balances(account) == ledger.Balances(D("0"), D("7.25"), D("12.25"))


def test_charge_order_welcome_then_promotional_by_expiry_then_prepayment(account, owner):
    now = timezone.now()
    prepayment = ledger.grant_credit(account, kind=CreditKind.PREPAYMENT, amount=D("10"))
    late_promo = ledger.grant_credit(
        account, kind=CreditKind.PROMOTIONAL, amount=D("10"), expires_at=now + timedelta(days=30)
    )
    goodwill = ledger.grant_credit(
        account, kind=CreditKind.GOODWILL, amount=D("10"), expires_at=now + timedelta(days=5)
    )
    welcome = ledger.grant_credit(
        account, kind=CreditKind.WELCOME, amount=D("10"), expires_at=now + timedelta(days=90), welcome_for=owner
    )

    entries = ledger.record_usage_charge(account, amount=D("35"), description="usage", idempotency_key="c1")

    applied = [(e.credit_id, e.amount) for e in entries if e.kind == EntryKind.CREDIT_APPLICATION]
    assert applied == [
        (welcome.pk, D("-10")),
        (goodwill.pk, D("-10")),
        (late_promo.pk, D("-10")),
        (prepayment.pk, D("-5")),
    ]


def test_expired_credit_is_not_used(account, owner):
    ledger.grant_credit(
        account,
        kind=CreditKind.WELCOME,
        amount=D("300"),
        expires_at=timezone.now() - timedelta(seconds=1),
        welcome_for=owner,
    )

    ledger.record_usage_charge(account, amount=D("3"), description="usage", idempotency_key="c1")

    assert ledger.balances(account) == ledger.Balances(D("0"), D("3"), D("3"))


def test_charge_is_idempotent_by_key(account):
    ledger.grant_credit(account, kind=CreditKind.PROMOTIONAL, amount=D("50"))

    first = ledger.record_usage_charge(account, amount=D("1"), description="usage", idempotency_key="same")
    again = ledger.record_usage_charge(account, amount=D("1"), description="usage", idempotency_key="same")

    assert again == [first[0]]
    assert ledger.balances(account).total_spend == D("1")
    assert LedgerEntry.objects.filter(kind=EntryKind.CREDIT_APPLICATION).count() == 1


def test_one_welcome_credit_per_person(owner):
    first, second = make_account(owner), make_account(owner)
    ledger.grant_credit(first, kind=CreditKind.WELCOME, amount=D("300"), welcome_for=owner)

    with pytest.raises(IntegrityError), transaction.atomic():
        ledger.grant_credit(second, kind=CreditKind.WELCOME, amount=D("300"), welcome_for=owner)

    assert Credit.objects.filter(kind=CreditKind.WELCOME).count() == 1


def test_ledger_rows_have_no_update_or_delete_path(account):
    ledger.grant_credit(account, kind=CreditKind.PROMOTIONAL, amount=D("5"))
    entry = LedgerEntry.objects.get()

    with pytest.raises(TypeError):
        entry.save()
    with pytest.raises(TypeError):
        entry.delete()
    with pytest.raises(TypeError):
        LedgerEntry.objects.filter(pk=entry.pk).update(amount=D("500"))
    with pytest.raises(TypeError):
        LedgerEntry.objects.all().delete()


def test_entry_sign_is_checked_by_the_database(account):
    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerEntry.objects.create(account=account, kind=EntryKind.USAGE_CHARGE, amount=D("-1"), description="x")


@pytest.mark.postgres
def test_postgres_refuses_updates_and_deletes_of_ledger_rows(account):
    credit = ledger.grant_credit(account, kind=CreditKind.PROMOTIONAL, amount=D("5"))
    entry = LedgerEntry.objects.get()

    for statement in (
        f"UPDATE billing_ledgerentry SET amount = 500 WHERE id = {entry.pk}",
        f"DELETE FROM billing_ledgerentry WHERE id = {entry.pk}",
        f"UPDATE billing_credit SET original_amount = 500 WHERE id = {credit.pk}",
        f"DELETE FROM billing_credit WHERE id = {credit.pk}",
    ):
        with pytest.raises(Exception, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)

    assert LedgerEntry.objects.get().amount == D("5")


amounts = st.decimals(min_value=D("0.000001"), max_value=D("500"), places=6)
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("grant"),
            st.sampled_from([CreditKind.PROMOTIONAL, CreditKind.GOODWILL, CreditKind.PREPAYMENT]),
            amounts,
            st.integers(-5, 60),
        ),
        st.tuples(st.just("charge"), st.none(), amounts, st.none()),
    ),
    min_size=1,
    max_size=12,
)


class LedgerInvariants(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.account = make_account(make_user())

    @given(operations)
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_balances_are_consistent_whatever_the_order(self, ops):
        account = self.account
        now = timezone.now()
        granted = charged = D("0")
        for index, (op, kind, amount, days) in enumerate(ops):
            if op == "grant":
                expires = None if days > 50 else now + timedelta(days=days)
                ledger.grant_credit(account, kind=kind, amount=amount, expires_at=expires)
                granted += amount
            else:
                ledger.record_usage_charge(account, amount=amount, description="u", idempotency_key=f"op{index}")
                charged += amount

        balances = ledger.balances(account)
        credits = ledger.credits_with_remaining(account)
        applied = -sum((e.amount for e in account.entries.filter(kind=EntryKind.CREDIT_APPLICATION)), D("0"))
        assert balances.total_spend == charged
        assert all(D("0") <= c.remaining <= c.original_amount for c in credits)
        assert balances.amount_due >= 0
        assert balances.total_spend == applied + balances.amount_due
        assert sum((c.original_amount - c.remaining for c in credits), D("0")) == applied
        assert sum((c.original_amount for c in credits), D("0")) == granted


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_every_ledger_write_waits_for_the_account_lock():
    """Ledger writes take the account's row lock, so none interleaves with a charge's draw-down."""
    import threading

    from billing.models import BillingAccount

    account = make_account(make_user("locks@example.com"))
    writes = {
        "grant": lambda: ledger.grant_credit(account, kind=CreditKind.PROMOTIONAL, amount=D("1")),
        "charge": lambda: ledger.record_usage_charge(account, amount=D("1"), description="u", idempotency_key="c"),
        "payment": lambda: ledger.record_payment(account, amount=D("1"), description="p", idempotency_key="p"),
        "refund": lambda: ledger.record_prepayment_refund(account, amount=D("1"), key="r", by=None),
    }
    locked, release = threading.Event(), threading.Event()

    def hold_the_lock():
        with transaction.atomic():
            # FOR NO KEY UPDATE: conflicts with the writers' FOR UPDATE, not with the foreign-key
            # check of a plain insert, so only a write that takes the lock waits.
            BillingAccount.objects.select_for_update(no_key=True).get(pk=account.pk)
            locked.set()
            release.wait(10)
        connection.close()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    locked.wait(10)
    blocked = []
    try:
        for name, write in writes.items():
            try:
                with transaction.atomic():
                    with connection.cursor() as cursor:
                        cursor.execute("SET LOCAL lock_timeout = '200ms'")
                    write()
            except Exception as error:  # the lock timeout (SQLSTATE 55P03) proves the write waited
                if getattr(error.__cause__, "sqlstate", None) == "55P03":
                    blocked.append(name)
    finally:
        release.set()
        holder.join()

    assert blocked == ["grant", "charge", "payment", "refund"]
    assert LedgerEntry.objects.count() == 0


def test_ledger_rows_are_written_only_by_the_ledger_module():
    """One module writes money rows (and so every write takes the account lock)."""
    from pathlib import Path

    from django.conf import settings

    base = Path(settings.BASE_DIR)
    writers = sorted(
        str(path.relative_to(base))
        for app in ("studio", "billing", "usage")
        for path in (base / app).rglob("*.py")
        if "migrations" not in path.parts
        and ("LedgerEntry.objects.create" in path.read_text() or "LedgerEntry(" in path.read_text())
    )

    assert writers == ["billing/ledger.py", "billing/models/ledger.py"]  # the writer, and the class itself
