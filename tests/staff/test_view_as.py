"""View as customer (SPEC §10): the customer's own pages, read-only, for a Support member, each viewing audited."""

import uuid

import pytest
from django.contrib.auth.models import Group
from django.core import mail
from django.core.mail import send_mail
from django.db import connection
from django.http import HttpResponse
from django.test import RequestFactory
from django.urls import reverse

from billing.models import (
    BillingAccount,
    Budget,
    PaymentMethod,
    Prepayment,
    ProjectBilling,
    RefundRequest,
    SetupSession,
)
from staff import roles, viewas
from studio.models import ActorKind, ApiKey, AuditEvent, OutboundEmail, Project, Tier, User
from tests.factories import make_account, make_key, make_project, make_staff


def start_viewing(client, staff, customer, reason="Case 4711: keys missing"):
    client.force_login(staff)
    return client.post(reverse("staff:view-as", args=[customer.pk]), {"reason": reason})


def audit_rows(action_prefix="staff."):
    return list(
        AuditEvent.objects.filter(action__startswith=action_prefix)
        .order_by("pk")
        .values_list("actor__email", "actor_kind", "action", "object_type", "object_id", "before", "after", "reason")
    )


@pytest.fixture
def support_world(support):
    """The Support member's own project and key: what they must NOT see while viewing."""
    project = make_project(support, name="Staff-own project", tier=Tier.FREE)
    key, _raw = make_key(project, name="Staff-own key")
    return {"project": project, "key": key}


# --- starting and stopping ---


def test_view_as_records_the_viewing_and_opens_the_customers_keys(client, support, customer_world):
    customer = customer_world["user"]
    response = start_viewing(client, support, customer)
    assert (response.status_code, response["Location"]) == (302, reverse("api-keys"))
    assert audit_rows() == [
        (
            "support@staff.example",
            ActorKind.STAFF,
            "staff.view_as",
            "studio.user",
            str(customer.pk),
            {},
            {},
            "Case 4711: keys missing",
        )
    ]
    assert client.session[viewas.SESSION_KEY] == {"user_id": customer.pk}


def test_view_as_needs_a_reason(client, support, customer_world):
    response = start_viewing(client, support, customer_world["user"], reason="   ")
    assert response.status_code == 422
    assert "This field is required." in response.content.decode()
    assert audit_rows() == [] and viewas.SESSION_KEY not in client.session


@pytest.mark.parametrize("target", ["finance", "superuser"])
def test_view_as_refuses_staff_and_superusers(request, client, support, target):
    other = request.getfixturevalue(target)
    response = start_viewing(client, support, other)
    assert (response.status_code, response["Location"]) == (302, reverse("staff:customer", args=[other.pk]))
    page = client.get(response["Location"]).content.decode()
    assert "Staff members, superusers and deactivated users have no customer console to view." in page
    assert audit_rows() == [] and viewas.SESSION_KEY not in client.session


def test_stop_viewing_records_the_end_and_goes_back_to_the_customers_page(client, support, customer_world):
    customer = customer_world["user"]
    start_viewing(client, support, customer)
    response = client.post(reverse("staff:view-as-stop"))
    assert (response.status_code, response["Location"]) == (302, reverse("staff:customer", args=[customer.pk]))
    assert [row[2] for row in audit_rows()] == ["staff.view_as", "staff.view_as_end"]
    assert audit_rows()[1] == (
        "support@staff.example",
        ActorKind.STAFF,
        "staff.view_as_end",
        "studio.user",
        str(customer.pk),
        {},
        {},
        "",
    )
    assert viewas.SESSION_KEY not in client.session
    assert "You are no longer viewing customer@example.com" in client.get(response["Location"]).content.decode()


def test_stop_without_a_viewing_records_nothing(client, support):
    client.force_login(support)
    response = client.post(reverse("staff:view-as-stop"))
    assert (response.status_code, response["Location"]) == (302, reverse("staff:lookup"))
    assert audit_rows() == []


def test_viewing_someone_else_ends_the_first_viewing(client, support, customer_world):
    from tests.factories import make_user

    other = make_user("other@example.com")
    start_viewing(client, support, customer_world["user"], reason="first")
    client.post(reverse("staff:view-as", args=[other.pk]), {"reason": "second"})
    assert [(row[2], row[4], row[7]) for row in audit_rows()] == [
        ("staff.view_as", str(customer_world["user"].pk), "first"),
        ("staff.view_as_end", str(customer_world["user"].pk), "second"),
        ("staff.view_as", str(other.pk), "second"),
    ]
    assert client.session[viewas.SESSION_KEY] == {"user_id": other.pk}


# --- what the staff member sees ---


def test_viewing_shows_the_customers_keys_not_the_staff_members(client, support, support_world, customer_world):
    start_viewing(client, support, customer_world["user"])
    response = client.get(reverse("api-keys"))
    page = response.content.decode()
    assert response.status_code == 200
    assert "Customer key" in page and "Staff-own key" not in page
    assert "You are viewing Casey Customer (customer@example.com)’s console, read-only." in page
    assert f'action="{reverse("staff:view-as-stop")}"' in page
    assert 'class="viewing-as" role="region" aria-labelledby="viewing-as-text"' in page


def test_viewing_shows_the_customers_billing_and_usage(client, support, support_world, customer_world):
    make_account(support, name="Staff-own billing")
    start_viewing(client, support, customer_world["user"])
    billing = client.get(reverse("billing:page")).content.decode()
    assert "Customer billing" in billing and "Staff-own billing" not in billing
    usage = client.get(reverse("usage:dashboard")).content.decode()
    assert "Customer app" in usage and "Staff-own project" not in usage
    key = customer_world["key"][0]
    detail = client.get(reverse("api-key-detail", args=[key.pk]))
    assert detail.status_code == 200 and key.masked in detail.content.decode()
    assert client.get(reverse("api-key-detail", args=[support_world["key"].pk])).status_code == 404


def test_htmx_partials_render_as_the_customer(client, support, support_world, customer_world):
    start_viewing(client, support, customer_world["user"])
    page = client.get(reverse("api-keys"), headers={"HX-Request": "true"}).content.decode()
    assert "Customer key" in page and "Staff-own key" not in page and "<html" not in page


def test_staff_pages_stay_the_staff_members_own_while_viewing(client, support, customer_world):
    start_viewing(client, support, customer_world["user"])
    response = client.get(reverse("staff:customer", args=[customer_world["user"].pk]))
    assert response.status_code == 200
    assert response.wsgi_request.user == support and not getattr(response.wsgi_request, "viewing_as", None)
    assert "You are viewing this customer's console now." in response.content.decode()


# --- every write is refused ---


def state(world):
    """What a write could change, as plain values."""
    key = ApiKey.objects.get(pk=world["key"][0].pk)
    project = Project.objects.get(pk=world["project"].pk)
    account = BillingAccount.objects.get(pk=world["account"].pk)
    user = User.objects.get(pk=world["user"].pk)
    return {
        "keys": sorted(ApiKey.objects.values_list("pk", "name", "revoked_at")),
        "key": (key.name, key.revoked_at),
        "project": (project.tier, project.billing_state, project.monthly_spend_cap),
        "projects": Project.objects.count(),
        "account": (account.status, account.primary_payment_method_id),
        "links": sorted(ProjectBilling.objects.values_list("project_id", "account_id")),
        "methods": sorted(PaymentMethod.objects.values_list("pk", "removed_at")),
        "user": (user.language, user.time_zone, user.full_name),
        "setups": SetupSession.objects.count(),
        "refunds": RefundRequest.objects.count(),
        "prepayments": Prepayment.objects.count(),
        "budgets": Budget.objects.count(),
        "emails": OutboundEmail.objects.count(),
        "audit": list(AuditEvent.objects.exclude(action__startswith="staff.").values_list("pk", flat=True)),
    }


WRITE_URLS = [
    ("api-key-create", lambda w: []),
    ("api-key-rename", lambda w: [w["key"][0].pk]),
    ("api-key-revoke", lambda w: [w["key"][0].pk]),
    ("project-import", lambda w: []),
    ("settings", lambda w: []),
    ("billing:setup", lambda w: []),
    ("billing:setup-project", lambda w: [uuid.uuid4()]),
    ("billing:setup-finish", lambda w: [uuid.uuid4()]),
    ("billing:unlink", lambda w: [w["account"].account_id, w["project"].project_id]),
    ("billing:move", lambda w: [w["account"].account_id, w["project"].project_id]),
    ("billing:make-primary", lambda w: [w["account"].account_id, w["account"].primary_payment_method_id]),
    ("billing:add-payment-method", lambda w: []),
    ("billing:remove-payment-method", lambda w: [w["account"].primary_payment_method_id]),
    ("billing:prepayment", lambda w: [w["account"].account_id]),
    ("billing:dismiss-notice", lambda w: [w["account"].account_id]),
    ("billing:refund", lambda w: [w["account"].account_id]),
    ("billing:statement-pay", lambda w: [w["account"].account_id, "2026-10"]),
    ("billing:budget-create", lambda w: [w["account"].account_id]),
    ("billing:upgrade", lambda w: [w["project"].project_id]),
    ("usage:spend-cap", lambda w: [w["project"].project_id]),
]
POSTED = {
    "name": "Renamed by staff",
    "project": "new",
    "new_project_name": "Staff project",
    "language": "ja",
    "time_zone": "Asia/Tokyo",
    "full_name": "Changed",
    "amount": "5",
    "monthly_spend_cap": "1",
    "number": "4242424242424242",
    "exp_month": "12",
    "exp_year": "2099",
    "cvc": "123",
}


@pytest.mark.parametrize(("name", "args"), WRITE_URLS)
def test_every_write_is_refused_and_changes_nothing(client, support, customer_world, name, args):
    start_viewing(client, support, customer_world["user"])
    before = state(customer_world)
    response = client.post(reverse(name, args=args(customer_world)), POSTED)
    assert response.status_code == 403
    assert response.templates[0].name == "staff/view_as_refused.html"
    page = response.content.decode()
    assert "This is a read-only view" in page and "You are viewing Casey Customer" in page
    assert state(customer_world) == before
    assert [row[2] for row in audit_rows()] == ["staff.view_as"]


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_other_write_methods_are_refused_too(client, support, customer_world, method):
    start_viewing(client, support, customer_world["user"])
    assert getattr(client, method)(reverse("api-keys")).status_code == 403


def test_an_htmx_write_is_refused_with_a_message_on_the_page_it_came_from(client, support, customer_world):
    start_viewing(client, support, customer_world["user"])
    before = state(customer_world)
    key = customer_world["key"][0]
    response = client.post(
        reverse("api-key-revoke", args=[key.pk]),
        headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/api-keys/?sort=name"},
    )
    assert (response.status_code, response["HX-Redirect"]) == (403, "http://testserver/api-keys/?sort=name")
    assert state(customer_world) == before
    page = client.get(reverse("api-keys")).content.decode()
    assert "This is a read-only view of the customer&#x27;s console: nothing was changed." in page


def test_an_htmx_write_from_elsewhere_goes_back_to_the_keys(client, support, customer_world):
    start_viewing(client, support, customer_world["user"])
    response = client.post(
        reverse("api-key-create"), headers={"HX-Request": "true", "HX-Current-URL": "https://evil.example/"}
    )
    assert (response.status_code, response["HX-Redirect"]) == (403, reverse("api-keys"))


def test_the_language_switch_stays_the_staff_members_own(client, support, customer_world):
    """/language/ is not the customer's console: switching it sets the staff member's own language (as the
    staff pages around a viewing are theirs), never the customer's."""
    start_viewing(client, support, customer_world["user"])
    response = client.post(reverse("set-language"), {"language": "ja", "next": "/api-keys/"})
    assert response.status_code == 302
    support.refresh_from_db()
    customer_world["user"].refresh_from_db()
    assert (support.language, customer_world["user"].language) == ("ja", "en")
    # The staff member reads the customer's page in their own language.
    assert '<html lang="ja">' in client.get(reverse("api-keys")).content.decode()


def test_a_get_that_writes_in_normal_use_writes_nothing_while_viewing(client, support, customer_world):
    customer = customer_world["user"]
    client.force_login(customer)
    client.get(reverse("billing:setup"))  # normal use: the wizard's start makes a set-up session
    assert SetupSession.objects.filter(user=customer).count() == 1
    SetupSession.objects.all().delete()
    start_viewing(client, support, customer)
    response = client.get(reverse("billing:setup"), {"project": customer_world["project"].project_id})
    assert response.status_code == 302
    assert SetupSession.objects.count() == 0
    # The session it named was never stored: following the redirect finds nothing.
    assert client.get(response["Location"]).status_code == 404


# --- when the viewing ends by itself ---


def test_removed_from_support_mid_viewing_the_next_request_is_their_own_console(
    client, support, support_world, customer_world
):
    start_viewing(client, support, customer_world["user"])
    assert "Customer key" in client.get(reverse("api-keys")).content.decode()
    support.groups.remove(Group.objects.get(name=roles.SUPPORT))
    page = client.get(reverse("api-keys")).content.decode()
    assert "Staff-own key" in page and "Customer key" not in page and "You are viewing" not in page
    assert viewas.SESSION_KEY not in client.session
    assert audit_rows()[-1] == (
        "support@staff.example",
        ActorKind.STAFF,
        "staff.view_as_end",
        "studio.user",
        str(customer_world["user"].pk),
        {},
        {},
        viewas.LOST_PERMISSION,
    )


def test_no_longer_staff_mid_viewing_ends_it(client, support, support_world, customer_world):
    start_viewing(client, support, customer_world["user"])
    User.objects.filter(pk=support.pk).update(is_staff=False)
    page = client.get(reverse("api-keys")).content.decode()
    assert "Staff-own key" in page and "Customer key" not in page
    assert [row[2] for row in audit_rows()] == ["staff.view_as", "staff.view_as_end"]


def test_a_customer_who_became_staff_mid_viewing_ends_it(client, support, support_world, customer_world):
    start_viewing(client, support, customer_world["user"])
    User.objects.filter(pk=customer_world["user"].pk).update(is_staff=True)
    page = client.get(reverse("api-keys")).content.decode()
    assert "Staff-own key" in page and "Customer key" not in page
    assert "Your read-only view of customer@example.com&#x27;s console has ended." in page
    assert [row[7] for row in audit_rows()] == ["Case 4711: keys missing", viewas.NOT_VIEWABLE]


def test_signing_out_ends_the_viewing(client, support, customer_world):
    start_viewing(client, support, customer_world["user"])
    client.post(reverse("logout"))
    assert viewas.SESSION_KEY not in client.session


# --- on_commit hooks never fire from a viewed page ---


def _viewing_request(staff, customer, path="/api-keys/"):
    from django.contrib.sessions.backends.db import SessionStore

    request = RequestFactory().get(path)
    request.session = SessionStore()
    request.session[viewas.SESSION_KEY] = {"user_id": customer.pk}
    request.user = staff
    return request


def _writing_view(customer):
    def view(request):
        assert request.user == customer and request.viewing_as == customer
        send_mail("Hello", "body", "from@example.com", [customer.email])  # an outbox row + delivery on commit
        Project.objects.filter(pk__gt=0).update(name="Written")
        return HttpResponse("ok")

    return view


@pytest.mark.django_db(transaction=True)
def test_writes_and_on_commit_hooks_of_a_viewed_get_are_undone(support, customer_world):
    customer = customer_world["user"]
    response = viewas.ViewAsMiddleware(_writing_view(customer))(_viewing_request(support, customer))
    assert response.content == b"ok"
    assert OutboundEmail.objects.count() == 0 and mail.outbox == []
    assert list(Project.objects.values_list("name", flat=True)) == ["Customer app"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_on_postgres_a_viewed_get_commits_nothing_and_holds_no_lock(support, customer_world):
    """Real commits (no test transaction around): the rollback undoes the view's writes and row locks, so the
    customer's own request right after is not blocked by the staff member's."""
    from tests.concurrency import at_once

    customer = customer_world["user"]

    def locking_view(request):
        Project.objects.select_for_update().filter(pk=customer_world["project"].pk).update(name="Locked")
        send_mail("Hello", "body", "from@example.com", [customer.email])
        return HttpResponse("ok")

    viewas.ViewAsMiddleware(locking_view)(_viewing_request(support, customer))

    def customer_write(_index):
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '2s'")
        return Project.objects.filter(pk=customer_world["project"].pk).update(name="Customer's own change")

    results, errors = at_once(customer_write, 1)
    assert (results, errors) == ([1], [])
    assert OutboundEmail.objects.count() == 0 and mail.outbox == []
    assert list(Project.objects.values_list("name", flat=True)) == ["Customer's own change"]


# --- who may start and stop ---


@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize("who", [None, "customer", "groupless_staff", "finance"])
def test_view_as_is_404_without_the_permission(request, client, customer_world, method, who):
    if who is not None:
        client.force_login(request.getfixturevalue(who))
    url = reverse("staff:view-as", args=[customer_world["user"].pk])
    assert getattr(client, method)(url, {"reason": "x"}).status_code == 404
    assert audit_rows() == []


@pytest.mark.parametrize("who", ["support", "superuser"])
def test_view_as_is_open_to_support_and_superusers(request, client, customer_world, who):
    response = start_viewing(client, request.getfixturevalue(who), customer_world["user"])
    assert response.status_code == 302 and [row[2] for row in audit_rows()] == ["staff.view_as"]
    assert client.get(reverse("staff:view-as", args=[customer_world["user"].pk])).status_code == 405


@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize("who", [None, "customer"])
def test_stop_is_404_to_anyone_but_staff(request, client, method, who):
    if who is not None:
        client.force_login(request.getfixturevalue(who))
    assert getattr(client, method)(reverse("staff:view-as-stop")).status_code == 404


@pytest.mark.parametrize("who", ["support", "finance", "groupless_staff", "superuser"])
def test_stop_is_open_to_any_staff_member(request, client, who):
    client.force_login(request.getfixturevalue(who))
    assert client.post(reverse("staff:view-as-stop")).status_code == 302
    assert client.get(reverse("staff:view-as-stop")).status_code == 405


def test_a_finance_member_cannot_view_even_with_a_forged_session(client, finance, customer_world):
    client.force_login(finance)
    session = client.session
    session[viewas.SESSION_KEY] = {"user_id": customer_world["user"].pk}
    session.save()
    page = client.get(reverse("api-keys")).content.decode()
    assert "Customer key" not in page and "You are viewing" not in page
    assert viewas.SESSION_KEY not in client.session


def test_only_customers_are_viewable(db, customer_world, superuser):
    member = make_staff("second@staff.example", roles.SUPPORT)
    inactive = User.objects.create_user("gone@example.com", "x", is_active=False)
    assert [viewas.viewable(u) for u in (customer_world["user"], member, superuser, inactive)] == [
        True,
        False,
        False,
        False,
    ]
