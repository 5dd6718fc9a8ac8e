import json

import pytest
from django.core.management import call_command

from billing.models import AccountStatus
from studio.models import BillingState, Tier
from tests.factories import make_account, make_key, make_project, make_user
from usage.models import CatalogModel, FleetToken, UsageEvent


@pytest.fixture
def fleet(db):
    _, raw = FleetToken.issue(name="fleet-a")
    return raw


def post(client, path, body, token):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post(path, json.dumps(body), content_type="application/json", headers=headers)


def check(client, fleet, raw_key, model="gemini-2.5-flash", kind="generate", tokens=100):
    response = post(
        client,
        "/api/v1/quota:check",
        {"api_key": raw_key, "model": model, "kind": kind, "estimated_input_tokens": tokens},
        fleet,
    )
    assert response.status_code == 200
    return response.json()


@pytest.mark.parametrize("token", [None, "flt_wrong", "Basic abc"])
def test_missing_or_wrong_fleet_token_is_401_and_writes_nothing(client, paid_key, event, token):
    key, _ = paid_key

    response = post(client, "/api/v1/usage:report", {"events": [event(key)]}, token)

    assert response.status_code == 401
    assert not UsageEvent.objects.exists()


def test_revoked_fleet_token_is_401(client, fleet, paid_key, event):
    from django.utils import timezone

    FleetToken.objects.update(revoked_at=timezone.now())
    key, _ = paid_key

    assert post(client, "/api/v1/usage:report", {"events": [event(key)]}, fleet).status_code == 401


def test_a_fleet_token_revocation_applies_within_the_cache_time(client, fleet, paid_key, event, settings):
    from django.utils import timezone

    settings.FLEET_TOKEN_CACHE_SECONDS = 0
    key, _ = paid_key
    assert post(client, "/api/v1/usage:report", {"events": [event(key)]}, fleet).status_code == 200
    FleetToken.objects.update(revoked_at=timezone.now())

    assert post(client, "/api/v1/usage:report", {"events": [event(key)]}, fleet).status_code == 401


def test_fleet_token_is_stored_hashed(fleet):
    token = FleetToken.objects.get()

    assert fleet not in (token.secret_hash, token.prefix, token.name)
    assert FleetToken.objects.authenticate(fleet) == token


def test_usage_report_answers_counts_and_per_event_errors(client, fleet, paid_key, event):
    key, _ = paid_key

    response = post(
        client,
        "/api/v1/usage:report",
        {"events": [event(key, event_id="a"), event(key, event_id="b", kind="x")]},
        fleet,
    )

    assert response.status_code == 200
    assert response.json() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": [
            {
                "index": 1,
                "event_id": "b",
                "errors": {"kind": ["Input should be 'generate', 'count_tokens', 'batch' or 'cache_storage'"]},
            }
        ],
    }


def test_oversized_batch_is_refused_whole(client, fleet, paid_key, event):
    key, _ = paid_key

    response = post(client, "/api/v1/usage:report", {"events": [event(key) for _ in range(1001)]}, fleet)

    assert response.status_code == 413
    assert not UsageEvent.objects.exists()


@pytest.mark.parametrize("body", ["not json", json.dumps({"evts": []}), json.dumps([1, 2])])
def test_malformed_report_body_is_400(client, fleet, body):
    response = client.post(
        "/api/v1/usage:report", body, content_type="application/json", headers={"Authorization": f"Bearer {fleet}"}
    )

    assert response.status_code == 400


def test_openapi_document(client):
    document = client.get("/api/v1/openapi.json").json()

    assert set(document["paths"]) == {"/api/v1/quota:check", "/api/v1/usage:report"}
    report_schema = document["paths"]["/api/v1/usage:report"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    assert report_schema["properties"]["events"]["maxItems"] == 1000
    assert document["components"]["securitySchemes"] == {"FleetTokenAuth": {"type": "http", "scheme": "bearer"}}


# quota:check


def test_invalid_or_revoked_key(client, fleet, paid_key):
    key, raw = paid_key
    assert check(client, fleet, "AIzaSy-not-a-key")["error"]["reason"] == "API_KEY_INVALID"
    key.revoke(by=None)
    assert check(client, fleet, raw) == {
        "allowed": False,
        "error": {
            "code": 400,
            "status": "INVALID_ARGUMENT",
            "reason": "API_KEY_INVALID",
            "message": "API key not valid. Please pass a valid API key.",
        },
        "key_id": None,
        "project_id": None,
        "tier": None,
        "limits": [],
        "reservation_id": None,
    }


def test_unknown_model(client, fleet, paid_key):
    _, raw = paid_key

    assert check(client, fleet, raw, model="gpt-9")["error"]["reason"] == "MODEL_NOT_FOUND"


def test_model_not_available_on_the_free_tier(client, fleet, free_key):
    _, raw = free_key
    CatalogModel.objects.filter(pk="gemini-2.5-pro").update(free_tier_available=False)

    decision = check(client, fleet, raw, model="gemini-2.5-pro")

    assert (decision["allowed"], decision["error"]["code"], decision["error"]["reason"]) == (
        False,
        403,
        "MODEL_NOT_AVAILABLE_ON_TIER",
    )


def test_suspended_billing_account_stops_paid_usage(client, fleet):
    user = make_user("suspended@example.com")
    project = make_project(user)
    _, raw = make_key(project)
    account = make_account(user, projects=[project])
    account.status = AccountStatus.SUSPENDED
    account.save()

    assert check(client, fleet, raw)["error"]["reason"] == "BILLING_DISABLED"


def test_admission_counts_and_denies_over_the_free_rpm_with_the_quota_named(client, fleet, free_key):
    _, raw = free_key  # free tier gemini-2.5-flash: RPM 10, TPM 250,000, RPD 250

    decisions = [check(client, fleet, raw, tokens=10) for _ in range(11)]

    assert [d["allowed"] for d in decisions] == [True] * 10 + [False]
    first = decisions[0]
    assert first["tier"] == "free"
    assert [(q["quota_id"], q["limit"], q["remaining"]) for q in first["limits"]] == [
        ("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", 10, 9),
        ("GenerateContentInputTokensPerModelPerMinute-FreeTier", 250_000, 249_990),
        ("GenerateRequestsPerDayPerProjectPerModel-FreeTier", 250, 249),
    ]
    error = decisions[-1]["error"]
    assert (error["code"], error["status"], error["quota_id"], error["limit"]) == (
        429,
        "RESOURCE_EXHAUSTED",
        "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
        10,
    )
    assert 1 <= error["retry_delay_seconds"] <= 60


def test_tpm_counts_the_estimate(client, fleet, free_key):
    _, raw = free_key

    assert check(client, fleet, raw, tokens=200_000)["allowed"] is True
    denied = check(client, fleet, raw, tokens=60_000)

    assert denied["error"]["quota_id"] == "GenerateContentInputTokensPerModelPerMinute-FreeTier"
    assert check(client, fleet, raw, tokens=50_000)["allowed"] is True  # the denied request counted nothing


def test_count_tokens_is_always_admitted_and_never_counted(client, fleet, free_key):
    _, raw = free_key

    decisions = [check(client, fleet, raw, kind="count_tokens") for _ in range(20)]

    assert all(d["allowed"] and d["limits"] == [] for d in decisions)
    assert check(client, fleet, raw)["limits"][0]["remaining"] == 9


def test_a_tier_change_applies_to_the_next_request(client, fleet):
    user = make_user("grows@example.com")
    project = make_project(user)
    _, raw = make_key(project)
    assert check(client, fleet, raw)["limits"][0]["limit"] == 10

    make_account(user, projects=[project])  # billing linked: Tier 1
    project.refresh_from_db()
    assert (project.tier, project.billing_state) == (Tier.TIER_1, BillingState.ACTIVE)

    decision = check(client, fleet, raw)
    assert decision["tier"] == "tier_1"
    assert [(q["quota_id"], q["limit"]) for q in decision["limits"]][:2] == [
        ("GenerateRequestsPerMinutePerProjectPerModel-Tier1", 1000),
        ("GenerateContentInputTokensPerModelPerMinute-Tier1", 1_000_000),
    ]


def test_spend_limit_per_rolling_ten_minutes(client, fleet, paid_key):
    from usage.models import SpendLimit

    SpendLimit.objects.filter(tier="tier_1").update(usd_per_10_minutes=2)
    _, raw = paid_key  # gemini-2.5-pro input at USD 1.25 per 1M up to 200k: 200k tokens are USD 0.25

    decisions = [check(client, fleet, raw, model="gemini-2.5-pro", tokens=200_000) for _ in range(9)]

    assert [d["allowed"] for d in decisions] == [True] * 8 + [False]
    assert decisions[0]["limits"][-1] == {
        "quota_id": "GenerateSpendPer10MinutesPerProject-Tier1",
        "limit": 2_000_000,
        "remaining": 1_750_000,
        "unit": "micro_usd",
        "reset_seconds": decisions[0]["limits"][-1]["reset_seconds"],
    }
    assert decisions[-1]["error"]["quota_id"] == "GenerateSpendPer10MinutesPerProject-Tier1"
    # The spend limit is per project: another model of the same project shares it.
    other_model = check(client, fleet, raw, model="gemini-2.5-flash", tokens=500_000)  # USD 0.15, nothing left
    assert other_model["error"]["quota_id"] == "GenerateSpendPer10MinutesPerProject-Tier1"


@pytest.mark.parametrize(
    ("model", "kind", "tokens", "output_allowance", "micro_usd"),
    [
        # Up to the 200k threshold: the standard input price (USD 1.25 per 1M).
        ("gemini-2.5-pro", "generate", 200_000, 0, 250_000),
        # Over it, the whole prompt at the long-prompt price (USD 2.50): 500,002.5, rounded up.
        ("gemini-2.5-pro", "generate", 200_001, 0, 500_003),
        # Batch pays the batch factor (50 %) of USD 0.30 per 1M.
        ("gemini-2.5-flash", "batch", 100_000, 0, 15_000),
        # The output allowance at the output price (USD 2.50 per 1M): 30,000 + 2,500.
        ("gemini-2.5-flash", "generate", 100_000, 1_000, 32_500),
        # A fraction of a micro-dollar still counts: 1 token at USD 0.10 per 1M is 0.1 micro-USD.
        ("gemini-2.5-flash-lite", "generate", 1, 0, 1),
    ],
)
def test_spend_estimate_follows_the_rating_rules(
    client, fleet, paid_key, settings, model, kind, tokens, output_allowance, micro_usd
):
    settings.SPEND_ESTIMATE_OUTPUT_TOKENS = output_allowance
    _, raw = paid_key

    spend = check(client, fleet, raw, model=model, kind=kind, tokens=tokens)["limits"][-1]

    assert (spend["quota_id"], spend["limit"] - spend["remaining"]) == (
        "GenerateSpendPer10MinutesPerProject-Tier1",
        micro_usd,
    )


def test_quota_check_validates_its_body(client, fleet):
    response = post(client, "/api/v1/quota:check", {"api_key": "x", "model": "m", "estimated_input_tokens": -5}, fleet)

    assert response.status_code == 422


# Operator commands


def test_create_fleet_token_prints_the_secret_alone_on_the_last_line(capsys, db):
    call_command("create_fleet_token", "edge-eu")

    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("flt_")
    assert FleetToken.objects.authenticate(last).name == "edge-eu"


def test_create_api_key_for_the_default_project(capsys, db):
    user = make_user("cli@example.com")
    default = make_project(user, name="First")
    make_project(user, name="Second")

    call_command("create_api_key", "CLI@example.com", "--name", "Script")

    raw = capsys.readouterr().out.strip().splitlines()[-1]
    from studio.models import ApiKey

    key = ApiKey.objects.authenticate(raw)
    assert (key.name, key.project) == ("Script", default)


def test_admission_marks_the_key_used(client, fleet, paid_key):
    key, raw = paid_key

    check(client, fleet, raw)

    key.refresh_from_db()
    assert key.last_used_at is not None


def test_a_retired_model_is_refused_at_admission_but_its_usage_is_still_rated(client, fleet, paid_key, event):
    key, raw = paid_key
    CatalogModel.objects.filter(pk="gemini-2.0-flash").update(active=False)

    assert check(client, fleet, raw, model="gemini-2.0-flash")["error"]["reason"] == "MODEL_NOT_FOUND"
    report = post(client, "/api/v1/usage:report", {"events": [event(key, model="gemini-2.0-flash")]}, fleet).json()
    assert report["accepted"] == 1
