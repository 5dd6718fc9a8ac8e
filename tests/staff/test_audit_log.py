"""The audit log for staff (SPEC §10 "Audit"): filters by customer, object, actor and action; pages of 50."""

import re
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from staff.views import audit as audit_views
from studio.models import ActorKind, AuditEvent
from tests.factories import make_project, make_user


def actions(response) -> list[str]:
    """The actions of the listed events, in page order."""
    return re.findall(r"<td><code>([^<]+)</code></td>\s*<td><code>", response.content.decode())


@pytest.fixture
def log(customer_world, support, finance):
    """A small history, one event a minute, oldest first, newer than what the factories recorded."""
    other = make_user("other@example.com")
    other_project = make_project(other, name="Other app")
    start = timezone.now() + timedelta(minutes=1)
    rows = [
        (customer_world["user"], "user.settings", customer_world["user"], ActorKind.USER),
        (support, "project.tier_override", customer_world["project"], ActorKind.STAFF),
        (finance, "billing.suspend", customer_world["account"], ActorKind.STAFF),
        (other, "project.spend_cap", other_project, ActorKind.USER),
        (finance, "billing.reinstate", customer_world["account"], ActorKind.STAFF),
    ]
    for minute, (actor, action, obj, kind) in enumerate(rows):
        with time_machine.travel(start + timedelta(minutes=minute)):
            AuditEvent.record(actor=actor, action=action, obj=obj, actor_kind=kind, reason=f"r{minute}")
    return {**customer_world, "other": other, "other_project": other_project}


def test_audit_log_lists_everything_newest_first(client, support, log):
    client.force_login(support)
    response = client.get(reverse("staff:audit"))
    listed = actions(response)
    # Then the factories' own events (key creation, billing link), older.
    assert listed[:5] == [
        "billing.reinstate",
        "project.spend_cap",
        "billing.suspend",
        "project.tier_override",
        "user.settings",
    ]
    assert len(listed) == AuditEvent.objects.count()


def test_filter_by_customer_email_or_id(client, support, log):
    client.force_login(support)
    by_email = actions(client.get(reverse("staff:audit"), {"customer": "CUSTOMER@example.com"}))
    by_id = actions(client.get(reverse("staff:audit"), {"customer": str(log["user"].pk)}))
    assert by_email == by_id
    assert "project.spend_cap" not in by_email
    assert by_email[:4] == ["billing.reinstate", "billing.suspend", "project.tier_override", "user.settings"]


def test_filter_by_object(client, finance, log):
    client.force_login(finance)
    response = client.get(
        reverse("staff:audit"), {"object_type": "Billing.BillingAccount", "object_id": str(log["account"].pk)}
    )
    assert actions(response) == ["billing.reinstate", "billing.suspend"]


def test_filter_by_object_type_alone(client, finance, log):
    client.force_login(finance)
    listed = actions(client.get(reverse("staff:audit"), {"object_type": "studio.project"}))
    assert listed[:2] == ["project.spend_cap", "project.tier_override"]
    assert set(listed) <= {"project.spend_cap", "project.tier_override", "project.billing_link", "project.tier"}


def test_filter_by_actor_and_action_prefix(client, support, log):
    client.force_login(support)
    assert actions(client.get(reverse("staff:audit"), {"actor": "finance@staff.example"})) == [
        "billing.reinstate",
        "billing.suspend",
    ]
    assert actions(client.get(reverse("staff:audit"), {"action": "billing.s"})) == ["billing.suspend"]
    assert actions(client.get(reverse("staff:audit"), {"actor": "finance@staff.example", "action": "billing.r"})) == [
        "billing.reinstate"
    ]


def test_an_event_row_shows_actor_kind_and_reason(client, support, log):
    client.force_login(support)
    page = client.get(reverse("staff:audit"), {"action": "billing.suspend"}).content.decode()
    assert 'finance@staff.example <span class="muted">(Staff)</span>' in page
    assert f"<code>billing.billingaccount:{log['account'].pk}</code>" in page
    assert "<td>r2</td>" in page


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"customer": "nobody@example.com"}, "customer", "No user has this e-mail address or ID."),
        ({"customer": "99999999999999999999999"}, "customer", "No user has this e-mail address or ID."),
        ({"object_type": "nothing.here"}, "object_type", "Not a known object type: write it as app.model."),
        ({"object_type": "no-dot"}, "object_type", "Not a known object type: write it as app.model."),
        ({"object_id": "12"}, "object_type", "Give the object&#x27;s type with its ID."),
        ({"actor": "ghost@example.com"}, "actor", "No user has this e-mail address."),
        ({"action": "x" * 65}, "action", "Ensure this value has at most 64 characters (it has 65)."),
    ],
)
def test_bad_filters_are_field_errors(client, support, log, params, field, message):
    client.force_login(support)
    response = client.get(reverse("staff:audit"), params)
    assert response.status_code == 422
    page = response.content.decode()
    assert f'<p class="field-error" id="id_{field}_error">{message}</p>' in page
    assert actions(response) == []


@pytest.mark.parametrize("number", ["abc", "0", "-1", "1000000", "99999999999999999999999", "²"])
def test_garbage_page_numbers_show_the_first_page(client, support, log, number):
    client.force_login(support)
    assert actions(client.get(reverse("staff:audit"), {"page": number, "action": "billing.s"})) == ["billing.suspend"]


def test_a_page_past_the_end_is_empty_with_a_link_back(client, support, log):
    client.force_login(support)
    response = client.get(reverse("staff:audit"), {"page": "999", "action": "billing.s"})
    page = response.content.decode()
    assert (response.status_code, actions(response)) == (200, [])
    assert re.search(r'href="([^"]+)"[^>]* rel="prev"', page).group(1) == "?page=998&amp;action=billing.s"
    assert "Page 999" in page and 'rel="next"' not in page


def test_the_log_is_never_counted(client, support, log):
    """No COUNT(*) of the whole table per page: one row more than a page says whether there is a next one."""
    client.force_login(support)
    with CaptureQueriesContext(connection) as queries:
        client.get(reverse("staff:audit"))
    audit_queries = [q["sql"] for q in queries if "studio_auditevent" in q["sql"]]
    assert [("COUNT(" in sql, "LIMIT 51" in sql) for sql in audit_queries] == [(False, True)]


def test_pages_of_fifty_with_links_that_keep_the_filters(client, support, customer, monkeypatch):
    for index in range(53):
        AuditEvent.record(actor=customer, action=f"test.e{index:02d}", obj=customer)
    client.force_login(support)
    first = client.get(reverse("staff:audit"), {"action": "test.", "actor": "customer@example.com"})
    assert actions(first) == [f"test.e{index:02d}" for index in range(52, 2, -1)]
    page = first.content.decode()
    assert "Page 1</span>" in page and 'rel="prev"' not in page
    next_url = re.search(r'href="([^"]+)"[^>]* rel="next"', page).group(1).replace("&amp;", "&")
    assert next_url == "?action=test.&actor=customer%40example.com&page=2"
    second = client.get(reverse("staff:audit") + next_url)
    assert actions(second) == ["test.e02", "test.e01", "test.e00"]
    assert 'rel="prev"' in second.content.decode() and 'rel="next"' not in second.content.decode()
    assert "Page 2</span>" in second.content.decode()


def test_exactly_fifty_events_make_one_page(client, support, customer):
    for index in range(50):
        AuditEvent.record(actor=customer, action=f"test.e{index:02d}", obj=customer)
    client.force_login(support)
    response = client.get(reverse("staff:audit"), {"action": "test."})
    assert len(actions(response)) == 50
    assert 'class="pagination"' not in response.content.decode()


def test_htmx_gets_the_results_alone(client, support, log):
    client.force_login(support)
    page = client.get(reverse("staff:audit"), {"action": "billing.s"}, headers={"HX-Request": "true"}).content
    assert page.decode().lstrip().startswith('<div id="audit-results">') and b"<html" not in page


def _audit_queries(client, params) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse("staff:audit"), params)
    assert response.status_code == 200
    return len(queries)


@pytest.mark.parametrize(
    "params", [{}, {"action": "rows."}, {"customer": "customer@example.com"}, {"object_type": "studio.user"}]
)
def test_audit_list_query_count_does_not_grow_with_rows(client, support, customer, params):
    client.force_login(support)
    AuditEvent.record(actor=customer, action="rows.one", obj=customer)
    one = _audit_queries(client, params)
    for _ in range(2):
        AuditEvent.record(actor=customer, action="rows.more", obj=customer)
    assert _audit_queries(client, params) == one


def test_customer_page_links_to_its_filtered_log(client, support, log):
    client.force_login(support)
    url = f"{reverse('staff:audit')}?customer={log['user'].pk}"
    assert f'href="{url}"' in client.get(reverse("staff:customer", args=[log["user"].pk])).content.decode()


def test_project_page_shows_the_projects_own_history(client, support, log):
    client.force_login(support)
    page = client.get(reverse("staff:project", args=[log["project"].project_id])).content.decode()
    history = page[page.index('id="history-heading"') :]
    assert "<code>project.tier_override</code>" in history and "<td>r1</td>" in history
    assert "billing.suspend" not in history and "project.spend_cap" not in history


def test_per_page_is_fifty():
    assert audit_views.PER_PAGE == 50


# --- who may open it ---


@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize("who", [None, "customer", "groupless_staff"])
def test_audit_log_is_404_without_the_permission(request, client, method, who):
    if who is not None:
        client.force_login(request.getfixturevalue(who))
    assert getattr(client, method)(reverse("staff:audit")).status_code == 404


@pytest.mark.parametrize("who", ["support", "finance", "superuser"])
def test_audit_log_is_open_to_support_finance_and_superusers(request, client, log, who):
    client.force_login(request.getfixturevalue(who))
    response = client.get(reverse("staff:audit"), {"action": "billing.s"})
    assert (response.status_code, actions(response)) == (200, ["billing.suspend"])
    assert client.post(reverse("staff:audit")).status_code == 405
