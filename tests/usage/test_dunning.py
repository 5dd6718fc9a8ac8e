"""Dunning (SPEC §9, R18, issue 12): a declined statement charge is retried 1, 3 and 7 days after the first
failure with an e-mail each time; the last failure suspends the account (quota:check: BILLING_DISABLED); a billing
administrator pays from the statement page with another card, which reinstates the account at once."""

import uuid
from datetime import datetime, timedelta
from decimal import Decimal as D
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.management import call_command

from billing import ledger
from billing.dunning import retry_due
from billing.models import (
    AccountStatus,
    AttemptStatus,
    BillingAccount,
    PaymentMethod,
    StatementPayment,
    StatementStatus,
    SuspensionReason,
    TestProcessorCharge,
    TestProcessorToken,
)
from billing.services import set_account_status
from billing.statements import charge_due, issue_statement
from studio.models import AuditEvent, BillingState, OutboundEmail, Tier
from tests.factories import make_account, make_key
from usage.models import FleetToken

LA = ZoneInfo("America/Los_Angeles")
OCTOBER = datetime(2026, 10, 1).date()
T0 = datetime(2026, 11, 2, 0, 35, tzinfo=LA)  # the charge job on the 2nd: the first failure
SECOND = timedelta(seconds=1)
DAY = timedelta(days=1)


def statement_line(project, amount, *, at=None):
    """A usage line of `amount` USD of `project`'s output tokens, used at `at` (default: October 10th, Pacific)."""
    moment = at or datetime(2026, 10, 10, 12, tzinfo=LA)
    return ledger.UsageLineIn(
        project_id=project.pk,
        model_id="gemini-2.5-flash",
        price_id=1,
        sku="output",
        batch=False,
        long_prompt=False,
        quantity=D(6_000_000),
        events=3,
        amount=D(amount),
        first_occurred_at=moment,
        last_occurred_at=moment,
    )


def card_with(account, behaviour):
    """The account's primary card, as the test processor now treats it (declined since it was added, say)."""
    token = TestProcessorToken.objects.create(token=f"tok_test_{uuid.uuid4().hex[:12]}", behaviour=behaviour)
    method = account.primary_payment_method
    method.processor_token = token.token
    method.save(update_fields=["processor_token"])


@pytest.fixture
def issued(owner, project):
    """October 2026's statement of the project's account (USD 15.00 due), its card declined since."""
    with time_machine.travel(datetime(2026, 9, 30, tzinfo=LA), tick=False):
        account = make_account(owner, name="Team billing", projects=[project])
    with time_machine.travel(datetime(2026, 10, 20, tzinfo=LA), tick=False):
        ledger.record_usage(account, month=OCTOBER, lines=[statement_line(project, "15")])
    with time_machine.travel(datetime(2026, 11, 1, 0, 5, tzinfo=LA), tick=False):
        statement, _ = issue_statement(account, OCTOBER)
    card_with(account, "card_declined")
    return statement


@pytest.fixture
def failed(issued):
    """The charge on the 2nd was declined."""
    with time_machine.travel(T0, tick=False):
        assert len(charge_due().failed) == 1
    issued.refresh_from_db()
    return issued


def retry_at(moment):
    with time_machine.travel(moment, tick=False):
        return retry_due()


@pytest.fixture
def suspended(failed):
    for days in (1, 3, 7):
        retry_at(T0 + days * DAY)
    failed.refresh_from_db()
    return failed


def attempts(statement):
    return [
        (p.attempt, p.retry, p.status, p.failure_code, p.created_at)
        for p in StatementPayment.objects.filter(statement=statement).order_by("attempt")
    ]


def account_of(statement) -> BillingAccount:
    return BillingAccount.objects.get(pk=statement.account_id)


@pytest.fixture
def fleet(db):
    _, raw = FleetToken.issue(name="fleet-dunning")
    return raw


def quota_check(client, fleet, raw_key) -> dict:
    body = {"api_key": raw_key, "model": "gemini-2.5-pro", "kind": "generate", "estimated_input_tokens": 100}
    response = client.post(
        "/api/v1/quota:check", body, content_type="application/json", headers={"Authorization": f"Bearer {fleet}"}
    )
    assert response.status_code == 200
    return response.json()


# The schedule


def test_a_declined_charge_is_retried_1_3_and_7_days_after_the_first_failure_to_the_second(failed):
    assert failed.first_failed_at == T0
    for retry, days in enumerate((1, 3, 7), start=1):
        early = retry_at(T0 + days * DAY - SECOND)
        assert (early.failed, early.paid, early.unknown) == ([], [], [])
        report = retry_at(T0 + days * DAY)
        assert [(p.retry, p.attempt, p.status, p.failure_code) for p in report.failed] == [
            (retry, retry + 1, AttemptStatus.FAILED, "card_declined")
        ]

    assert attempts(failed) == [
        (1, None, AttemptStatus.FAILED, "card_declined", T0),
        (2, 1, AttemptStatus.FAILED, "card_declined", T0 + DAY),
        (3, 2, AttemptStatus.FAILED, "card_declined", T0 + 3 * DAY),
        (4, 3, AttemptStatus.FAILED, "card_declined", T0 + 7 * DAY),
    ]
    assert retry_at(T0 + 30 * DAY).failed == []  # no fourth retry


def test_each_failure_emails_the_billing_administrators_once_with_the_next_retry_and_the_link(failed):
    for days in (1, 1, 3, 7, 8):  # the job twice on day 1, and once more after the last retry
        retry_at(T0 + days * DAY)

    mails = list(OutboundEmail.objects.order_by("pk"))
    assert [(m.to, m.subject) for m in mails] == [
        (["owner@example.com"], "Payment of your October 2026 statement failed"),
        (["owner@example.com"], "Payment of your October 2026 statement failed"),
        (["owner@example.com"], "Payment of your October 2026 statement failed"),
        (["owner@example.com"], "Billing account Team billing suspended: statement unpaid"),
    ]
    link = f"http://127.0.0.1:8000/billing/accounts/{failed.account.account_id}/statements/2026-10/"
    assert all(link in m.body for m in mails)
    # The next retry in the recipient's zone (no setting: UTC); 00:35 in Los Angeles is 08:35 UTC.
    assert "We will try again on Nov. 3, 2026, 8:35 a.m. (UTC)" in mails[0].body
    assert "We will try again on Nov. 5, 2026, 8:35 a.m. (UTC)" in mails[1].body
    assert "We will try again on Nov. 9, 2026, 8:35 a.m. (UTC)" in mails[2].body
    assert "Your card was declined. Try another card or contact your bank." in mails[0].body
    assert "the billing account is now suspended" in mails[3].body


def test_the_email_is_in_the_recipients_language_and_zone(failed, owner):
    owner.language, owner.time_zone = "ja", "Asia/Tokyo"
    owner.save()
    retry_at(T0 + DAY)

    mail = OutboundEmail.objects.order_by("pk").last()
    assert "2026年10月" in mail.subject and "statement" not in mail.subject
    # The next retry, 5 November 00:35 in Los Angeles, in Tokyo: 17:35 the same day.
    assert "2026年11月5日17:35" in mail.body and "Asia/Tokyo" in mail.body
    assert "カードが承認されませんでした。" in mail.body


def test_the_job_is_idempotent_one_attempt_per_scheduled_retry(failed):
    out = StringIO()
    with time_machine.travel(T0 + DAY + timedelta(minutes=10), tick=False):
        call_command("retry_statement_payments", stdout=out)
        call_command("retry_statement_payments", stdout=out)

    account_id = failed.account.account_id
    assert out.getvalue().splitlines() == [
        f"{account_id} 2026-10 retry 1 (attempt 2): USD 15.00 failed card_declined",
        "Retried 1 statement(s): 0 paid, 1 failed (0 account(s) suspended), 0 awaiting the processor; "
        "0 earlier attempt(s) settled.",
        "Retried 0 statement(s): 0 paid, 0 failed (0 account(s) suspended), 0 awaiting the processor; "
        "0 earlier attempt(s) settled.",
    ]
    assert [a[:2] for a in attempts(failed)] == [(1, None), (2, 1)]
    assert OutboundEmail.objects.count() == 2


def test_a_missed_run_makes_only_the_latest_retry_that_is_due(failed):
    report = retry_at(T0 + 4 * DAY)  # retries 1 and 2 were both due: one attempt, retry 2

    assert [(p.attempt, p.retry) for p in report.failed] == [(2, 2)]
    assert retry_at(T0 + 4 * DAY + SECOND).failed == []
    assert [(p.attempt, p.retry) for p in retry_at(T0 + 7 * DAY).failed] == [(3, 3)]


def test_a_successful_retry_pays_the_statement_and_ends_dunning(failed):
    card_with(account_of(failed), "succeed")  # the administrator's bank lifted the block
    report = retry_at(T0 + DAY)

    failed.refresh_from_db()
    assert [(p.retry, p.status) for p in report.paid] == [(1, AttemptStatus.SUCCEEDED)]
    assert (failed.status, failed.paid_at) == (StatementStatus.PAID, T0 + DAY)
    assert retry_at(T0 + 7 * DAY).failed == []
    assert account_of(failed).status == AccountStatus.ACTIVE
    assert OutboundEmail.objects.count() == 1  # the first failure's only
    assert ledger.balances(account_of(failed)).amount_due == D("0")


# Suspension and reinstatement


def test_the_last_failed_retry_suspends_and_quota_check_denies_billing_disabled(failed, project, client, fleet):
    _, raw = make_key(project)
    retry_at(T0 + 3 * DAY)
    assert account_of(failed).status == AccountStatus.ACTIVE
    assert quota_check(client, fleet, raw)["allowed"] is True

    retry_at(T0 + 7 * DAY)

    account = account_of(failed)
    failed.refresh_from_db()
    assert (account.status, account.suspension_reason) == (AccountStatus.SUSPENDED, SuspensionReason.PAST_DUE)
    assert failed.suspended_at == T0 + 7 * DAY
    project.refresh_from_db()
    assert (project.tier, project.billing_state) == (Tier.FREE, BillingState.SUSPENDED)
    decision = quota_check(client, fleet, raw)
    assert (decision["allowed"], decision["error"]["code"], decision["error"]["reason"]) == (
        False,
        403,
        "BILLING_DISABLED",
    )


def pay_form(**fields):
    return {
        "attempt": str(uuid.uuid4()),
        "method": "new_card",
        "number": "4242 4242 4242 4242",
        "exp_month": "12",
        "exp_year": "2030",
        "cvc": "123",
        "make_primary": "on",
        **fields,
    }


def pay_url(statement):
    return f"/billing/accounts/{statement.account.account_id}/statements/2026-10/pay/"


def page_url(statement):
    return f"/billing/accounts/{statement.account.account_id}/statements/2026-10/"


def test_paying_with_another_card_pays_reinstates_at_once_and_admits(suspended, project, client_for, owner, fleet):
    _, raw = make_key(project)
    client = client_for(owner)
    with time_machine.travel(T0 + 8 * DAY, tick=False):
        response = client.post(pay_url(suspended), pay_form())

    assert (response.status_code, response["Location"]) == (302, page_url(suspended))
    suspended.refresh_from_db()
    account = account_of(suspended)
    assert (suspended.status, suspended.paid_at) == (StatementStatus.PAID, T0 + 8 * DAY)
    assert (account.status, account.suspension_reason) == (AccountStatus.ACTIVE, "")
    new_card = PaymentMethod.objects.get(last4="4242", exp_year=2030)
    assert account.primary_payment_method == new_card  # the payer chose to make it primary
    [payment] = suspended.payments.filter(status=AttemptStatus.SUCCEEDED)
    assert (payment.attempt, payment.retry, payment.created_by, payment.payment_method) == (5, None, owner, new_card)
    project.refresh_from_db()
    assert (project.tier, project.billing_state) == (Tier.TIER_1, BillingState.ACTIVE)
    assert quota_check(client, fleet, raw)["allowed"] is True  # the next request, no cache to wait for
    assert ledger.balances(account).amount_due == D("0")
    messages = [str(m) for m in response.wsgi_request._messages]
    assert messages == ["Payment of USD 15.00 received: the October 2026 statement is paid."]


def test_the_card_becomes_primary_only_if_asked(suspended, client_for, owner):
    before = account_of(suspended).primary_payment_method
    with time_machine.travel(T0 + 8 * DAY, tick=False):
        client_for(owner).post(pay_url(suspended), pay_form(make_primary=""))

    account = account_of(suspended)
    assert (account.primary_payment_method, account.status) == (before, AccountStatus.ACTIVE)


def test_a_double_submit_charges_once(suspended, client_for, owner):
    form = pay_form()
    client = client_for(owner)
    with time_machine.travel(T0 + 8 * DAY, tick=False):
        first = client.post(pay_url(suspended), form)
        second = client.post(pay_url(suspended), form)

    assert (first.status_code, second.status_code) == (302, 302)
    assert TestProcessorCharge.objects.filter(idempotency_key=form["attempt"]).count() == 1
    assert suspended.payments.filter(status=AttemptStatus.SUCCEEDED).count() == 1
    assert PaymentMethod.objects.filter(last4="4242", exp_year=2030).count() == 1  # one card added, not two


def test_paying_an_existing_card_with_htmx_closes_the_dialog_and_reloads(suspended, client_for, owner):
    profile = account_of(suspended).payments_profile
    card = PaymentMethod.objects.create(
        profile=profile, brand="visa", last4="4444", exp_month=1, exp_year=2099, processor_token="tok_fine"
    )
    with time_machine.travel(T0 + 8 * DAY, tick=False):
        response = client_for(owner).post(
            pay_url(suspended), pay_form(method=str(card.pk), number="", cvc=""), headers={"HX-Request": "true"}
        )

    assert response.status_code == 200
    assert response["HX-Trigger"] == '{"billing-changed": {}, "keys-changed": {}, "close-modal": {}}'
    suspended.refresh_from_db()
    assert suspended.status == StatementStatus.PAID


@pytest.mark.parametrize(
    ("number", "reason", "attempted"),
    [
        ("4000 0000 0000 0002", "Your card was declined. Try another card or contact your bank.", False),
        ("4000 0000 0000 9995", "Your card was declined for insufficient funds.", True),
        ("4000 0000 0000 0119", "The card could not be processed. Try again in a few minutes.", True),
    ],
)
def test_a_refused_card_leaves_the_statement_past_due_and_says_why(
    suspended, client_for, owner, number, reason, attempted
):
    with time_machine.travel(T0 + 8 * DAY, tick=False):
        response = client_for(owner).post(pay_url(suspended), pay_form(number=number))

    assert response.status_code == 422
    assert f'<p class="notice notice-error" role="alert">The payment failed: {reason}</p>' in response.content.decode()
    suspended.refresh_from_db()
    assert suspended.status == StatementStatus.PAYMENT_FAILED
    assert account_of(suspended).status == AccountStatus.SUSPENDED
    mine = suspended.payments.filter(created_by=owner)
    assert [p.status for p in mine] == ([AttemptStatus.FAILED] if attempted else [])
    assert OutboundEmail.objects.count() == 4  # the jobs' failures only: the payer sees this one on the page


def test_a_processor_timeout_waits_for_the_answer_then_reinstates(suspended, client_for, owner, settings):
    with time_machine.travel(T0 + 8 * DAY, tick=False):
        response = client_for(owner).post(pay_url(suspended), pay_form(number=settings.TEST_PROCESSOR_TIMEOUT_CARD))
        again = client_for(owner).post(pay_url(suspended), pay_form())  # another payment meanwhile is refused

    assert response.status_code == 302
    assert again.status_code == 422
    assert "A payment of this statement is already being processed." in again.content.decode()
    [open_attempt] = suspended.payments.filter(created_by=owner)
    assert open_attempt.status == AttemptStatus.UNKNOWN
    assert account_of(suspended).status == AccountStatus.SUSPENDED

    report = retry_at(T0 + 8 * DAY + timedelta(minutes=10))  # the job settles it from the processor's records

    assert report.settled == [open_attempt]
    suspended.refresh_from_db()
    assert suspended.status == StatementStatus.PAID
    assert account_of(suspended).status == AccountStatus.ACTIVE


def test_card_fields_are_checked_like_the_other_card_forms(suspended, client_for, owner):
    with time_machine.travel(T0 + 8 * DAY, tick=False):
        response = client_for(owner).post(pay_url(suspended), pay_form(number="4242 4242 4242 4241", cvc="12"))

    html = response.content.decode()
    assert response.status_code == 422
    assert (
        '<p class="field-error" id="id_number_error">This card number is not valid. Check it and try again.</p>' in html
    )
    assert "4242 4242 4242 4241" not in html  # never written back
    assert not suspended.payments.filter(created_by=owner).exists()


def test_only_billing_administrators_can_pay(suspended, client_for, editor, outsider, owner):
    for user in (editor, outsider):  # the editor works on the project but does not administer its billing
        client = client_for(user)
        assert client.get(pay_url(suspended)).status_code == 404
        assert client.post(pay_url(suspended), pay_form()).status_code == 404
        assert client.get(page_url(suspended)).status_code == 404
    assert not suspended.payments.exclude(created_by=None).exists()
    response = client_for(owner).get(pay_url(suspended))
    assert response.status_code == 200
    assert "Pay USD 15.00" in response.content.decode()


def test_a_paid_statement_has_nothing_to_pay(failed, client_for, owner):
    card_with(account_of(failed), "succeed")
    retry_at(T0 + DAY)

    response = client_for(owner).get(pay_url(failed))

    assert (response.status_code, response["Location"]) == (302, page_url(failed))


def test_a_staff_suspension_is_not_lifted_by_a_payment(suspended, client_for, owner, admin_user):
    set_account_status(account_of(suspended), AccountStatus.SUSPENDED, by=admin_user, reason="chargeback")
    with time_machine.travel(T0 + 8 * DAY, tick=False):
        client_for(owner).post(pay_url(suspended), pay_form())

    suspended.refresh_from_db()
    account = account_of(suspended)
    assert suspended.status == StatementStatus.PAID
    assert (account.status, account.suspension_reason) == (AccountStatus.SUSPENDED, SuspensionReason.STAFF)


# Pages


def test_the_statement_page_shows_the_amount_due_the_next_retry_and_the_way_to_pay(failed, client_for, owner):
    retry_at(T0 + DAY)
    with time_machine.travel(T0 + 2 * DAY, tick=False):
        html = client_for(owner).get(page_url(failed)).content.decode()

    assert "USD 15.00 is past due: we could not charge it." in html
    assert "We try the primary payment method again on Nov. 5, 2026, 8:35 a.m. (UTC)." in html
    assert (
        f'href="{pay_url(failed)}" data-hx-get="{pay_url(failed)}" data-hx-target="#modal">Pay with another card'
        in (html)
    )
    assert "retry 1 of 3" in html


def test_the_billing_page_shows_the_suspension_its_reason_and_a_link_to_pay(suspended, client_for, owner):
    html = client_for(owner).get("/billing/").content.decode()

    assert '<small class="suspension-reason">Past-due statement</small>' in html
    assert "The October 2026 statement is past due: USD 15.00." in html
    assert "The account is suspended for it: its projects' paid requests are refused until it is paid." in html
    assert f'<a class="button primary small" href="{pay_url(suspended)}"' in html
    # The project's Quota tier cell says why.
    assert (
        '<span class="badge warning">Billing suspended</span> <small class="tier-hint">Past-due statement</small>'
        in (html)
    )


def test_the_japanese_statement_page(suspended, client_for, owner):
    owner.language = "ja"
    owner.save()

    html = client_for(owner).get(page_url(suspended)).content.decode()
    dialog = client_for(owner).get(pay_url(suspended)).content.decode()

    assert '<html lang="ja"' in html
    assert 'id="statement-past-due"' in html
    for text in ("2026年10月", "お支払い失敗", "請求額", "USD 15.00", "カードが承認されませんでした。"):
        assert text in html
    for text in ("請求先アカウント", "お支払い方法", "新しいカード", "USD 15.00"):
        assert text in dialog


# The audit log


def test_every_step_is_in_the_audit_log_with_its_actor(suspended, client_for, owner):
    start = AuditEvent.objects.order_by("pk").last().pk if AuditEvent.objects.exists() else 0
    with time_machine.travel(T0 + 8 * DAY, tick=False):
        client_for(owner).post(pay_url(suspended), pay_form(make_primary=""))

    dunning = [
        (e.action, e.actor_kind, e.actor_id, e.after.get("retry"), e.after.get("payment") or e.after.get("status"))
        for e in AuditEvent.objects.filter(pk__lte=start).exclude(action="project.tier").order_by("pk")
        if e.action.startswith(("statement.payment", "statement.dunning", "billing_account.status"))
    ]
    assert dunning == [
        ("statement.payment.start", "system", None, None, None),
        ("statement.payment.settle", "system", None, None, "failed"),
        ("statement.dunning.email", "system", None, None, None),
        ("statement.payment.retry", "system", None, 1, None),
        ("statement.payment.settle", "system", None, 1, "failed"),
        ("statement.dunning.email", "system", None, None, None),
        ("statement.payment.retry", "system", None, 2, None),
        ("statement.payment.settle", "system", None, 2, "failed"),
        ("statement.dunning.email", "system", None, None, None),
        ("statement.payment.retry", "system", None, 3, None),
        ("statement.payment.settle", "system", None, 3, "failed"),
        ("billing_account.status", "system", None, None, "suspended"),
        ("statement.dunning.email", "system", None, None, None),
    ]
    paid = [
        (e.action, e.actor_kind, e.actor_id, e.after.get("payment") or e.after.get("status"))
        for e in AuditEvent.objects.filter(pk__gt=start).order_by("pk")
        if e.action.startswith(("statement.payment", "billing_account.status", "payment_method.add"))
    ]
    assert paid == [
        ("payment_method.add", "user", owner.pk, None),
        ("statement.payment.start", "user", owner.pk, None),
        ("statement.payment.settle", "user", owner.pk, "succeeded"),
        ("billing_account.status", "user", owner.pk, "active"),
    ]
    suspension = AuditEvent.objects.get(action="billing_account.status", after__status="suspended")
    assert (suspension.reason, suspension.after["suspension_reason"]) == (
        "statement 2026-10 unpaid after the last retry",
        "past_due",
    )
    email = AuditEvent.objects.filter(action="statement.dunning.email").last()
    assert email.after == {"to": ["owner@example.com"], "suspended": True, "next_retry_at": None}


# The demo


def test_the_demo_has_a_past_due_statement_on_the_developers_billing_page(db, client):
    from datetime import UTC

    with time_machine.travel(datetime(2026, 11, 20, 18, 0, tzinfo=UTC), tick=False):
        call_command("seed_demo", "--allow-without-debug", stdout=StringIO())
        call_command("seed_demo", "--allow-without-debug", stdout=StringIO())  # idempotent
        developer = BillingAccount.objects.get(display_name="Agency billing").created_by
        client.force_login(developer)
        html = client.get("/billing/").content.decode()

    account = BillingAccount.objects.get(display_name="Agency billing")
    statement = account.statements.get(status=StatementStatus.PAYMENT_FAILED)
    assert (statement.month, statement.amount_due, statement.failure_code) == (OCTOBER, D("48.20"), "card_declined")
    first = datetime(2026, 11, 2, 0, 5, tzinfo=LA)  # the charge job on the 2nd
    assert [(a[0], a[1], a[2], a[4]) for a in attempts(statement)] == [
        (1, None, AttemptStatus.FAILED, first),
        (2, 1, AttemptStatus.FAILED, first + DAY + timedelta(minutes=5)),
        (3, 2, AttemptStatus.FAILED, first + 3 * DAY + timedelta(minutes=5)),
        (4, 3, AttemptStatus.FAILED, first + 7 * DAY + timedelta(minutes=5)),
    ]
    assert (account.status, account.suspension_reason) == (AccountStatus.SUSPENDED, SuspensionReason.PAST_DUE)
    assert "The October 2026 statement is past due: USD 48.20." in html
    assert f"/billing/accounts/{account.account_id}/statements/2026-10/pay/" in html
