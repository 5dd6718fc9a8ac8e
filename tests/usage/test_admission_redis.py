"""quota:check in one Redis round trip (usage.admission_redis): no database on the way, the same answers as the
database path, a revoked key refused on the very next check, and admission going on while PostgreSQL is down."""

import json
import re
import socket
from decimal import Decimal

import pytest
from django.db import OperationalError, connection

from billing.models import AccountStatus
from studio.models import Tier
from tests.factories import make_billed_project, make_key, make_project, make_user
from tests.usage.test_fleet_entry import call
from usage import admission, admission_redis, admission_store, catalog
from usage.models import CatalogModel, FleetToken, QuotaOverride

MODEL = "gemini-2.5-flash"


def ask(raw, model=MODEL, kind="generate", tokens=100):
    return admission.check(raw_key=raw, model_id=model, kind=kind, estimated_input_tokens=tokens)


def from_database(raw, model=MODEL, kind="generate", tokens=100):
    return admission.check_from_database(raw_key=raw, model_id=model, kind=kind, estimated_input_tokens=tokens)


def without_ids(answer: dict) -> dict:
    """An answer less what differs between two projects: the key and project ids, the reservation id, and the
    seconds until a window rolls (the two checks may fall either side of a second: `resets` compares them)."""
    kept = {name: value for name, value in answer.items() if name not in ("key_id", "project_id", "reservation_id")}
    kept["limits"] = [{**limit, "reset_seconds": None} for limit in answer.get("limits", [])]
    if "error" in kept and "retry_delay_seconds" in kept["error"]:
        kept["error"] = {**kept["error"], "retry_delay_seconds": None, "message": None}
    return kept


def resets(answer: dict) -> list[int]:
    return [limit["reset_seconds"] for limit in answer.get("limits", [])]


@pytest.fixture
def stored(db, redis_url, within_one_minute, django_capture_on_commit_callbacks):
    """A checker whose every change is committed (its write-through run): store(check) -> its answer. The test's
    checks fall in one clock minute (a minute ending between twin checks once made their counts differ on CI)."""

    def run(function, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return function(*args, **kwargs)

    return run


def test_the_second_check_is_answered_from_redis_without_a_query(
    redis_url, within_one_minute, paid_key, django_assert_num_queries
):
    key, raw = paid_key
    first = ask(raw)  # no record yet: from the database, which writes the records (read-through)
    assert admission_store.client().hget(admission_store.KEYS, key.secret_hash) == f"{key.pk}:{key.project_id}"

    with django_assert_num_queries(0):
        second = ask(raw)

    assert second["allowed"] is True
    assert (second["key_id"], second["project_id"], second["tier"]) == (str(key.pk), key.project.project_id, "tier_1")
    assert (
        [limit["quota_id"] for limit in second["limits"]]
        == [limit["quota_id"] for limit in first["limits"]]
        == [
            "GenerateRequestsPerMinutePerProjectPerModel-Tier1",
            "GenerateContentInputTokensPerModelPerMinute-Tier1",
            "GenerateRequestsPerDayPerProjectPerModel-Tier1",
            "GenerateSpendPer10MinutesPerProject-Tier1",
        ]
    )
    rpm, tpm, rpd, spend = second["limits"]
    assert (rpm["limit"], rpm["remaining"]) == (1_000, 998)  # both checks counted in the same counters
    assert (tpm["limit"], tpm["remaining"]) == (1_000_000, 1_000_000 - 200)
    assert (rpd["limit"], rpd["remaining"]) == (10_000, 9_998)
    assert (spend["limit"], spend["remaining"]) == (10_000_000, 10_000_000 - 2 * 30)  # 100 tokens at USD 0.30 / 1M
    # This check's reservation: its 100 tokens (0x64) and USD 0.00003 (0x1e micro-USD), signed.
    assert re.fullmatch(r"r1_[0-9a-f]+_64_1e_[0-9a-f]{16}", second["reservation_id"])


def test_the_reservation_of_a_redis_answer_settles_like_the_database_paths(redis_url, within_one_minute, paid_key):
    """The id signs the limits the script counted: the limiter takes it back (its estimate is replaced)."""
    from usage.limiter import Usage, get_limiter

    key, raw = paid_key
    ask(raw)
    answer = ask(raw, tokens=1_000)
    tier_counters = admission.settlement_counters("tier_1", MODEL, catalog.get_catalog())
    scope = admission.project_scope(key.project_id)
    get_limiter().settle(scope, [Usage(answer["reservation_id"], {"input_tokens": 10}, tier_counters)])

    tpm = ask(raw, tokens=0)["limits"][1]
    assert tpm["quota_id"] == "GenerateContentInputTokensPerModelPerMinute-Tier1"
    assert tpm["remaining"] == 1_000_000 - 100 - 10  # the 1,000 reserved became the 10 used


def _twins(case):
    """Two projects alike but for their ids, set up by `case`: (raw key of A, raw key of B)."""
    raws = []
    for name in ("A", "B"):
        owner = make_user(f"{case}-{name}@example.com")
        project = make_billed_project(owner, name=f"{case} {name}") if case != "free" else make_project(owner)
        if case == "override":
            QuotaOverride.objects.create(project=project, model_id=MODEL, rpm=5_000, tpm=None, rpd=7)
        elif case == "override_free":
            project = make_project(owner, name="free with override")
            QuotaOverride.objects.create(project=project, model_id=MODEL, rpm=5_000)
        elif case == "cap":
            project.set_spend_cap(Decimal("12.50"), by=owner)
        elif case == "tier_3":
            project.tier = Tier.TIER_3
            project.save(update_fields=["tier"])
        elif case == "suspended":
            account = project.billing.account
            account.status = AccountStatus.SUSPENDED
            account.save(update_fields=["status"])
        raws.append(make_key(project, name="twin")[1])
    return raws


@pytest.mark.parametrize("case", ["free", "paid", "override", "override_free", "cap", "tier_3", "suspended"])
@pytest.mark.parametrize(
    ("model", "kind", "tokens"),
    [
        (MODEL, "generate", 1_500),
        ("gemini-2.5-pro", "batch", 250_000),
        (MODEL, "count_tokens", 10),
        ("nope", "generate", 1),
    ],
)
def test_redis_answers_as_the_database_does(stored, case, model, kind, tokens, django_assert_num_queries):
    """Twin projects: A always answered from the database, B from Redis (after its first check wrote its records),
    each checked twice: the second answers are the same but for the ids."""
    raw_a, raw_b = stored(_twins, case)
    first_a = from_database(raw_a, model, kind, tokens)
    first_b = ask(raw_b, model, kind, tokens)  # no record yet: from the database (read-through)
    expected = from_database(raw_a, model, kind, tokens)

    with django_assert_num_queries(0):
        answer = ask(raw_b, model, kind, tokens)

    assert without_ids(first_b) == without_ids(first_a)
    assert without_ids(answer) == without_ids(expected)
    assert all(abs(b - a) <= 1 for a, b in zip(resets(expected), resets(answer), strict=True))


def test_the_limits_the_script_counts_are_those_of_limits_for(stored, django_assert_num_queries):
    _raw_a, raw_b = stored(_twins, "cap")
    ask(raw_b)
    fast = admission_redis.for_limiter(admission.get_limiter())
    answer = fast.check(
        raw_key=raw_b, model_id=MODEL, kind="generate", estimated_input_tokens=900, catalog=catalog.get_catalog()
    )
    project = admission.find_admittee(raw_b, MODEL)
    assert answer.limits == admission.limits_for(project, MODEL, estimated_input_tokens=900)
    assert [limit.quota_id for limit in answer.limits][-1] == "ProjectMonthlySpendCap"
    assert answer.limits[-1].limit == 12_500_000


def test_a_model_taken_off_the_free_tier_is_refused_to_free_projects_from_redis(stored, free_key):
    _key, raw = free_key
    ask(raw)
    model = CatalogModel.objects.get(model_id=MODEL)
    model.free_tier_available = False
    stored(model.save)
    catalog.forget()

    answer = ask(raw)

    assert answer["error"]["reason"] == "MODEL_NOT_AVAILABLE_ON_TIER"


def test_a_revoked_key_is_refused_on_the_very_next_check(redis_url, paid_key, django_capture_on_commit_callbacks):
    key, raw = paid_key
    ask(raw)
    assert ask(raw)["allowed"] is True  # from Redis

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        key.revoke(by=key.created_by)
        # Before the commit: the key's record is gone, so the check reads the database, where it is revoked.
        assert ask(raw)["error"]["reason"] == "API_KEY_INVALID"
    for callback in callbacks:
        callback()

    assert admission_store.client().hget(admission_store.KEYS, key.secret_hash) == admission_store.REVOKED
    assert ask(raw)["error"]["reason"] == "API_KEY_INVALID"
    # Nothing written later makes it valid again: a read-through of the old state, a repair.
    admission_store.read_through(key.secret_hash, key.pk, key.project_id)
    admission_store.write_keys({key.secret_hash: f"{key.pk}:{key.project_id}"})
    assert ask(raw)["error"]["reason"] == "API_KEY_INVALID"


def test_a_redis_outage_falls_back_to_the_database(redis_url, paid_key, settings, caplog):
    _key, raw = paid_key
    ask(raw)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"

    answer = ask(raw)

    assert answer["allowed"] is True  # the database path, counted in this process (the limiter's fallback)
    assert answer["limits"][0]["remaining"] == 999


@pytest.fixture
def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_admission_goes_on_while_postgresql_is_down(redis_url, within_one_minute, settings, closed_port):
    owner = make_user("outage@example.com")
    key, raw = make_key(make_billed_project(owner, name="Outage"), name="k")
    revoked, revoked_raw = make_key(key.project, name="revoked")
    revoked.revoke(by=owner)
    _, fleet = FleetToken.issue(name="fleet-outage")
    settings.FLEET_TOKEN_CACHE_SECONDS = 0  # every request asks the database for its token again

    def quota_check(api_key):
        body = json.dumps({"api_key": api_key, "model": MODEL, "estimated_input_tokens": 7}).encode()
        status, _headers, content = call("POST", "/api/v1/quota:check", body, {"Authorization": f"Bearer {fleet}"})
        return status, json.loads(content)

    assert quota_check(raw)[1]["allowed"] is True  # writes the key's records (read-through)
    assert quota_check(revoked_raw)[1]["error"]["reason"] == "API_KEY_INVALID"
    catalog.get_catalog()

    port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = closed_port
    settings.CATALOG_TTL_SECONDS = 0  # the catalog's reload fails too: the process keeps its snapshot
    try:
        with pytest.raises(OperationalError):
            connection.ensure_connection()
        status, answer = quota_check(raw)
        assert status == 200
        assert answer["allowed"] is True
        assert answer["limits"][0]["remaining"] == 998
        assert quota_check(revoked_raw)[1]["error"]["reason"] == "API_KEY_INVALID"  # its tombstone
    finally:
        connection.close()
        connection.settings_dict["PORT"] = port


def test_a_month_counter_without_its_seed_is_seeded_from_the_books_on_the_redis_path(stored, django_assert_num_queries):
    _raw_a, raw_b = stored(_twins, "cap")
    ask(raw_b, tokens=1_000)
    project_pk = admission.find_admittee(raw_b, MODEL).project_pk
    connection_ = admission_store.client()
    month_keys = list(connection_.scan_iter(match=f"rl:{{p{project_pk}}}:ProjectMonthlySpendCap:*"))
    assert month_keys
    connection_.delete(*month_keys)  # as at the start of a month, or after Redis lost them

    with django_assert_num_queries(1):  # the seed: the month's spend in the books
        answer = ask(raw_b, tokens=1_000)

    cap = answer["limits"][-1]
    assert cap["quota_id"] == "ProjectMonthlySpendCap"
    assert (cap["limit"], cap["remaining"]) == (12_500_000, 12_500_000 - 300)  # nothing spent; 1,000 tokens reserved


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_with_the_books_unreadable_a_check_goes_without_the_cap(redis_url, closed_port, caplog):
    owner = make_user("seedless@example.com")
    project = make_billed_project(owner, name="Seedless")
    project.set_spend_cap(Decimal("5"), by=owner)
    _key, raw = make_key(project, name="k")
    ask(raw)
    for key in admission_store.client().scan_iter(match=f"rl:{{p{project.pk}}}:ProjectMonthlySpendCap:*"):
        admission_store.client().delete(key)
    port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = closed_port
    try:
        answer = ask(raw)
    finally:
        connection.close()
        connection.settings_dict["PORT"] = port

    assert answer["allowed"] is True
    assert "ProjectMonthlySpendCap" not in [limit["quota_id"] for limit in answer["limits"]]
    assert "checked without it" in caplog.text
