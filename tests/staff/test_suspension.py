"""Suspension and reinstatement by Finance: a reason each time, and admission follows at once (R18, R25)."""

import os

import pytest
from django.urls import reverse

from billing.models import AccountStatus, BillingAccount, SuspensionReason
from studio.models import ActorKind, BillingState, Project
from tests.staff.finance import audit
from usage.models import FleetToken


@pytest.fixture(autouse=True)
def _fresh_limiter(settings):
    """Empty limiter counters (as tests/usage/conftest.py does): in-process, or the test Redis database."""
    import redis

    from usage import api, limiter

    limiter._limiters.clear()
    api._valid_tokens.clear()
    if settings.REDIS_URL:
        settings.REDIS_URL = settings.REDIS_URL.rsplit("/", 1)[0] + "/" + os.environ.get("TEST_REDIS_DB", "15")
        redis.Redis.from_url(settings.REDIS_URL).flushdb()
    yield
    limiter._limiters.clear()


@pytest.fixture
def fleet(db):
    return FleetToken.issue(name="fleet-staff")[1]


def quota_check(client, fleet, raw_key) -> dict:
    body = {"api_key": raw_key, "model": "gemini-2.5-pro", "kind": "generate", "estimated_input_tokens": 100}
    response = client.post(
        "/api/v1/quota:check", body, content_type="application/json", headers={"Authorization": f"Bearer {fleet}"}
    )
    assert response.status_code == 200
    return response.json()


def decision(answer: dict):
    return (answer["allowed"], (answer.get("error") or {}).get("reason"))


def status_url(account):
    return reverse("staff:account-status", args=[account.account_id])


def test_suspension_refuses_the_next_request_and_reinstatement_admits_it_at_once(
    client, finance, customer_world, fleet
):
    account, raw_key = customer_world["account"], customer_world["key"][1]
    assert decision(quota_check(client, fleet, raw_key)) == (True, None)
    client.force_login(finance)

    response = client.post(status_url(account), {"decision": "suspend", "reason": "Chargeback fraud"})

    assert (response.status_code, response["Location"]) == (302, reverse("staff:past-due"))
    account.refresh_from_db()
    assert (account.status, account.suspension_reason) == (AccountStatus.SUSPENDED, SuspensionReason.STAFF)
    assert Project.objects.get(pk=customer_world["project"].pk).billing_state == BillingState.SUSPENDED
    assert decision(quota_check(client, fleet, raw_key)) == (False, "BILLING_DISABLED")

    client.post(status_url(account), {"decision": "reinstate", "reason": "Chargeback withdrawn"})

    account.refresh_from_db()
    assert (account.status, account.suspension_reason) == (AccountStatus.ACTIVE, "")
    assert decision(quota_check(client, fleet, raw_key)) == (True, None)
    assert [row for row in audit(account) if row[0] == "billing_account.status"] == [
        (
            "billing_account.status",
            finance.email,
            ActorKind.STAFF,
            {"status": "active", "suspension_reason": ""},
            {"status": "suspended", "suspension_reason": "staff"},
            "Chargeback fraud",
        ),
        (
            "billing_account.status",
            finance.email,
            ActorKind.STAFF,
            {"status": "suspended", "suspension_reason": "staff"},
            {"status": "active", "suspension_reason": ""},
            "Chargeback withdrawn",
        ),
    ]


def test_the_dialog_offers_the_opposite_of_the_current_status(client, finance, customer_world):
    account = customer_world["account"]
    client.force_login(finance)
    assert client.get(status_url(account)).context["form"]["decision"].value() == "suspend"

    client.post(status_url(account), {"decision": "suspend", "reason": "x"})

    response = client.get(status_url(account))
    assert response.context["form"]["decision"].value() == "reinstate"
    assert "billing_account.status" in response.content.decode()  # the account's history


def test_a_suspension_with_htmx_closes_the_dialog_and_reloads_the_queue(client, finance, customer_world):
    client.force_login(finance)

    response = client.post(
        status_url(customer_world["account"]), {"decision": "suspend", "reason": "x"}, headers={"HX-Request": "true"}
    )

    assert response.status_code == 200
    assert "queue-changed" in response["HX-Trigger"] and "Billing account suspended." in response.content.decode()


@pytest.mark.parametrize(
    ("data", "errors"),
    [
        ({"decision": "suspend", "reason": ""}, {"reason": ["This field is required."]}),
        ({"decision": "", "reason": "Why"}, {"decision": ["This field is required."]}),
    ],
)
def test_a_change_without_a_reason_is_refused_and_changes_nothing(client, finance, customer_world, data, errors):
    account = customer_world["account"]
    client.force_login(finance)

    response = client.post(status_url(account), data)

    assert response.status_code == 422
    assert response.context["form"].errors == errors
    assert BillingAccount.objects.get(pk=account.pk).status == AccountStatus.ACTIVE
    assert [row for row in audit(account) if row[0] == "billing_account.status"] == []


def test_a_closed_account_is_not_reopened(client, finance, customer_world):
    account = customer_world["account"]
    BillingAccount.objects.filter(pk=account.pk).update(status=AccountStatus.CLOSED)
    client.force_login(finance)

    response = client.post(status_url(account), {"decision": "reinstate", "reason": "x"})

    assert response.status_code == 422
    assert BillingAccount.objects.get(pk=account.pk).status == AccountStatus.CLOSED


@pytest.mark.parametrize("persona", [None, "customer", "groupless_staff", "support"])
@pytest.mark.parametrize("method", ["get", "post"])
def test_the_status_page_is_404_to_all_but_finance(client, request, customer_world, persona, method):
    if persona:
        client.force_login(request.getfixturevalue(persona))
    response = getattr(client, method)(status_url(customer_world["account"]), {"decision": "suspend", "reason": "x"})
    assert response.status_code == 404
    assert BillingAccount.objects.get(pk=customer_world["account"].pk).status == AccountStatus.ACTIVE


def test_an_unknown_account_is_404(client, finance):
    client.force_login(finance)
    assert client.get(reverse("staff:account-status", args=["NOPE"])).status_code == 404
