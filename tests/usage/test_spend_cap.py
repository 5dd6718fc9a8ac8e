"""The project's monthly spend cap (X4, X8): admission at the boundary, the 429, Pacific months, seeding from the
books, settlement, the form and who may use it, and the Limits tab."""

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D

import pytest
import redis
import time_machine
from django.urls import reverse
from django.utils import timezone

from studio.models import ApiKey, AuditEvent, Project, Role
from tests.factories import add_member, make_billed_project, make_key, make_project, make_user
from tests.usage.redis_clock import quiet_moment
from usage import admission, denials
from usage import limiter as limiter_registry
from usage.admission import limits_for
from usage.ingest import ingest
from usage.limiter import Limiter, RedisLimiter, get_limiter, month_first_day, month_id, pacific_month_windows
from usage.models import PendingCharge
from usage.spendcap import QUOTA_ID, cap_status, month_spend_micro_usd

FLASH = "gemini-2.5-flash"
FROZEN = datetime(2026, 11, 20, 12, 0, 5, tzinfo=UTC)  # 04:00 in Los Angeles (PST); the month ends Dec 1, 08:00 UTC
PATIENT = 1.0


@pytest.fixture(params=["in_process", "redis"])
def backend(request, settings) -> Iterator[Limiter]:
    """The limiter get_limiter() gives: in-process on a frozen clock, or Redis at a quiet moment."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        limiter = limiter_registry._limiters[url] = RedisLimiter(url, timeout=PATIENT)
        quiet_moment(redis.Redis.from_url(url))
        yield limiter
        assert limiter.fallbacks == 0
        return
    settings.REDIS_URL = ""
    with time_machine.travel(FROZEN, tick=False):
        yield get_limiter()


def capped(cap: str, *, email: str = "capped@example.com"):
    """(project, raw key) of a Tier 1 project with a monthly spend cap of `cap` USD."""
    owner = make_user(email)
    project = make_billed_project(owner, name="Capped")
    project.set_spend_cap(D(cap), by=owner)
    _, raw = make_key(project)
    return project, raw


def spent_before(project, micro_usd: int, *, month: date | None = None) -> None:
    """Usage of the month not yet charged, as ingestion leaves it: a pending line of `micro_usd`."""
    month = month or month_first_day(month_id(timezone.now()))
    PendingCharge.objects.create(
        account_id=project.billing.account_id,
        project=project,
        model_id=FLASH,
        price_id=1,
        month=month,
        sku="input",
        batch=False,
        long_prompt=False,
        amount_nanos=micro_usd * 1000,
        events=1,
    )


def estimate(project, tokens: int) -> int:
    """The micro-USD a request of `tokens` input tokens reserves against the cap."""
    project = Project.objects.get(pk=project.pk)
    return next(
        limit.cost for limit in limits_for(project, FLASH, estimated_input_tokens=tokens) if limit.quota_id == QUOTA_ID
    )


def check(raw: str, tokens: int = 1000) -> dict:
    return admission.check(raw_key=raw, model_id=FLASH, kind="generate", estimated_input_tokens=tokens)


def cap_state(answer: dict) -> dict:
    return next(state for state in answer["limits"] if state["quota_id"] == QUOTA_ID)


def test_the_cap_admits_a_request_that_reaches_it_to_the_micro_dollar(backend, db):
    project, raw = capped("1.00")
    assert estimate(project, 1000) == 300  # USD 0.30 per 1M input tokens, no output allowance
    spent_before(project, 1_000_000 - 300)

    admitted = check(raw)

    assert admitted["allowed"] is True
    assert (cap_state(admitted)["limit"], cap_state(admitted)["remaining"]) == (1_000_000, 0)
    assert admitted["reservation_id"].split("_")[2:-1] == ["3e8", "12c", "12c"]  # tokens, spend, cap: 1000, 300, 300
    assert check(raw, tokens=0)["allowed"] is True  # the cap reached, not passed: a request estimated at 0 fits
    refused = check(raw, tokens=4)  # 1.2 micro-USD, rounded up: past the cap by 2, the reservation counting
    assert (refused["allowed"], refused["error"]["quota_id"]) == (False, QUOTA_ID)


def test_the_cap_refuses_a_request_one_micro_dollar_past_it(backend, db):
    project, raw = capped("1.00")
    spent_before(project, 1_000_000 - 300 + 1)

    refused = check(raw)

    assert (refused["allowed"], refused["error"]["quota_id"], cap_state(refused)["remaining"]) == (False, QUOTA_ID, 299)
    assert check(raw, tokens=996)["allowed"] is True  # 298.8 micro-USD, rounded up: 299


def test_a_refusal_is_the_429_of_every_quota_and_retries_at_the_end_of_the_pacific_month(settings, db):
    settings.REDIS_URL = ""
    with time_machine.travel(FROZEN, tick=False):
        project, raw = capped("50.00")
        spent_before(project, 50_000_000)

        answer = check(raw)

    retry = 935_995  # from Nov 20, 12:00:05 UTC to Dec 1, 08:00 UTC (midnight in Los Angeles)
    assert retry == (datetime(2026, 12, 1, 8, tzinfo=UTC) - FROZEN).total_seconds()
    assert answer["allowed"] is False
    assert (answer["project_id"], answer["tier"]) == (project.project_id, "tier_1")
    assert answer["error"] == {
        "code": 429,
        "status": "RESOURCE_EXHAUSTED",
        "reason": "RATE_LIMIT_EXCEEDED",
        "message": "You exceeded your current quota: ProjectMonthlySpendCap, limit 50000000. "
        f"Please retry in {retry}s.",
        "quota_id": "ProjectMonthlySpendCap",
        "limit": 50_000_000,
        "unit": "micro_usd",
        "retry_delay_seconds": retry,
    }
    assert cap_state(answer) == {
        "quota_id": "ProjectMonthlySpendCap",
        "limit": 50_000_000,
        "remaining": 0,
        "unit": "micro_usd",
        "reset_seconds": retry,
    }
    assert "reservation_id" not in answer


def test_the_month_ends_at_midnight_pacific_and_the_next_one_starts_from_its_own_books(settings, db):
    settings.REDIS_URL = ""
    last_minute = datetime(2026, 12, 1, 7, 59, 30, tzinfo=UTC)  # Nov 30, 23:59:30 PST
    with time_machine.travel(last_minute, tick=False) as clock:
        project, raw = capped("1.00")
        spent_before(project, 1_000_000, month=date(2026, 11, 1))
        refused = check(raw)
        assert (refused["allowed"], refused["error"]["retry_delay_seconds"]) == (False, 30)

        clock.move_to(datetime(2026, 12, 1, 8, 0, 1, tzinfo=UTC))  # Dec 1, 00:00:01 PST
        admitted = check(raw)

    assert admitted["allowed"] is True
    assert cap_state(admitted)["remaining"] == 1_000_000 - 300


def test_months_are_pacific_calendar_months_across_dst():
    # March 2026: DST starts on the 8th, so the month is 31 days less one hour.
    windows = pacific_month_windows(datetime(2026, 3, 15, tzinfo=UTC).timestamp())
    assert [w.day_id for w in windows] == [202602, 202603, 202604]
    assert windows[1].start == datetime(2026, 3, 1, 8, tzinfo=UTC).timestamp()
    assert windows[1].end == datetime(2026, 4, 1, 7, tzinfo=UTC).timestamp()
    assert month_id(datetime(2026, 4, 1, 6, 59, tzinfo=UTC)) == 202603
    assert month_id(datetime(2026, 4, 1, 7, tzinfo=UTC)) == 202604


def test_reported_usage_replaces_the_estimate(backend, db, event, django_capture_on_commit_callbacks):
    project, raw = capped("1.00")
    key = ApiKey.objects.get(project=project)
    admitted = check(raw)
    assert cap_state(admitted)["remaining"] == 1_000_000 - 300

    with django_capture_on_commit_callbacks(execute=True):
        report = ingest(
            [
                {
                    **event(key, input_tokens=1000, output_tokens=200),
                    "reservation_id": admitted["reservation_id"],
                    "occurred_at": timezone.now().isoformat(),
                }
            ]
        )

    assert report.accepted == 1
    assert month_spend_micro_usd(project.pk, month_first_day(month_id(timezone.now()))) == 800  # 300 in + 500 out
    status = cap_status(Project.objects.get(pk=project.pk), now=timezone.now())
    assert (status.spent, status.live) == (D("0.0008"), D("0.0008"))  # the reservation is gone, the cost counts


def test_late_usage_of_the_month_counts_against_the_cap(backend, db, event, django_capture_on_commit_callbacks):
    project, raw = capped("1.00")
    key = ApiKey.objects.get(project=project)
    check(raw)  # seeds the month's counter
    an_hour_ago = (timezone.now() - timedelta(hours=1)).isoformat()

    with django_capture_on_commit_callbacks(execute=True):
        ingest([event(key, input_tokens=1000, output_tokens=200, occurred_at=an_hour_ago)])

    assert cap_state(check(raw, tokens=0))["remaining"] == 1_000_000 - 300 - 800


def test_the_month_is_seeded_from_the_books_after_redis_is_lost(
    redis_url, db, event, django_capture_on_commit_callbacks
):
    limiter_registry._limiters[redis_url] = RedisLimiter(redis_url, timeout=PATIENT)
    project, raw = capped("1.00")
    key = ApiKey.objects.get(project=project)
    spent_before(project, 10_000)  # charged before the counter existed
    assert cap_state(check(raw, tokens=0))["remaining"] == 990_000
    with django_capture_on_commit_callbacks(execute=True):
        ingest([event(key, input_tokens=1000, output_tokens=200) for _ in range(3)])
    assert cap_state(check(raw, tokens=0))["remaining"] == 990_000 - 2_400

    redis.Redis.from_url(redis_url).flushdb()

    assert cap_state(check(raw, tokens=0))["remaining"] == 990_000 - 2_400
    assert month_spend_micro_usd(project.pk, month_first_day(month_id(timezone.now()))) == 12_400


def test_the_free_tier_is_not_capped(settings, db):
    settings.REDIS_URL = ""
    owner = make_user("free@example.com")
    project = make_project(owner, name="Free")
    project.set_spend_cap(D("0.01"), by=owner)
    _, raw = make_key(project)

    answer = check(raw)

    assert answer["allowed"] is True
    assert QUOTA_ID not in [state["quota_id"] for state in answer["limits"]]


# --- setting it ---------------------------------------------------------------------------------------------------


@pytest.fixture
def team(owner, editor, viewer):
    project = make_billed_project(owner, name="Team")
    add_member(project, editor, Role.EDITOR)
    add_member(project, viewer, Role.VIEWER)
    return project


def cap_url(project) -> str:
    return reverse("usage:spend-cap", args=[project.project_id])


@pytest.mark.parametrize("member", ["owner", "editor"])
def test_an_owner_or_editor_sets_changes_and_removes_the_cap(client, team, member, request):
    user = request.getfixturevalue(member)
    client.force_login(user)
    assert client.get(cap_url(team)).status_code == 200

    set_response = client.post(cap_url(team), {"amount": "25"})
    changed = client.post(cap_url(team), {"amount": "30.50"})
    removed = client.post(cap_url(team), {"remove": "1", "amount": ""})

    limits = f"{reverse('usage:limits')}?project={team.project_id}"
    assert [r.status_code for r in (set_response, changed, removed)] == [302, 302, 302]
    assert set_response["Location"] == limits
    team.refresh_from_db()
    assert (team.monthly_spend_cap, team.spend_cap_since) == (None, None)
    events = AuditEvent.objects.filter(action="project.spend_cap").order_by("pk")
    assert [(e.actor, e.object_id, e.before, e.after) for e in events] == [
        (user, str(team.pk), {"monthly_spend_cap": None}, {"monthly_spend_cap": "25.00"}),
        (user, str(team.pk), {"monthly_spend_cap": "25.00"}, {"monthly_spend_cap": "30.50"}),
        (user, str(team.pk), {"monthly_spend_cap": "30.50"}, {"monthly_spend_cap": None}),
    ]


def test_setting_the_cap_again_keeps_its_counter_until_it_is_removed(owner, db):
    project = make_billed_project(owner)
    project.set_spend_cap(D("10.00"), by=owner)
    since = project.spend_cap_since
    assert project.set_spend_cap(D("10"), by=owner) is False  # the same amount: nothing changes, nothing recorded
    project.set_spend_cap(D("20.00"), by=owner)
    assert project.spend_cap_since == since
    project.set_spend_cap(None, by=owner)
    project.set_spend_cap(D("20.00"), by=owner)
    assert project.spend_cap_since > since
    assert AuditEvent.objects.filter(action="project.spend_cap").count() == 4


def test_a_viewer_sees_the_cap_but_may_not_change_it_and_an_outsider_gets_404(client, team, viewer, outsider, owner):
    team.set_spend_cap(D("25.00"), by=owner)
    client.force_login(viewer)
    assert [client.get(cap_url(team)).status_code, client.post(cap_url(team), {"amount": "1"}).status_code] == [
        403,
        403,
    ]
    page = client.get(f"{reverse('usage:limits')}?project={team.project_id}").content.decode()
    assert "USD 25.00" in page
    assert "Only an owner or editor of this project can set its spend cap." in page
    assert cap_url(team) not in page

    client.force_login(outsider)
    assert [client.get(cap_url(team)).status_code, client.post(cap_url(team), {"amount": "1"}).status_code] == [
        404,
        404,
    ]
    team.refresh_from_db()
    assert team.monthly_spend_cap == D("25.00")


@pytest.mark.parametrize(
    ("amount", "error"),
    [
        ("", "Enter the most this project may spend in a month, in USD."),
        ("abc", "Enter a number."),
        ("0", "Ensure this value is greater than or equal to 0.01."),
        ("-5", "Ensure this value is greater than or equal to 0.01."),
        ("12.345", "Ensure that there are no more than 2 decimal places."),
        ("12345678901", "Ensure that there are no more than 10 digits before the decimal point."),
    ],
)
def test_the_form_names_what_is_wrong_and_keeps_what_was_typed(client, team, owner, amount, error):
    client.force_login(owner)

    response = client.post(cap_url(team), {"amount": amount}, headers={"HX-Request": "true"})

    assert response.status_code == 422
    assert response.context["form"].errors == {"amount": [error]}
    assert f'value="{amount}"' in response.content.decode() or amount == ""
    team.refresh_from_db()
    assert team.monthly_spend_cap is None


def test_htmx_saves_close_the_modal_and_reload_the_cap(client, team, owner):
    client.force_login(owner)

    response = client.post(cap_url(team), {"amount": "12"}, headers={"HX-Request": "true"})

    assert response.status_code == 200
    assert set(json.loads(response["HX-Trigger"])) == {"limits-changed", "close-modal"}
    assert "Spend cap saved." in response.content.decode()


# --- the Limits tab -----------------------------------------------------------------------------------------------


def test_the_limits_tab_names_the_cap_as_the_api_does(client, team, owner, settings):
    settings.REDIS_URL = ""
    team.set_spend_cap(D("50.00"), by=owner)
    spent_before(team, 12_340_000)
    denials.record_past(team, FLASH, QUOTA_ID, timezone.now() - timedelta(minutes=5), 3)
    client.force_login(owner)

    response = client.get(f"{reverse('usage:limits')}?project={team.project_id}")

    page = response.content.decode()
    assert response.status_code == 200
    status = response.context["cap"]
    assert (status.cap, status.spent, status.live, status.applies) == (D("50.00"), D("12.34"), D("12.34"), True)
    assert response.context["cap_denied"] == 3
    assert "<code>ProjectMonthlySpendCap</code>" in page
    assert "Monthly spend cap (USD)" in page
    assert [others for _, _, others in response.context["models"]] == [[]] * len(response.context["models"])
    assert cap_url(team) in page  # an owner is offered the change
    assert "Change spend cap" in page
