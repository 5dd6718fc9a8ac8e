"""Support's quota increase queue and decisions (SPEC §10): who may see and decide, the filters, the decision dialog,
a constant number of queries, and the admin's actions (which call the same service)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from studio.models import ActorKind, AuditEvent, Role, Tier
from tests.factories import add_member, deliver_mail, make_project, make_user
from usage.models import QuotaIncreaseRequest, QuotaOverride, QuotaRequestStatus
from usage.quotas import approve, request_increase

FLASH, PRO = "gemini-2.5-flash", "gemini-2.5-pro"


def ask(project, user, *, model=FLASH, metric="rpm", value=1500, reason="Launch traffic"):
    return request_increase(project, model_id=model, metric=metric, value=value, reason=reason, by=user)


@pytest.fixture
def queue(customer_world):
    """Three requests of the customer's Tier 1 project, oldest first: Flash RPM, Pro TPM, Flash RPD."""
    project, user = customer_world["project"], customer_world["user"]
    rows = [
        ask(project, user),
        ask(project, user, model=PRO, metric="tpm", value=3_000_000, reason="Batch jobs"),
        ask(project, user, metric="rpd", value=20_000, reason="Nightly"),
    ]
    now = timezone.now()
    for age, row in zip((3, 2, 1), rows, strict=True):  # make their order unambiguous
        QuotaIncreaseRequest.objects.filter(pk=row.pk).update(requested_at=now - timedelta(hours=age))
    return rows


def listed(html):
    """The queue's rows as (model id, metric label, requested) in page order."""
    body = html.split('id="quota-requests-table"')[1].split("<tbody>")[1].split("</tbody>")[0]
    rows = []
    for row in body.split("<tr>")[1:]:
        if "colspan" in row:  # the empty table's one row
            continue
        cells = row.split("<td")
        model = cells[2].split('<small class="muted">')[1].split("<")[0]
        metric = cells[3].split(">", 1)[1].split("<")[0]
        requested = cells[5].split(">", 1)[1].split("<")[0]
        rows.append((model, metric, requested))
    return rows


URLS = [("staff:quota-requests", False), ("staff:quota-request-decide", True)]


@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize(("name", "with_pk"), URLS)
def test_queue_and_decision_are_404_but_for_support(
    client, queue, customer, groupless_staff, finance, method, name, with_pk
):
    url = reverse(name, args=[queue[0].pk] if with_pk else [])
    data = {"decision": "approve", "value": "1500", "reason": "x"}
    assert getattr(client, method)(url, data).status_code == 404  # anonymous
    for user in (customer, groupless_staff, finance):
        client.force_login(user)
        assert getattr(client, method)(url, data).status_code == 404
    assert list(QuotaIncreaseRequest.objects.values_list("status", flat=True)) == ["pending"] * 3
    assert QuotaOverride.objects.count() == 0


def test_queue_lists_pending_requests_oldest_first(client, support, queue, customer_world):
    approve(queue[1], value=2_500_000, reason="ok", by=support)
    client.force_login(support)

    html = client.get(reverse("staff:quota-requests")).content.decode()

    assert listed(html) == [
        (FLASH, "Requests per minute (RPM)", "1,500"),
        (FLASH, "Requests per day (RPD)", "20,000"),
    ]
    project = customer_world["project"]
    assert f'<a href="{reverse("staff:project", args=[project.project_id])}">Customer app</a>' in html
    assert "<td>customer@example.com</td>" in html and "<td>Launch traffic</td>" in html
    assert '<td class="num">1,000</td>' in html  # the limit when asked


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=approved", [(PRO, "Input tokens per minute (TPM)", "3,000,000")]),
        ("status=all&model=gemini-2.5-flash", [(FLASH, "Requests per minute (RPM)", "1,500"),
                                               (FLASH, "Requests per day (RPD)", "20,000")]),
        ("metric=rpd", [(FLASH, "Requests per day (RPD)", "20,000")]),
        ("model=gemini-2.5-pro", []),
        ("status=bogus", [(FLASH, "Requests per minute (RPM)", "1,500"), (FLASH, "Requests per day (RPD)", "20,000")]),
    ],
)  # fmt: skip
def test_queue_filters(client, support, queue, query, expected):
    approve(queue[1], value=2_500_000, reason="ok", by=support)
    client.force_login(support)

    html = client.get(f"{reverse('staff:quota-requests')}?{query}").content.decode()

    assert listed(html) == expected
    if not expected:
        assert "No quota increase request matches." in html


def test_queue_takes_the_same_queries_for_one_and_three_rows(client, support, customer_world):
    project, user = customer_world["project"], customer_world["user"]
    client.force_login(support)
    ask(project, user)
    client.get(reverse("staff:quota-requests"))  # warm the catalog snapshot

    with CaptureQueriesContext(connection) as one:
        assert len(listed(client.get(reverse("staff:quota-requests")).content.decode())) == 1
    other = make_project(user, name="Second", tier=Tier.TIER_1)
    ask(other, user)
    ask(other, user, metric="tpm", value=2_000_000)
    with CaptureQueriesContext(connection) as three:
        assert len(listed(client.get(reverse("staff:quota-requests")).content.decode())) == 3

    assert len(three) == len(one)


def test_decision_dialog_prefills_the_requested_figure(client, support, queue):
    client.force_login(support)

    html = client.get(reverse("staff:quota-request-decide", args=[queue[0].pk])).content.decode()

    assert '<input type="number" name="value" value="1500" min="1" id="id_value">' in html
    assert "<dt>In force now</dt><dd>1,000</dd>" in html
    assert "<p>Customer's reason: Launch traffic</p>" in html
    assert "quota_request.create" in html  # its history


def test_support_approves_a_lower_figure(client, support, queue, customer_world):
    client.force_login(support)

    response = client.post(
        reverse("staff:quota-request-decide", args=[queue[0].pk]),
        {"decision": "approve", "value": "1200", "reason": "Start lower"},
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("staff:quota-requests")
    queue[0].refresh_from_db()
    assert (queue[0].status, queue[0].approved_value, queue[0].decided_by, queue[0].decision_reason) == (
        "approved",
        1200,
        support,
        "Start lower",
    )
    assert list(QuotaOverride.objects.values_list("project", "model", "rpm", "tpm", "rpd")) == [
        (customer_world["project"].pk, FLASH, 1200, None, None)
    ]
    actions = AuditEvent.objects.filter(actor=support).order_by("pk").values_list("action", "actor_kind", "reason")
    assert list(actions) == [
        ("quota_override.set", ActorKind.STAFF, "Start lower"),
        ("quota_request.approve", ActorKind.STAFF, "Start lower"),
    ]
    follow = client.get(reverse("staff:quota-requests")).content.decode()
    assert "Approved 1,200: it applies to the project&#x27;s next request." in follow
    [message] = deliver_mail()
    assert (message.to, message.subject) == (["customer@example.com"], "Your quota increase request was approved")


def test_support_declines_with_htmx_and_the_queue_reloads(client, support, queue):
    client.force_login(support)

    response = client.post(
        reverse("staff:quota-request-decide", args=[queue[0].pk]),
        {"decision": "decline", "value": "", "reason": "Not enough history"},
        headers={"HX-Request": "true"},
    )

    assert response.status_code == 200
    assert response["HX-Trigger"] == '{"queue-changed": {}, "close-modal": {}}'
    queue[0].refresh_from_db()
    assert (queue[0].status, queue[0].approved_value, queue[0].decision_reason) == (
        "declined",
        None,
        "Not enough history",
    )
    assert QuotaOverride.objects.count() == 0


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"decision": "approve", "value": "", "reason": "ok"}, "Enter the figure to approve."),
        ({"decision": "approve", "value": "1501", "reason": "ok"}, "Approve a figure from 1 to the 1,500 asked for."),
        ({"decision": "approve", "value": "0", "reason": "ok"}, "Ensure this value is greater than or equal to 1."),
        ({"decision": "decline", "reason": ""}, "This field is required."),
    ],
)
def test_decision_errors_show_in_the_dialog(client, support, queue, data, error):
    client.force_login(support)

    response = client.post(reverse("staff:quota-request-decide", args=[queue[0].pk]), data)

    assert response.status_code == 422
    assert error in response.content.decode()
    queue[0].refresh_from_db()
    assert queue[0].status == QuotaRequestStatus.PENDING
    assert QuotaOverride.objects.count() == 0


def test_a_decided_request_is_not_decided_again(client, support, superuser, queue):
    approve(queue[0], value=1500, reason="first", by=superuser)
    client.force_login(support)

    response = client.post(
        reverse("staff:quota-request-decide", args=[queue[0].pk]), {"decision": "decline", "reason": "second"}
    )

    assert response.status_code == 302
    queue[0].refresh_from_db()
    assert (queue[0].status, queue[0].decided_by, queue[0].decision_reason) == ("approved", superuser, "first")
    assert (
        "This quota request had already been decided." in client.get(reverse("staff:quota-requests")).content.decode()
    )
    page = client.get(reverse("staff:quota-request-decide", args=[queue[0].pk])).content.decode()
    assert "Decided by root@staff.example: first" in page and 'name="reason"' not in page


def test_superuser_may_decide(client, superuser, queue):
    client.force_login(superuser)
    response = client.post(
        reverse("staff:quota-request-decide", args=[queue[2].pk]),
        {"decision": "approve", "value": "20000", "reason": "ok"},
    )
    assert response.status_code == 302
    assert list(QuotaOverride.objects.values_list("rpm", "tpm", "rpd")) == [(None, None, 20_000)]


def test_unknown_request_is_404(client, support, db):
    client.force_login(support)
    assert client.get(reverse("staff:quota-request-decide", args=[999_999])).status_code == 404


# The admin


def test_admin_actions_decide_through_the_service(client, superuser, queue):
    client.force_login(superuser)
    url = reverse("admin:usage_quotaincreaserequest_changelist")

    client.post(url, {"action": "approve_as_requested", "_selected_action": [queue[0].pk]})
    client.post(url, {"action": "decline", "_selected_action": [queue[1].pk, queue[0].pk]})

    rows = QuotaIncreaseRequest.objects.order_by("pk").values_list("status", "approved_value", "decision_reason")
    assert list(rows) == [
        ("approved", 1500, "Approved as requested."),
        ("declined", None, "Declined: contact Support for details."),
        ("pending", None, ""),
    ]
    assert list(QuotaOverride.objects.values_list("rpm", "tpm", "rpd")) == [(1500, None, None)]
    assert sorted(m.subject for m in deliver_mail()) == [
        "Your quota increase request was approved",
        "Your quota increase request was not approved",
    ]


def test_admin_lists_requests_and_overrides_read_only(client, superuser, queue):
    approve(queue[0], value=1500, reason="ok", by=superuser)
    client.force_login(superuser)

    requests_page = client.get(reverse("admin:usage_quotaincreaserequest_changelist")).content.decode()
    overrides_page = client.get(reverse("admin:usage_quotaoverride_changelist")).content.decode()

    assert requests_page.count('name="_selected_action"') == 3
    assert "Approve the figures requested" in requests_page
    assert overrides_page.count('class="field-rpm"') == 1
    assert client.get(reverse("admin:usage_quotaoverride_add")).status_code == 403


def test_admin_actions_need_the_decide_permission(client, queue):
    from django.contrib.auth.models import Permission

    staff = make_user("admin-viewer@staff.example", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_quotaincreaserequest"))
    client.force_login(staff)

    page = client.get(reverse("admin:usage_quotaincreaserequest_changelist")).content.decode()

    assert "Approve the figures requested" not in page


def test_viewer_of_the_project_cannot_reach_support_tools(client, customer_world):
    viewer = make_user("viewer@example.com")
    add_member(customer_world["project"], viewer, Role.VIEWER)
    client.force_login(viewer)
    assert client.get(reverse("staff:quota-requests")).status_code == 404
