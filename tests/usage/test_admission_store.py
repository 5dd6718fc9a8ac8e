"""The admission store (usage.admission_store, issue 14): every change the product makes to what quota:check reads is
written through (the record goes at once, so that a check meanwhile reads the database, and comes back from the
database after the commit), a check the store cannot answer reads through, `sync` and `manage.py sync_admission`
find and repair disagreements, and the jobs that keep it (sync_admission, flush_key_use)."""

import io
import socket
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import redis
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from huey.contrib.djhuey import HUEY

import usage.jobs
from billing import ledger
from billing.models import AccountStatus
from billing.payments import pay_prepayment
from billing.services import add_card, link_project, set_account_status, unlink_project
from billing.tiers import override_tier
from studio.models import ApiKey, BillingState, Project, Tier
from tests.factories import make_account, make_billed_project, make_key, make_project, make_staff, make_user
from tests.studio.test_jobs import hold_lock_in_another_thread
from usage import admission, admission_store, catalog
from usage.admission_store import CATALOG, KEYS, REVOKED, USED
from usage.models import CatalogModel, RateLimit, SpendLimit
from usage.quotas import approve, request_increase

MODEL = "gemini-2.5-flash"
CAP = "ProjectMonthlySpendCap"
FREE = {
    "GenerateRequestsPerMinutePerProjectPerModel-FreeTier": 10,
    "GenerateContentInputTokensPerModelPerMinute-FreeTier": 250_000,
    "GenerateRequestsPerDayPerProjectPerModel-FreeTier": 250,
}
TIER_1 = {
    "GenerateRequestsPerMinutePerProjectPerModel-Tier1": 1_000,
    "GenerateContentInputTokensPerModelPerMinute-Tier1": 1_000_000,
    "GenerateRequestsPerDayPerProjectPerModel-Tier1": 10_000,
    "GenerateSpendPer10MinutesPerProject-Tier1": 10_000_000,
}
TIER_2 = {
    "GenerateRequestsPerMinutePerProjectPerModel-Tier2": 2_000,
    "GenerateContentInputTokensPerModelPerMinute-Tier2": 3_000_000,
    "GenerateRequestsPerDayPerProjectPerModel-Tier2": 100_000,
    "GenerateSpendPer10MinutesPerProject-Tier2": 50_000_000,
}
TIER_3 = {  # no published RPD on Tier 3
    "GenerateRequestsPerMinutePerProjectPerModel-Tier3": 10_000,
    "GenerateContentInputTokensPerModelPerMinute-Tier3": 8_000_000,
    "GenerateSpendPer10MinutesPerProject-Tier3": 200_000_000,
}
RPM_TIER_1 = "GenerateRequestsPerMinutePerProjectPerModel-Tier1"

pytestmark = pytest.mark.django_db


def ask(raw, model=MODEL):
    return admission.check(raw_key=raw, model_id=model, kind="generate", estimated_input_tokens=100)


def admitted(answer) -> tuple[str, dict[str, int]]:
    """(tier, {quota id: limit}) of an admitted answer."""
    assert answer["allowed"] is True, answer
    return answer["tier"], {limit["quota_id"]: limit["limit"] for limit in answer["limits"]}


def store() -> redis.Redis:
    return admission_store.client()


def project_record(project) -> dict[str, str]:
    return store().hgetall(admission_store.project_key(project.pk))


def in_database(project) -> dict[str, str]:
    return admission_store.project_records([project.pk])[project.pk]


def from_the_database(raw) -> dict:
    """A check the store cannot answer reads the database (an answer from Redis asks it nothing)."""
    with CaptureQueriesContext(connection) as queries:
        answer = ask(raw)
    assert queries.captured_queries, "answered from Redis"
    return answer


def from_redis(raw, django_assert_num_queries) -> dict:
    """A check answered by Redis alone (the catalog snapshot warm; the first check after a change may seed a monthly
    spend cap's counter from the books)."""
    catalog.get_catalog()
    ask(raw)
    with django_assert_num_queries(0):
        return ask(raw)


@pytest.fixture
def stored(redis_url):
    """The store's Redis: the test's own database, flushed before the test."""
    return store()


@pytest.fixture
def support(db):
    return make_staff("support@staff.example", "Support", "Finance")


@pytest.fixture
def paid(stored):
    """A Tier 1 project billed to an account, one key of it, the store warm for it: (project, key, raw, owner)."""
    owner = make_user("paid@example.com")
    project = make_billed_project(owner, name="Paid")
    key, raw = make_key(project, name="paid key")
    catalog.get_catalog()
    ask(raw)  # from the database: writes the key's, the project's and the catalog's records (read-through)
    assert project_record(project) == {"id": project.project_id, "t": Tier.TIER_1}
    return project, key, raw, owner


@pytest.fixture
def free(stored):
    """A free project without billing, one key, the store warm: (project, key, raw, owner)."""
    owner = make_user("free@example.com")
    project = make_project(owner, name="Free")
    key, raw = make_key(project, name="free key")
    catalog.get_catalog()
    ask(raw)
    assert project_record(project) == {"id": project.project_id, "t": Tier.FREE}
    return project, key, raw, owner


# --- keys --------------------------------------------------------------------------------------------------------


def test_a_key_created_on_the_keys_page_is_stored_after_the_commit(
    free, client, django_capture_on_commit_callbacks, django_assert_num_queries
):
    project, _key, _raw, owner = free
    client.force_login(owner)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("api-key-create"), {"name": "New key", "project": project.project_id})
        key = ApiKey.objects.get(name="New key")
        assert store().hget(KEYS, key.secret_hash) is None  # not committed: nothing to find elsewhere yet

    assert store().hget(KEYS, key.secret_hash) == f"{key.pk}:{project.pk}"
    answer = from_redis(response.context["raw_key"], django_assert_num_queries)
    assert admitted(answer) == (Tier.FREE, FREE)
    assert (answer["key_id"], answer["project_id"]) == (str(key.pk), project.project_id)


def test_a_key_revoked_on_the_keys_page_is_refused_on_the_very_next_check(
    paid, client, django_capture_on_commit_callbacks, django_assert_num_queries
):
    project, key, raw, owner = paid
    assert store().hget(KEYS, key.secret_hash) == f"{key.pk}:{project.pk}"
    client.force_login(owner)

    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("api-key-revoke", args=[key.pk]))
        assert store().hget(KEYS, key.secret_hash) is None  # gone at once: checks read the database meanwhile
        assert from_the_database(raw) == admission.INVALID_KEY.as_dict()
        assert store().hget(KEYS, key.secret_hash) is None  # a refused key is not read through

    assert store().hget(KEYS, key.secret_hash) == REVOKED
    with django_assert_num_queries(0):
        assert ask(raw) == admission.INVALID_KEY.as_dict()


def test_nothing_written_after_a_revocation_makes_the_key_valid_again(
    paid, django_capture_on_commit_callbacks, django_assert_num_queries
):
    project, key, raw, owner = paid
    with django_capture_on_commit_callbacks(execute=True):
        key.revoke(by=owner)

    admission_store.read_through(key.secret_hash, key.pk, project.pk)  # a check that read the key before it went
    admission_store.write_keys({key.secret_hash: f"{key.pk}:{project.pk}"})  # a repair from an old read
    report = admission_store.sync(fix=True)

    assert report.differing["keys"] == 0
    assert store().hget(KEYS, key.secret_hash) == REVOKED
    with django_assert_num_queries(0):
        assert ask(raw) == admission.INVALID_KEY.as_dict()


def test_a_deleted_key_row_is_tombstoned_after_the_commit(paid, django_capture_on_commit_callbacks):
    _project, key, raw, _owner = paid

    with django_capture_on_commit_callbacks(execute=True):
        ApiKey.objects.filter(pk=key.pk).delete()
        assert store().hget(KEYS, key.secret_hash) is None

    assert store().hget(KEYS, key.secret_hash) == REVOKED
    assert ask(raw) == admission.INVALID_KEY.as_dict()


def test_saves_that_change_nothing_admission_reads_leave_the_records(paid, django_capture_on_commit_callbacks):
    project, key, _raw, owner = paid
    account = project.billing.account
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        key.rename("renamed", by=owner)
        project.name = "Renamed"
        project.save(update_fields=["name"])
        account.display_name = "Renamed"
        account.save(update_fields=["display_name"])
        ApiKey(pk=key.pk, last_used_at=None).mark_used()

    assert callbacks == []
    assert store().hget(KEYS, key.secret_hash) == f"{key.pk}:{project.pk}"
    assert project_record(project) == {"id": project.project_id, "t": Tier.TIER_1}


def test_without_redis_an_account_status_save_asks_nothing_more(db, settings, django_assert_num_queries):
    settings.REDIS_URL = ""
    owner = make_user("no-redis@example.com")
    account = make_account(owner, projects=[make_project(owner)])
    account.status = AccountStatus.SUSPENDED

    with django_assert_num_queries(1):  # the UPDATE alone: no lookup of the projects it pays for
        account.save(update_fields=["status"])


# --- projects: each change path of the product --------------------------------------------------------------------


def test_linking_a_project_to_a_billing_account(free, django_capture_on_commit_callbacks, django_assert_num_queries):
    project, _key, raw, owner = free
    account = make_account(owner)

    with django_capture_on_commit_callbacks(execute=True):
        link_project(project, account, by=owner)
        assert project_record(project) == {}
        assert admitted(from_the_database(raw)) == (Tier.TIER_1, TIER_1)

    assert project_record(project) == in_database(project) == {"id": project.project_id, "t": Tier.TIER_1}
    assert admitted(from_redis(raw, django_assert_num_queries)) == (Tier.TIER_1, TIER_1)


def test_unlinking_a_project(paid, django_capture_on_commit_callbacks, django_assert_num_queries):
    project, _key, raw, owner = paid

    with django_capture_on_commit_callbacks(execute=True):
        unlink_project(project, by=owner)
        assert project_record(project) == {}
        assert admitted(from_the_database(raw)) == (Tier.FREE, FREE)

    assert project_record(project) == in_database(project) == {"id": project.project_id, "t": Tier.FREE}
    assert admitted(from_redis(raw, django_assert_num_queries)) == (Tier.FREE, FREE)


def test_moving_a_project_to_another_account_follows_the_new_accounts_status(
    paid, support, django_capture_on_commit_callbacks, django_assert_num_queries
):
    project, _key, raw, owner = paid
    first = project.billing.account
    second = make_account(owner, name="Second")

    with django_capture_on_commit_callbacks(execute=True):
        link_project(project, second, by=owner)
        assert project_record(project) == {}
        assert admitted(from_the_database(raw)) == (Tier.TIER_1, TIER_1)
    assert project_record(project) == in_database(project) == {"id": project.project_id, "t": Tier.TIER_1}

    with django_capture_on_commit_callbacks(execute=True):
        set_account_status(first, AccountStatus.SUSPENDED, by=support, reason="the old account")
    assert project_record(project) == {"id": project.project_id, "t": Tier.TIER_1}  # no longer its account
    assert admitted(from_redis(raw, django_assert_num_queries)) == (Tier.TIER_1, TIER_1)

    with django_capture_on_commit_callbacks(execute=True):
        set_account_status(second, AccountStatus.SUSPENDED, by=support, reason="the new account")
    assert project_record(project) == in_database(project) == {"id": project.project_id, "t": Tier.FREE, "st": "x"}
    assert from_redis(raw, django_assert_num_queries) == admission.billing_disabled()


def test_a_prepayment_received_moves_the_projects_up(
    free, django_capture_on_commit_callbacks, django_assert_num_queries
):
    project, _key, raw, owner = free
    with django_capture_on_commit_callbacks(execute=True):
        account = make_account(owner, prepayment_due=True, projects=[project])
    project.refresh_from_db()
    assert project.billing_state == BillingState.PREPAYMENT_DUE
    assert project_record(project) == {"id": project.project_id, "t": Tier.FREE}
    card = add_card(
        account.payments_profile,
        number="4242424242424242",
        exp_month=12,
        exp_year=2099,
        cvc="123",
        brand="visa",
        by=owner,
    )

    with django_capture_on_commit_callbacks(execute=True):
        pay_prepayment(account, attempt_id=uuid.uuid4(), amount=Decimal("10"), payment_method=card, by=owner)
        assert project_record(project) == {}
        assert admitted(from_the_database(raw)) == (Tier.TIER_1, TIER_1)

    assert project_record(project) == in_database(project) == {"id": project.project_id, "t": Tier.TIER_1}
    assert admitted(from_redis(raw, django_assert_num_queries)) == (Tier.TIER_1, TIER_1)


def test_the_evaluate_tiers_job_upgrades(paid, django_capture_on_commit_callbacks, django_assert_num_queries):
    project, _key, raw, _owner = paid
    account = project.billing.account
    ledger.record_usage_charge(account, amount=Decimal("300"), description="usage", idempotency_key="s1")
    ledger.record_payment(account, amount=Decimal("300"), description="paid", idempotency_key="p1")

    with django_capture_on_commit_callbacks(execute=True):
        with time_machine.travel(timezone.now() + timedelta(days=31)):
            call_command("evaluate_tiers", stdout=io.StringIO())
        assert project_record(project) == {}
        assert admitted(from_the_database(raw)) == (Tier.TIER_2, TIER_2)

    assert project_record(project) == in_database(project) == {"id": project.project_id, "t": Tier.TIER_2}
    assert admitted(from_redis(raw, django_assert_num_queries)) == (Tier.TIER_2, TIER_2)


def test_support_overriding_the_tier(paid, support, django_capture_on_commit_callbacks, django_assert_num_queries):
    project, _key, raw, _owner = paid

    with django_capture_on_commit_callbacks(execute=True):
        override_tier(project, Tier.TIER_3, by=support, reason="enterprise agreement", lock=True)
        assert project_record(project) == {}
        assert admitted(from_the_database(raw)) == (Tier.TIER_3, TIER_3)

    assert project_record(project) == in_database(project) == {"id": project.project_id, "t": Tier.TIER_3}
    assert admitted(from_redis(raw, django_assert_num_queries)) == (Tier.TIER_3, TIER_3)


def test_a_suspended_account_stops_its_projects_and_a_reinstated_one_admits_them_again(
    paid, support, django_capture_on_commit_callbacks, django_assert_num_queries
):
    project, _key, raw, _owner = paid
    account = project.billing.account

    with django_capture_on_commit_callbacks(execute=True):
        set_account_status(account, AccountStatus.SUSPENDED, by=support, reason="chargeback")
        assert project_record(project) == {}
        assert from_the_database(raw) == admission.billing_disabled()
    assert project_record(project) == in_database(project) == {"id": project.project_id, "t": Tier.FREE, "st": "x"}
    assert from_redis(raw, django_assert_num_queries) == admission.billing_disabled()

    with django_capture_on_commit_callbacks(execute=True):
        set_account_status(account, AccountStatus.ACTIVE, by=support, reason="resolved")
        assert project_record(project) == {}
        assert admitted(from_the_database(raw)) == (Tier.TIER_1, TIER_1)
    assert project_record(project) == in_database(project) == {"id": project.project_id, "t": Tier.TIER_1}
    assert admitted(from_redis(raw, django_assert_num_queries)) == (Tier.TIER_1, TIER_1)


def test_an_approved_quota_increase_raises_the_limit_on_the_next_check(
    paid, support, django_capture_on_commit_callbacks, django_assert_num_queries
):
    project, _key, raw, owner = paid
    request = request_increase(project, model_id=MODEL, metric="rpm", value=5_000, reason="launch", by=owner)
    raised = {**TIER_1, RPM_TIER_1: 5_000}

    with django_capture_on_commit_callbacks(execute=True):
        approve(request, value=5_000, reason="fine", by=support)
        assert project_record(project) == {}
        assert admitted(from_the_database(raw)) == (Tier.TIER_1, raised)

    expected = {"id": project.project_id, "t": Tier.TIER_1, f"o:{MODEL}": "5000,,"}
    assert project_record(project) == in_database(project) == expected
    assert admitted(from_redis(raw, django_assert_num_queries)) == (Tier.TIER_1, raised)


def test_a_spend_cap_set_and_removed(paid, django_capture_on_commit_callbacks, django_assert_num_queries):
    project, _key, raw, owner = paid
    capped = {**TIER_1, CAP: 50_000_000}

    with django_capture_on_commit_callbacks(execute=True):
        project.set_spend_cap(Decimal("50"), by=owner)
        assert project_record(project) == {}
        assert admitted(from_the_database(raw)) == (Tier.TIER_1, capped)
    since = str(int(Project.objects.get(pk=project.pk).spend_cap_since.timestamp()))
    expected = {"id": project.project_id, "t": Tier.TIER_1, "cap": "50000000", "since": since}
    assert project_record(project) == in_database(project) == expected
    assert admitted(from_redis(raw, django_assert_num_queries)) == (Tier.TIER_1, capped)

    with django_capture_on_commit_callbacks(execute=True):
        project.set_spend_cap(None, by=owner)
        assert project_record(project) == {}
        assert admitted(from_the_database(raw)) == (Tier.TIER_1, TIER_1)
    assert project_record(project) == in_database(project) == {"id": project.project_id, "t": Tier.TIER_1}
    assert admitted(from_redis(raw, django_assert_num_queries)) == (Tier.TIER_1, TIER_1)


# --- the catalog ---------------------------------------------------------------------------------------------------


def test_a_rate_limit_edit_applies_from_redis_after_the_commit(
    paid, django_capture_on_commit_callbacks, django_assert_num_queries
):
    _project, _key, raw, _owner = paid
    limit = RateLimit.objects.get(tier=Tier.TIER_1, model_id=MODEL)
    assert store().hget(CATALOG, f"r:tier_1:{MODEL}") == "1000,1000000,10000"

    with django_capture_on_commit_callbacks(execute=True):
        limit.rpm = 1_234
        limit.save()
        assert store().hgetall(CATALOG) == {}  # gone at once: checks read the database meanwhile
        from_the_database(raw)

    assert store().hgetall(CATALOG) == admission_store.catalog_record()
    assert store().hget(CATALOG, f"r:tier_1:{MODEL}") == "1234,1000000,10000"
    assert admitted(from_redis(raw, django_assert_num_queries)) == (Tier.TIER_1, {**TIER_1, RPM_TIER_1: 1_234})


def test_a_spend_limit_edit_applies_from_redis_after_the_commit(
    paid, django_capture_on_commit_callbacks, django_assert_num_queries
):
    _project, _key, raw, _owner = paid
    spend = SpendLimit.objects.get(tier=Tier.TIER_1)

    with django_capture_on_commit_callbacks(execute=True):
        spend.usd_per_10_minutes = Decimal("12.5")
        spend.save()

    assert store().hgetall(CATALOG) == admission_store.catalog_record()
    expected = {**TIER_1, "GenerateSpendPer10MinutesPerProject-Tier1": 12_500_000}
    assert admitted(from_redis(raw, django_assert_num_queries)) == (Tier.TIER_1, expected)


def test_a_deactivated_model_is_not_found_from_redis_after_the_commit(
    paid, django_capture_on_commit_callbacks, django_assert_num_queries
):
    _project, _key, raw, _owner = paid
    model = CatalogModel.objects.get(model_id=MODEL)

    with django_capture_on_commit_callbacks(execute=True):
        model.active = False
        model.save()
        assert store().hgetall(CATALOG) == {}

    assert store().hgetall(CATALOG) == admission_store.catalog_record()
    assert store().hget(CATALOG, f"m:{MODEL}") is None
    # The process's catalog snapshot still has the model active: the answer is the store's.
    assert catalog.get_catalog().models[MODEL].active is True
    with django_assert_num_queries(0):
        assert ask(raw) == admission.model_not_found(MODEL)


def test_a_rolled_back_catalog_edit_leaves_no_figure_in_the_store(paid, django_capture_on_commit_callbacks):
    _project, _key, raw, _owner = paid
    limit = RateLimit.objects.get(tier=Tier.TIER_1, model_id=MODEL)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        try:
            with transaction.atomic():
                limit.rpm = 1_234
                limit.save()
                raise RuntimeError("the edit fails after its save")
        except RuntimeError:
            pass

    assert callbacks == []  # the write-through of a rolled-back change never runs
    assert store().hgetall(CATALOG) == {}
    ask(raw)  # from the database, whose committed figure the read-through writes
    assert store().hget(CATALOG, f"r:tier_1:{MODEL}") == "1000,1000000,10000"


# --- read-through ---------------------------------------------------------------------------------------------------


def test_an_emptied_store_is_read_through_on_the_next_check(paid, django_assert_num_queries):
    project, key, raw, _owner = paid
    store().flushdb()

    assert admitted(from_the_database(raw)) == (Tier.TIER_1, TIER_1)

    assert store().hget(KEYS, key.secret_hash) == f"{key.pk}:{project.pk}"
    assert project_record(project) == in_database(project)
    assert store().hgetall(CATALOG) == admission_store.catalog_record()
    with django_assert_num_queries(0):
        assert admitted(ask(raw)) == (Tier.TIER_1, TIER_1)


def test_a_read_through_never_overwrites_a_record(paid):
    project, key, _raw, _owner = paid
    newer = {"id": project.project_id, "t": Tier.TIER_3}
    store().delete(admission_store.project_key(project.pk))
    store().hset(admission_store.project_key(project.pk), mapping=newer)
    store().delete(CATALOG)
    store().hset(CATALOG, mapping={"ok": "1", f"m:{MODEL}": "1"})
    store().hset(KEYS, key.secret_hash, REVOKED)

    admission_store.read_through(key.secret_hash, key.pk, project.pk)

    assert project_record(project) == newer
    assert store().hgetall(CATALOG) == {"ok": "1", f"m:{MODEL}": "1"}
    assert store().hget(KEYS, key.secret_hash) == REVOKED


# --- agreement: sync ------------------------------------------------------------------------------------------------


@pytest.fixture
def books(stored):
    """Two projects (a paid one with two keys, one revoked; a free one with one key), none of them in the store."""
    owner = make_user("books@example.com")
    paid_project = make_billed_project(owner, name="Paid")
    free_project = make_project(owner, name="Free")
    live, live_raw = make_key(paid_project, name="live")
    revoked, _ = make_key(paid_project, name="revoked")
    revoked.revoke(by=owner)
    other, other_raw = make_key(free_project, name="other")
    assert (Project.objects.count(), ApiKey.objects.count()) == (2, 3)
    assert store().keys("adm:*") == []
    return {
        "paid": paid_project,
        "free": free_project,
        "live": live,
        "revoked": revoked,
        "other": other,
        "live_raw": live_raw,
        "other_raw": other_raw,
    }


def counts(report) -> tuple:
    return report.checked, report.missing, report.differing, report.extra, report.fixed


def per_kind(keys=0, projects=0, catalog=0) -> dict[str, int]:
    return {"keys": keys, "projects": projects, "catalog": catalog}


def test_sync_finds_an_empty_store_missing_and_fixes_it(books):
    report = admission_store.sync(fix=False)

    assert counts(report) == (per_kind(3, 2, 1), per_kind(3, 2, 1), per_kind(), per_kind(), 0)
    assert report.agrees is False
    assert store().keys("adm:*") == []  # without fix, nothing written

    assert counts(admission_store.sync(fix=True)) == (per_kind(3, 2, 1), per_kind(3, 2, 1), per_kind(), per_kind(), 6)

    assert store().hgetall(KEYS) == {
        books["live"].secret_hash: f"{books['live'].pk}:{books['paid'].pk}",
        books["revoked"].secret_hash: REVOKED,
        books["other"].secret_hash: f"{books['other'].pk}:{books['free'].pk}",
    }
    assert project_record(books["paid"]) == {"id": books["paid"].project_id, "t": Tier.TIER_1}
    assert project_record(books["free"]) == {"id": books["free"].project_id, "t": Tier.FREE}
    assert store().hgetall(CATALOG) == admission_store.catalog_record()
    again = admission_store.sync(fix=False)
    assert counts(again) == (per_kind(3, 2, 1), per_kind(), per_kind(), per_kind(), 0)
    assert again.agrees is True


def test_sync_repairs_a_tampered_project_record(books, django_assert_num_queries):
    admission_store.sync(fix=True)
    store().hset(admission_store.project_key(books["free"].pk), "t", Tier.TIER_3)  # by hand
    tampered = {"id": books["free"].project_id, "t": Tier.TIER_3}

    report = admission_store.sync(fix=False)
    assert (report.differing, report.missing, report.fixed) == (per_kind(projects=1), per_kind(), 0)
    assert project_record(books["free"]) == tampered

    assert admission_store.sync(fix=True).fixed == 1
    assert project_record(books["free"]) == {"id": books["free"].project_id, "t": Tier.FREE}
    assert admitted(from_redis(books["other_raw"], django_assert_num_queries)) == (Tier.FREE, FREE)


def test_sync_removes_the_record_of_a_deleted_project_and_tombstones_a_key_without_a_row(books):
    admission_store.sync(fix=True)
    gone_pk = Project.objects.order_by("-pk").first().pk + 1000
    store().hset(admission_store.project_key(gone_pk), mapping={"id": "gen-lang-client-0000000000", "t": "tier_1"})
    gone_hash = "f" * 64
    store().hset(KEYS, gone_hash, f"999999:{gone_pk}")

    report = admission_store.sync(fix=False)
    assert (report.extra, report.fixed) == (per_kind(keys=1, projects=1), 0)

    assert admission_store.sync(fix=True).fixed == 2
    assert store().exists(admission_store.project_key(gone_pk)) == 0
    assert store().hget(KEYS, gone_hash) == REVOKED
    assert admission_store.sync(fix=False).agrees is True


def test_a_repair_never_overwrites_a_write_through_made_meanwhile(books, monkeypatch):
    admission_store.sync(fix=True)
    key = admission_store.project_key(books["free"].pk)
    store().hset(key, "t", Tier.TIER_3)  # to be repaired
    real = admission_store.project_records
    reads = []

    def read_then_written_meanwhile(pks):
        pks = list(pks)
        reads.append(pks)
        records = real(pks)
        if pks == [books["free"].pk]:  # the repair's own read, under WATCH: another process writes the record now
            store().hset(key, "t", Tier.TIER_2)
        return records

    monkeypatch.setattr(admission_store, "project_records", read_then_written_meanwhile)
    report = admission_store.sync(fix=True)

    assert reads == [sorted([books["paid"].pk, books["free"].pk]), [books["free"].pk]]
    assert (report.differing, report.fixed) == (per_kind(projects=1), 0)
    assert project_record(books["free"]) == {"id": books["free"].project_id, "t": Tier.TIER_2}


def test_a_repair_writes_when_nothing_touches_the_record_meanwhile(books, monkeypatch):
    admission_store.sync(fix=True)
    store().hset(admission_store.project_key(books["free"].pk), "t", Tier.TIER_3)
    real = admission_store.project_records
    reads = []
    monkeypatch.setattr(admission_store, "project_records", lambda pks: reads.append(list(pks)) or real(pks))

    report = admission_store.sync(fix=True)

    assert reads[-1] == [books["free"].pk]
    assert (report.differing, report.fixed) == (per_kind(projects=1), 1)
    assert project_record(books["free"]) == {"id": books["free"].project_id, "t": Tier.FREE}


# --- Redis failing during a change ----------------------------------------------------------------------------------


@pytest.fixture
def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_redis_failing_during_a_change_never_fails_it_and_sync_repairs(
    paid, settings, closed_port, caplog, django_capture_on_commit_callbacks, django_assert_num_queries
):
    project, _key, raw, owner = paid
    url = settings.REDIS_URL
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port}/0"
    caplog.set_level("ERROR", logger="usage.admission_store")

    with django_capture_on_commit_callbacks(execute=True):
        changed = project.set_spend_cap(Decimal("50"), by=owner)

    settings.REDIS_URL = url
    assert changed is True
    assert Project.objects.get(pk=project.pk).monthly_spend_cap == Decimal("50")
    assert [(r.levelname, r.args[0]) for r in caplog.records] == [("ERROR", "invalidation"), ("ERROR", "write-through")]
    # The store still has the record from before the change, and answers by it until the sync.
    assert project_record(project) == {"id": project.project_id, "t": Tier.TIER_1}
    assert admitted(from_redis(raw, django_assert_num_queries)) == (Tier.TIER_1, TIER_1)

    report = admission_store.sync(fix=True)

    assert (report.differing, report.fixed) == (per_kind(projects=1), 1)
    assert project_record(project) == in_database(project)
    assert admitted(from_redis(raw, django_assert_num_queries)) == (Tier.TIER_1, {**TIER_1, CAP: 50_000_000})


# --- the sync_admission command -------------------------------------------------------------------------------------


def sync_admission(*args) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `manage.py sync_admission *args`."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("sync_admission", *args, stdout=out, stderr=err)
    except SystemExit as exit_:
        return exit_.code, out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def test_the_command_reports_a_disagreement_with_exit_status_1(books):
    assert sync_admission() == (
        1,
        "keys: 3 checked, 3 missing, 0 differing, 0 extra\n"
        "projects: 2 checked, 2 missing, 0 differing, 0 extra\n"
        "catalog: 1 checked, 1 missing, 0 differing, 0 extra\n",
        "The admission store disagrees with the database: run sync_admission --fix.\n",
    )
    assert store().keys("adm:*") == []


def test_the_command_fixes_then_agrees(books):
    assert sync_admission("--fix") == (
        0,
        "keys: 3 checked, 3 missing, 0 differing, 0 extra\n"
        "projects: 2 checked, 2 missing, 0 differing, 0 extra\n"
        "catalog: 1 checked, 1 missing, 0 differing, 0 extra\n"
        "Repaired 6 record(s).\n",
        "",
    )
    assert sync_admission() == (
        0,
        "keys: 3 checked, 0 missing, 0 differing, 0 extra\n"
        "projects: 2 checked, 0 missing, 0 differing, 0 extra\n"
        "catalog: 1 checked, 0 missing, 0 differing, 0 extra\n"
        "The admission store agrees with the database.\n",
        "",
    )


def test_the_command_flush_rebuilds_from_nothing(books):
    sync_admission("--fix")
    store().hset(admission_store.project_key(books["paid"].pk), "t", Tier.TIER_3)
    store().hset(admission_store.project_key(books["paid"].pk + 1000), "t", Tier.TIER_3)
    store().hset(CATALOG, f"r:tier_1:{MODEL}", "1,1,1")
    store().hset(USED, books["live"].pk, "1700000000")

    assert sync_admission("--flush") == (
        0,
        "keys: 3 checked, 3 missing, 0 differing, 0 extra\n"
        "projects: 2 checked, 2 missing, 0 differing, 0 extra\n"
        "catalog: 1 checked, 1 missing, 0 differing, 0 extra\n"
        "Repaired 6 record(s).\n",
        "",
    )
    assert sorted(store().keys("adm:p:*")) == sorted(
        admission_store.project_key(project.pk) for project in (books["paid"], books["free"])
    )
    assert project_record(books["paid"]) == {"id": books["paid"].project_id, "t": Tier.TIER_1}
    assert store().hgetall(CATALOG) == admission_store.catalog_record()
    assert store().hgetall(USED) == {str(books["live"].pk): "1700000000"}  # last uses are not the store's to drop
    assert sync_admission()[0] == 0


def test_the_command_without_redis_has_nothing_to_sync(db, settings):
    settings.REDIS_URL = ""

    assert sync_admission("--fix") == (
        0,
        "REDIS_URL is not set: quota:check reads the database; nothing to sync.\n",
        "",
    )


def test_the_command_does_nothing_while_another_runner_holds_its_lock(books):
    release, thread = hold_lock_in_another_thread("sync_admission")
    try:
        result = sync_admission("--fix")
    finally:
        release.set()
        thread.join()

    assert result == (0, "sync_admission is already running; nothing done.\n", "")
    assert store().keys("adm:*") == []


def test_the_command_says_when_redis_fails(db, settings, closed_port):
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port}/0"

    with pytest.raises(CommandError) as raised:
        call_command("sync_admission", stdout=io.StringIO())

    assert str(raised.value) == (
        f"Redis failed during the sync: Error 111 connecting to 127.0.0.1:{closed_port}. Connection refused. "
        "Nothing more was done."
    )


# --- last use -------------------------------------------------------------------------------------------------------


@pytest.fixture
def used(books):
    """The books stored (so checks are Redis's alone, which note the last use in adm:used) and one check of `live`:
    (its second by Redis's clock, bounds checked)."""
    admission_store.sync(fix=True)
    start = int(store().time()[0])
    assert admitted(ask(books["live_raw"]))[0] == Tier.TIER_1
    end = int(store().time()[0])
    held = store().hgetall(USED)
    assert list(held) == [str(books["live"].pk)]
    second = int(held[str(books["live"].pk)])
    assert start <= second <= end
    return second


def test_flush_key_use_moves_the_last_use_to_the_key(books, used):
    assert admission_store.flush_key_use() == 1

    books["live"].refresh_from_db()
    books["other"].refresh_from_db()
    assert books["live"].last_used_at == datetime.fromtimestamp(used, UTC)
    assert books["other"].last_used_at is None
    assert store().hgetall(USED) == {}


def test_flush_key_use_writes_a_key_at_most_once_a_minute(books, used):
    admission_store.flush_key_use()
    ask(books["live_raw"])  # within the minute

    assert admission_store.flush_key_use() == 0
    books["live"].refresh_from_db()
    assert books["live"].last_used_at == datetime.fromtimestamp(used, UTC)
    assert store().hgetall(USED) == {}


def test_flush_key_use_puts_back_what_the_database_refused(books, used, monkeypatch):
    newer = used + 90
    store().hset(USED, books["other"].pk, used - 30)

    def refused(*args, **kwargs):
        store().hset(USED, books["other"].pk, newer)  # a check meanwhile: its second is kept
        raise DatabaseError("the database went away")

    monkeypatch.setattr(ApiKey.objects, "bulk_update", refused)
    with pytest.raises(DatabaseError):
        admission_store.flush_key_use()

    assert store().hgetall(USED) == {str(books["live"].pk): str(used), str(books["other"].pk): str(newer)}
    books["live"].refresh_from_db()
    assert books["live"].last_used_at is None


def test_the_flush_key_use_command(books, used):
    out = io.StringIO()
    call_command("flush_key_use", stdout=out)

    assert out.getvalue() == "Updated the last use of 1 key(s).\n"
    books["live"].refresh_from_db()
    assert books["live"].last_used_at == datetime.fromtimestamp(used, UTC)


def test_the_flush_key_use_command_without_redis(db, settings):
    settings.REDIS_URL = ""
    out = io.StringIO()
    call_command("flush_key_use", stdout=out)

    assert out.getvalue() == "REDIS_URL is not set: quota:check marks keys used in the database; nothing to flush.\n"


# --- jobs -----------------------------------------------------------------------------------------------------------


def periodic_at(hour, minute) -> set[str]:
    return {task.name for task in HUEY.read_periodic(datetime(2026, 3, 2, hour, minute))}


def test_the_store_jobs_run_every_minute_and_every_five_minutes():
    assert "flush_key_use" in periodic_at(9, 1)
    assert "sync_admission" not in periodic_at(9, 1)
    assert {"flush_key_use", "sync_admission"} <= periodic_at(9, 5)
    assert {"flush_key_use", "sync_admission"} <= periodic_at(9, 10)


def test_the_sync_admission_job_repairs(books):
    usage.jobs.sync_admission.call_local()

    assert admission_store.sync(fix=False).agrees is True


def test_the_flush_key_use_job_moves_the_last_use(books, used):
    usage.jobs.flush_key_use.call_local()

    books["live"].refresh_from_db()
    assert books["live"].last_used_at == datetime.fromtimestamp(used, UTC)
    assert store().hgetall(USED) == {}
