"""Quota increases (SPEC §10), the user's side and the service: asking on the Limits tab, who may ask, Support's
decision through usage.quotas (override, audit, e-mail in the requester's language), and admission applying an
approved figure from the very next check."""

from datetime import UTC, datetime

import pytest
import time_machine
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext

from studio.models import ActorKind, AuditEvent, BillingState, Role, Tier
from tests.factories import add_member, deliver_mail, make_key, make_project, make_staff, make_user
from usage import admission, catalog
from usage.admission import limits_for
from usage.models import QuotaIncreaseRequest, QuotaOverride, QuotaRequestStatus, RateLimit
from usage.quotas import QuotaError, approve, decline, limit_in_force, request_increase

FLASH = "gemini-2.5-flash"
PRO = "gemini-2.5-pro"
FROZEN = datetime(2026, 11, 20, 12, 0, 5, tzinfo=UTC)


@pytest.fixture
def team(db):
    """A Tier 1 project with an owner, an editor and a viewer, and a Support member."""
    owner, editor, viewer = make_user("owner@example.com"), make_user("editor@example.com"), make_user("v@example.com")
    project = make_project(owner, name="Team", tier=Tier.TIER_1)
    add_member(project, editor, Role.EDITOR)
    add_member(project, viewer, Role.VIEWER)
    support = make_staff("support@staff.example", "Support")
    return {"project": project, "owner": owner, "editor": editor, "viewer": viewer, "support": support}


def ask(team, *, metric="rpm", value=1500, model=FLASH, by=None, reason="Launch traffic"):
    return request_increase(
        team["project"], model_id=model, metric=metric, value=value, reason=reason, by=by or team["owner"]
    )


def audit(obj):
    rows = AuditEvent.objects.filter(object_type=obj._meta.label_lower, object_id=str(obj.pk)).order_by("pk")
    return [(e.action, e.actor.email if e.actor else None, e.actor_kind, e.before, e.after, e.reason) for e in rows]


# Asking


def test_request_increase_records_a_pending_request_and_its_audit(team):
    request = ask(team, metric="tpm", value=2_500_000, by=team["editor"])

    request.refresh_from_db()
    assert (
        request.project,
        request.model_id,
        request.metric,
        request.current_limit,
        request.requested_value,
        request.reason,
        request.status,
        request.requested_by,
        request.approved_value,
        request.decided_by,
    ) == (team["project"], FLASH, "tpm", 1_000_000, 2_500_000, "Launch traffic", "pending", team["editor"], None, None)
    assert audit(request) == [
        (
            "quota_request.create",
            "editor@example.com",
            ActorKind.USER,
            {},
            {"model": FLASH, "metric": "tpm", "current": 1_000_000, "requested": 2_500_000},
            "Launch traffic",
        )
    ]


@pytest.mark.parametrize(
    ("changes", "message", "field"),
    [
        ({"value": 1000}, "Ask for more than the current limit, 1,000.", "value"),
        ({"value": 999}, "Ask for more than the current limit, 1,000.", "value"),
        ({"reason": "   "}, "Say why this project needs a higher limit.", "reason"),
        ({"metric": "rps"}, "Choose RPM, TPM or RPD.", "metric"),
        ({"model": "no-such-model"}, "This project's tier cannot use that model.", "model"),
        (
            {"model": "gemini-2.5-flash-lite", "metric": "rpd"},
            "That limit does not apply to this model at this project's tier.",
            "metric",
        ),
    ],
)
def test_request_increase_refuses(team, changes, message, field):
    with pytest.raises(QuotaError) as refused:
        ask(team, **changes)

    assert (refused.value.message, refused.value.field) == (message, field)
    assert list(QuotaIncreaseRequest.objects.all()) == []


def test_free_project_may_not_ask_for_higher_limits(db):
    owner = make_user("free@example.com")
    project = make_project(owner, name="Free")

    with pytest.raises(QuotaError) as refused:
        request_increase(project, model_id=FLASH, metric="rpm", value=50, reason="x", by=owner)

    assert refused.value.message == "Free-tier limits are not raised: set up billing for a paid tier's higher limits."
    assert not QuotaIncreaseRequest.objects.exists()


def test_paid_project_may_not_ask_for_a_model_its_tier_cannot_use(team):
    RateLimit.objects.filter(model_id=PRO, tier=team["project"].tier).delete()
    catalog.forget()

    with pytest.raises(QuotaError) as refused:
        request_increase(team["project"], model_id=PRO, metric="rpm", value=50, reason="x", by=team["owner"])

    assert refused.value.message == "This project's tier cannot use that model."


def test_value_must_be_above_an_override_in_force(team):
    QuotaOverride.objects.create(project=team["project"], model_id=FLASH, rpm=1800)

    with pytest.raises(QuotaError) as refused:
        ask(team, value=1800)

    assert refused.value.message == "Ask for more than the current limit, 1,800."
    assert ask(team, value=1801).current_limit == 1800


def test_one_open_request_per_limit(team):
    first = ask(team)

    with pytest.raises(QuotaError) as refused:
        ask(team, value=3000, by=team["editor"])
    other_metric = ask(team, metric="rpd", value=20_000)

    assert refused.value.message == "A request for this limit is already waiting for review."
    assert list(QuotaIncreaseRequest.objects.order_by("pk").values_list("pk", "metric")) == [
        (first.pk, "rpm"),
        (other_metric.pk, "rpd"),
    ]
    decline(first, reason="Not now", by=team["support"])
    assert ask(team, value=1200).status == QuotaRequestStatus.PENDING  # decided: a new one may be made


# The dialog and the Limits tab


def test_quota_request_dialog_preselects_the_model(client, team):
    client.force_login(team["owner"])

    response = client.get(reverse("usage:quota-request", args=[team["project"].project_id]) + f"?model={FLASH}")

    html = response.content.decode()
    assert response.status_code == 200
    assert f'<option value="{FLASH}" selected>Gemini 2.5 Flash</option>' in html
    assert '<th scope="row">Gemini 2.5 Flash</th>\n        <td class="num">1,000</td>' in html


def test_quota_request_post_creates_it_and_returns_to_the_limits_tab(client, team):
    client.force_login(team["editor"])
    url = reverse("usage:quota-request", args=[team["project"].project_id])

    response = client.post(url, {"model": FLASH, "metric": "rpm", "value": "1500", "reason": "Launch"})

    assert response.status_code == 302
    assert response["Location"] == f"/usage/limits/?project={team['project'].project_id}"
    assert list(QuotaIncreaseRequest.objects.values_list("model_id", "metric", "requested_value", "requested_by")) == [
        (FLASH, "rpm", 1500, team["editor"].pk)
    ]


def test_quota_request_post_shows_the_service_error_on_its_field(client, team):
    client.force_login(team["owner"])
    url = reverse("usage:quota-request", args=[team["project"].project_id])

    response = client.post(url, {"model": FLASH, "metric": "rpm", "value": "900", "reason": "Launch"})

    assert response.status_code == 422
    assert '<p class="field-error" id="id_value_error">Ask for more than the current limit, 1,000.</p>' in (
        response.content.decode()
    )
    assert QuotaIncreaseRequest.objects.count() == 0


def test_quota_request_post_needs_a_reason(client, team):
    client.force_login(team["owner"])
    url = reverse("usage:quota-request", args=[team["project"].project_id])

    response = client.post(url, {"model": FLASH, "metric": "rpm", "value": "1500", "reason": ""})

    assert response.status_code == 422
    assert "Say why this project needs a higher limit." in response.content.decode()
    assert QuotaIncreaseRequest.objects.count() == 0


@pytest.mark.parametrize("method", ["get", "post"])
def test_viewers_get_403_and_others_404(client, team, method):
    url = reverse("usage:quota-request", args=[team["project"].project_id])
    data = {"model": FLASH, "metric": "rpm", "value": "1500", "reason": "x"}
    client.force_login(team["viewer"])
    assert getattr(client, method)(url, data).status_code == 403
    client.force_login(make_user("outsider@example.com"))
    assert getattr(client, method)(url, data).status_code == 404
    not_imported = make_user("member@example.com")
    add_member(team["project"], not_imported, Role.EDITOR, imported=False)
    client.force_login(not_imported)
    assert getattr(client, method)(url, data).status_code == 404
    client.logout()
    assert getattr(client, method)(url, data).status_code == 302  # to sign in
    assert QuotaIncreaseRequest.objects.count() == 0


def test_limits_tab_shows_requests_raised_figures_and_the_link(client, team, settings):
    settings.REDIS_URL = ""
    project = team["project"]
    approved = ask(team, value=1500)
    approve(approved, value=1200, reason="Approved for launch", by=team["support"])
    pending = ask(team, metric="tpm", value=2_000_000)
    client.force_login(team["owner"])

    html = client.get(f"/usage/limits/?project={project.project_id}").content.decode()

    assert '<td class="num">1,200 <span class="badge">raised for this project</span></td>' in html
    assert html.count("raised for this project") == 1
    link = reverse("usage:quota-request", args=[project.project_id]) + f"?model={FLASH}"
    assert f'href="{link}"' in html
    assert html.count(">Request a higher limit</a>") == 6
    rows = html.split('id="quota-requests"')[1].split("</section>")[0]
    assert rows.index("2,000,000") < rows.index("1,500")  # pending first, then decisions
    assert '<span class="badge">Waiting for review</span>' in rows
    assert '<td class="num">1,200</td>' in rows and "<td>Approved for launch</td>" in rows
    assert pending.status == "pending"


def test_limits_tab_offers_no_request_link_to_viewers(client, team, settings):
    settings.REDIS_URL = ""
    client.force_login(team["viewer"])

    html = client.get(f"/usage/limits/?project={team['project'].project_id}").content.decode()

    assert "Request a higher limit" not in html
    assert "Only an owner or editor of this project can ask for a higher limit." in html


# Deciding (the service)


def test_approve_sets_the_override_audits_both_and_emails_the_requester(team):
    request = ask(team, value=1500, by=team["editor"])

    assert approve(request, value=1200, reason="Approved for launch", by=team["support"]) is True

    request.refresh_from_db()
    assert (request.status, request.approved_value, request.decided_by, request.decision_reason) == (
        "approved",
        1200,
        team["support"],
        "Approved for launch",
    )
    override = QuotaOverride.objects.get()
    assert (override.project, override.model_id, override.rpm, override.tpm, override.rpd, override.updated_by) == (
        team["project"],
        FLASH,
        1200,
        None,
        None,
        team["support"],
    )
    assert audit(request)[1:] == [
        (
            "quota_request.approve",
            "support@staff.example",
            ActorKind.STAFF,
            {"status": "pending"},
            {"status": "approved", "approved_value": 1200},
            "Approved for launch",
        )
    ]
    assert audit(override) == [
        (
            "quota_override.set",
            "support@staff.example",
            ActorKind.STAFF,
            {"rpm": None, "tpm": None, "rpd": None},
            {"rpm": 1200, "tpm": None, "rpd": None},
            "Approved for launch",
        )
    ]
    [message] = deliver_mail()
    assert (message.to, message.subject) == (["editor@example.com"], "Your quota increase request was approved")
    assert (
        "We reviewed your request to raise Requests per minute (RPM) of Gemini 2.5 Flash on Team "
        f"({team['project'].project_id}) to 1,500 and approved 1,200."
    ) in message.body
    assert "Our note: Approved for launch" in message.body
    assert f"/usage/limits/?project={team['project'].project_id}" in message.body


def test_a_second_approval_of_another_limit_keeps_the_first(team):
    approve(ask(team, value=1500), value=1500, reason="ok", by=team["support"])
    approve(ask(team, metric="rpd", value=20_000), value=15_000, reason="ok", by=team["support"])

    assert list(QuotaOverride.objects.values_list("rpm", "tpm", "rpd")) == [(1500, None, 15_000)]
    assert limit_in_force(team["project"], FLASH, "rpd") == 15_000


@pytest.mark.parametrize(
    ("value", "message"),
    [(0, "Approve a figure from 1 to the 1,500 asked for."), (1501, "Approve a figure from 1 to the 1,500 asked for.")],
)
def test_approve_refuses_a_figure_outside_what_was_asked(team, value, message):
    request = ask(team, value=1500)

    with pytest.raises(QuotaError) as refused:
        approve(request, value=value, reason="x", by=team["support"])

    assert refused.value.message == message
    request.refresh_from_db()
    assert request.status == "pending"
    assert QuotaOverride.objects.count() == 0
    assert deliver_mail() == []


def test_decisions_need_a_reason(team):
    request = ask(team)
    for decide in (lambda: approve(request, value=1500, reason=" ", by=team["support"]),
                   lambda: decline(request, reason="", by=team["support"])):  # fmt: skip
        with pytest.raises(QuotaError) as refused:
            decide()
        assert refused.value.message == "Give a reason for the decision."
    request.refresh_from_db()
    assert request.status == "pending"


def test_decline_audits_and_emails_in_the_requesters_language(team):
    team["editor"].language = "ja"
    team["editor"].save(update_fields=["language"])
    request = ask(team, by=team["editor"])

    assert decline(request, reason="Traffic history too short", by=team["support"]) is True

    request.refresh_from_db()
    assert (request.status, request.approved_value, request.decided_by) == ("declined", None, team["support"])
    assert audit(request)[1:] == [
        (
            "quota_request.decline",
            "support@staff.example",
            ActorKind.STAFF,
            {"status": "pending"},
            {"status": "declined"},
            "Traffic history too short",
        )
    ]
    assert QuotaOverride.objects.count() == 0
    [message] = deliver_mail()
    with translation.override("ja"):
        signature = gettext("— The Studio Console team")
    assert signature != "— The Studio Console team"  # the catalogue translates it: the e-mail was written in Japanese
    assert message.to == ["editor@example.com"]
    assert signature in message.body
    assert "Traffic history too short" in message.body


def test_a_decided_request_stays_decided(team):
    request = ask(team)
    other_support = make_staff("support2@staff.example", "Support")
    approve(request, value=1500, reason="ok", by=team["support"])

    stale = QuotaIncreaseRequest.objects.get(pk=request.pk)
    stale.status = "pending"  # what a page loaded before the decision still shows
    assert decline(stale, reason="no", by=other_support) is False
    assert approve(stale, value=1100, reason="again", by=other_support) is False

    assert (stale.status, stale.approved_value, stale.decided_by_id) == ("approved", 1500, team["support"].pk)
    request.refresh_from_db()
    assert (request.status, request.approved_value, request.decided_by) == ("approved", 1500, team["support"])
    assert list(QuotaOverride.objects.values_list("rpm", flat=True)) == [1500]
    assert [row[0] for row in audit(request)] == ["quota_request.create", "quota_request.approve"]
    assert len(deliver_mail()) == 1


def test_approve_does_not_lower_an_override(team):
    QuotaOverride.objects.create(project=team["project"], model_id=FLASH, rpm=1400)
    request = ask(team, value=3000)

    with pytest.raises(QuotaError) as refused:
        approve(request, value=1400, reason="x", by=team["support"])

    assert refused.value.message == "This project already has 1,400 here: approve more than that, or decline."
    assert list(QuotaOverride.objects.values_list("rpm", flat=True)) == [1400]


# Admission


TIGHT = {"rpm": 2, "tpm": 1000, "rpd": 2}  # what Tier 1 allows on Flash once tightened
OVERRIDE = {"rpm": 3, "tpm": 1500, "rpd": 3}
TOKENS = {"rpm": 1, "tpm": 500, "rpd": 1}  # input tokens per check


def tighten(*metrics):
    RateLimit.objects.filter(tier=Tier.TIER_1, model_id=FLASH).update(**{m: TIGHT[m] for m in metrics})
    catalog.forget()


@pytest.fixture
def tight(db, settings):
    """A Tier 1 project's key, Support and the in-process limiter on a frozen clock (tests tighten the tier's limits
    on Flash with `tighten`)."""
    settings.REDIS_URL = ""
    owner = make_user("tight@example.com")
    project = make_project(owner, name="Tight", tier=Tier.TIER_1)
    _, raw = make_key(project)
    support = make_staff("support@staff.example", "Support")
    with time_machine.travel(FROZEN, tick=False):
        yield project, raw, owner, support


def checks(raw, count, *, tokens=1):
    return [
        admission.check(raw_key=raw, model_id=FLASH, kind="generate", estimated_input_tokens=tokens)["allowed"]
        for _ in range(count)
    ]


@pytest.mark.parametrize("metric", ["rpm", "tpm", "rpd"])
def test_an_override_admits_exactly_its_figure(tight, metric):
    project, raw, owner, support = tight
    tighten(metric)
    figure, tokens = OVERRIDE[metric], TOKENS[metric]
    request = request_increase(project, model_id=FLASH, metric=metric, value=figure, reason="x", by=owner)
    approve(request, value=figure, reason="ok", by=support)

    assert checks(raw, 4, tokens=tokens) == [True, True, True, False]


@pytest.mark.parametrize("metric", ["rpm", "tpm", "rpd"])
def test_approval_applies_to_the_very_next_check(tight, metric):
    project, raw, owner, support = tight
    tighten(metric)
    figure, tokens = OVERRIDE[metric], TOKENS[metric]
    assert checks(raw, 3, tokens=tokens) == [True, True, False]
    request = request_increase(project, model_id=FLASH, metric=metric, value=figure, reason="x", by=owner)

    approve(request, value=figure, reason="ok", by=support)

    assert checks(raw, 2, tokens=tokens) == [True, False]
    denied = admission.check(raw_key=raw, model_id=FLASH, kind="generate", estimated_input_tokens=tokens)
    limit = next(s for s in denied["limits"] if s["quota_id"] == denied["error"]["quota_id"])
    assert (limit["limit"], limit["remaining"]) == (figure, 0)
    assert denied["error"]["quota_id"] == admission.quota_ids(Tier.TIER_1)[metric]


def test_an_override_on_another_model_changes_nothing(tight):
    project, raw, _owner, _support = tight
    tighten("rpm")
    QuotaOverride.objects.create(project=project, model_id=PRO, rpm=50)

    assert checks(raw, 3) == [True, True, False]


def test_a_later_tier_never_lowers_the_limit(tight):
    project, _raw, _owner, _support = tight
    tighten("rpm", "tpm", "rpd")
    QuotaOverride.objects.create(project=project, model_id=FLASH, rpm=1500, tpm=500)

    def figures():
        return {lim.quota_id.split("-")[0]: lim.limit for lim in limits_for(project, FLASH, estimated_input_tokens=1)}

    assert figures() == {
        "GenerateRequestsPerMinutePerProjectPerModel": 1500,
        "GenerateContentInputTokensPerModelPerMinute": 1000,  # the tier's is higher than the override's
        "GenerateRequestsPerDayPerProjectPerModel": 2,
        "GenerateSpendPer10MinutesPerProject": 10_000_000,
    }
    project.tier = Tier.TIER_2
    assert figures()["GenerateRequestsPerMinutePerProjectPerModel"] == 2000
    # On the free tier (no billing, a prepayment due, a suspension) the override waits for paid billing to return.
    project.tier, project.billing_state = Tier.FREE, BillingState.NONE
    free_rpm = catalog.get_catalog().rate_limits[(Tier.FREE, FLASH)].rpm
    assert figures()["GenerateRequestsPerMinutePerProjectPerModel"] == free_rpm != 1500


def test_admittee_and_project_give_the_same_limits(tight):
    project, raw, _owner, _support = tight
    QuotaOverride.objects.create(project=project, model_id=FLASH, rpm=7, rpd=9)

    found = admission.find_admittee(raw, FLASH)

    assert (found.override_model, found.override) == (FLASH, (7, None, 9))
    assert limits_for(found, FLASH, estimated_input_tokens=3) == limits_for(project, FLASH, estimated_input_tokens=3)
    with pytest.raises(ValueError):
        limits_for(found, PRO, estimated_input_tokens=3)


def test_admission_is_one_query_with_an_override(tight, django_assert_num_queries):
    project, raw, _owner, _support = tight
    QuotaOverride.objects.create(project=project, model_id=FLASH, rpm=7)
    catalog.get_catalog()
    checks(raw, 1)  # the key's last_used_at is written once a minute at most

    with django_assert_num_queries(1):
        assert checks(raw, 1) == [True]
