"""The Django admin (R26): every model is in it, with list columns, filters and search; money, ledger and audit rows
are read-only; every edit made there is audited like any other state change (X10); its actions call the service
functions the console calls."""

from decimal import Decimal as D

import pytest
from django.apps import apps
from django.contrib import admin
from django.db import connection
from django.forms import MultiWidget
from django.test.client import RequestFactory
from django.test.utils import CaptureQueriesContext
from django_otp.models import Device

from billing import ledger
from billing.models import BillingAccount, Country, CreditKind, LedgerEntry, PaymentMethod, TierRule
from studio.admin import AuditedAdmin, ReadOnlyAdmin
from studio.models import ActorKind, AuditEvent, Membership, Project, Role, User
from tests.factories import add_member, make_account, make_card, make_key, make_project, make_staff, make_user

APPS = ("studio", "billing", "usage", "staff")
# New models of the other helpers, registered by them as they land (the lead removes each entry then).
REGISTERED_BY_OTHER_HELPERS = {
    "usage.quotaoverride": "quota increases (helper 3)",
    "usage.quotaincreaserequest": "quota increases (helper 3)",
}
# Money, ledger and audit rows: nobody adds, changes or deletes them in the admin.
READ_ONLY = [
    "studio.auditevent",
    "billing.ledgerentry",
    "billing.credit",
    "billing.usageline",
    "billing.creditexpiry",
    "billing.statement",
    "billing.statementline",
    "billing.statemententry",
    "billing.statementpayment",
    "billing.projectbilling",
    "billing.billingperiod",
    "billing.tierchange",
    "usage.usageevent",
    "usage.usagerollup",
    "usage.pendingcharge",
    "usage.quotadenial",
]


def our_models():
    return [model for label in APPS for model in apps.get_app_config(label).get_models()]


def otp_devices():
    return [model for model in apps.get_models() if issubclass(model, Device) and not model._meta.abstract]


def test_every_model_and_every_otp_device_is_in_the_admin():
    missing = {m._meta.label_lower for m in our_models() + otp_devices() if m not in admin.site._registry}
    assert missing - set(REGISTERED_BY_OTHER_HELPERS) == set()
    assert {m._meta.label_lower for m in otp_devices()} == {"otp_totp.totpdevice", "otp_static.staticdevice"}


@pytest.fixture
def root(db):
    return make_staff("root@staff.example", superuser=True)


@pytest.fixture
def admin_client(client, root):
    client.force_login(root)
    return client


def _can_write(model_admin, request) -> bool:
    """Whether a superuser can change anything through this admin: add, delete, or change an editable field, a
    list_editable column or an inline."""
    if model_admin.has_add_permission(request) or model_admin.has_delete_permission(request):
        return True
    if not model_admin.has_change_permission(request):
        return False
    editable = set(model_admin.get_fields(request)) - set(model_admin.get_readonly_fields(request))
    return bool(editable or model_admin.list_editable or model_admin.get_inline_instances(request))


def test_every_admin_that_can_write_is_audited(root):
    request = RequestFactory().get("/admin/")
    request.user = root
    unaudited = [
        model._meta.label_lower
        for model, model_admin in admin.site._registry.items()
        if model._meta.app_label in APPS
        and _can_write(model_admin, request)
        and not isinstance(model_admin, AuditedAdmin)
    ]
    assert unaudited == []


@pytest.mark.parametrize("label", READ_ONLY)
def test_money_ledger_and_audit_rows_are_read_only(root, label):
    request = RequestFactory().get("/admin/")
    request.user = root
    model_admin = admin.site._registry[apps.get_model(label)]
    assert isinstance(model_admin, ReadOnlyAdmin)
    assert (
        model_admin.has_add_permission(request),
        model_admin.has_change_permission(request),
        model_admin.has_delete_permission(request),
        model_admin.has_view_permission(request),
    ) == (False, False, False, True)


def test_posting_to_a_ledger_or_audit_row_is_refused(admin_client, owner):
    account = make_account(owner)
    ledger.grant_credit(account, kind=CreditKind.GOODWILL, amount=D("5"))
    entry = LedgerEntry.objects.get()
    event = AuditEvent.objects.filter(action="project.billing_link").first() or AuditEvent.record(
        actor=owner, action="x.y", obj=account
    )

    assert admin_client.post(f"/admin/billing/ledgerentry/{entry.pk}/change/", {"amount": "500"}).status_code == 403
    assert admin_client.post(f"/admin/billing/ledgerentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.post("/admin/billing/ledgerentry/add/", {"amount": "1"}).status_code == 403
    assert admin_client.post(f"/admin/studio/auditevent/{event.pk}/change/", {"reason": "x"}).status_code == 403
    assert admin_client.post(f"/admin/studio/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert LedgerEntry.objects.get().amount == D("5")
    assert AuditEvent.objects.get(pk=event.pk).reason == ""


# Changelists: no N+1 (the same number of queries for 1 and for 3 rows)


def _queries(client, url) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured)


def _audit_rows(n, owner, project):
    for i in range(n):
        AuditEvent.record(actor=owner, action=f"walk.{i}", obj=project)


def _key_rows(n, owner, project):
    for _ in range(n):
        make_key(project, created_by=owner)


def _membership_rows(n, owner, project):
    for _ in range(n):
        add_member(make_project(name="Other"), make_user(), Role.VIEWER)


def _method_rows(n, owner, project):
    account = BillingAccount.objects.filter(created_by=owner).first() or make_account(owner)
    for i in range(n):
        make_card(account.payments_profile, last4=f"{1000 + i}")


def _ledger_rows(n, owner, project):
    account = BillingAccount.objects.filter(created_by=owner).first() or make_account(owner)
    for _ in range(n):
        ledger.grant_credit(account, kind=CreditKind.GOODWILL, amount=D("1"))


def _account_rows(n, owner, project):
    for _ in range(n):
        make_account(make_user())


@pytest.mark.parametrize(
    ("url", "add_rows"),
    [
        ("/admin/studio/auditevent/", _audit_rows),
        ("/admin/studio/apikey/", _key_rows),
        ("/admin/studio/membership/", _membership_rows),
        ("/admin/billing/paymentmethod/", _method_rows),
        ("/admin/billing/ledgerentry/", _ledger_rows),
        ("/admin/billing/billingaccount/", _account_rows),
        ("/admin/billing/billingadministrator/", _account_rows),
    ],
)
def test_changelist_queries_do_not_grow_with_rows(admin_client, owner, url, add_rows):
    project = make_project(owner)
    add_rows(1, owner, project)
    one = _queries(admin_client, url)
    add_rows(2, owner, project)
    three = _queries(admin_client, url)
    assert one == three


# The audit log in the admin: filters by actor kind, action and object type; search by object id and actor e-mail


@pytest.fixture
def log(owner, project, root):
    return [
        AuditEvent.record(actor=owner, action="project.spend_cap", obj=project),
        AuditEvent.record(actor=root, actor_kind=ActorKind.STAFF, action="project.tier_override", obj=project),
        AuditEvent.record(actor=None, action="credit.expire", obj=owner),
    ]


def _listed(admin_client, query) -> list[str]:
    response = admin_client.get(f"/admin/studio/auditevent/?{query}")
    assert response.status_code == 200
    return sorted(event.action for event in response.context["cl"].result_list)


def test_the_audit_log_filters_by_actor_kind_action_and_object_type(admin_client, log):
    assert _listed(admin_client, "actor_kind=staff") == ["project.tier_override"]
    assert _listed(admin_client, "actor_kind=system&action=credit.expire") == ["credit.expire"]
    assert "project.spend_cap" in _listed(admin_client, "object_type=studio.project")
    assert "credit.expire" not in _listed(admin_client, "object_type=studio.project")


def test_the_audit_log_searches_by_object_id_and_actor_email(admin_client, log, owner, project):
    by_object = _listed(admin_client, f"q={project.pk}&object_type=studio.project")
    assert {"project.spend_cap", "project.tier_override"} <= set(by_object)
    assert _listed(admin_client, "q=root@staff.example") == ["project.tier_override"]


# Edits in the admin are audited (AuditedAdmin)


def _form_data(response, **changes) -> dict:
    """What the browser would post back for the admin page in `response` (its form and inlines), with `changes`."""
    data = {}

    def put(form, name):
        field, key, value = form.fields[name], form.add_prefix(name), form[name].value()
        if isinstance(field.widget, MultiWidget):
            for i, part in enumerate(field.widget.decompress(value) if value else [None, None]):
                data[f"{key}_{i}"] = "" if part is None else str(part)
        elif isinstance(value, bool):
            if value:
                data[key] = "on"
        elif value is not None:
            data[key] = value

    form = response.context["adminform"].form
    for name in form.fields:
        put(form, name)
    for inline in response.context["inline_admin_formsets"]:
        management = inline.formset.management_form
        for name in management.fields:
            data[management.add_prefix(name)] = management[name].value()
        for inline_form in inline.formset.forms:
            for name in inline_form.fields:
                put(inline_form, name)
    data.update(changes)
    return data


def _staff_rows(mark):
    return [
        (e.action, e.actor.email, e.actor_kind, e.object_type, e.object_id, e.before, e.after)
        for e in AuditEvent.objects.filter(pk__gt=mark).select_related("actor").order_by("pk")
    ]


def _mark():
    return AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def test_changing_a_country_in_the_admin_is_audited(admin_client):
    before = Country.objects.get(code="IN").prepayment_amount
    url = "/admin/billing/country/IN/change/"
    data = _form_data(admin_client.get(url), prepayment_amount="20.00")
    mark = _mark()
    response = admin_client.post(url, data)
    assert response.status_code == 302
    assert Country.objects.get(code="IN").prepayment_amount == D("20.00")
    assert _staff_rows(mark) == [
        (
            "country.admin_change",
            "root@staff.example",
            ActorKind.STAFF,
            "billing.country",
            "IN",
            {"prepayment_amount": str(before)},
            {"prepayment_amount": "20.00"},
        )
    ]


def test_saving_unchanged_in_the_admin_records_nothing(admin_client):
    url = "/admin/billing/country/US/change/"
    data = _form_data(admin_client.get(url))
    mark = _mark()
    assert admin_client.post(url, data).status_code == 302
    assert _staff_rows(mark) == []


def test_list_editable_changes_are_audited(admin_client):
    rule = TierRule.objects.get(tier="tier_2")
    url = f"/admin/billing/tierrule/{rule.pk}/change/"
    mark = _mark()
    data = _form_data(admin_client.get(url), min_total_spend="400.00")
    assert admin_client.post(url, data).status_code == 302
    assert _staff_rows(mark) == [
        (
            "tier_rule.admin_change",
            "root@staff.example",
            ActorKind.STAFF,
            "billing.tierrule",
            str(rule.pk),
            {"min_total_spend": "250.00"},
            {"min_total_spend": "400.00"},
        )
    ]


def test_a_project_and_its_memberships_changed_in_the_admin_are_audited(admin_client, project, viewer):
    url = f"/admin/studio/project/{project.pk}/change/"
    response = admin_client.get(url)
    membership = Membership.objects.get(project=project, user=viewer)
    index = [f.instance.pk for f in response.context["inline_admin_formsets"][0].formset.forms].index(membership.pk)
    data = _form_data(response, name="Renamed project", **{f"memberships-{index}-role": Role.EDITOR})
    mark = _mark()
    assert admin_client.post(url, data).status_code == 302
    assert _staff_rows(mark) == [
        (
            "project.admin_change",
            "root@staff.example",
            ActorKind.STAFF,
            "studio.project",
            str(project.pk),
            {"name": "Team project"},
            {"name": "Renamed project"},
        ),
        (
            "membership.admin_change",
            "root@staff.example",
            ActorKind.STAFF,
            "studio.membership",
            str(membership.pk),
            {"role": "viewer"},
            {"role": "editor"},
        ),
    ]


def test_adding_a_user_in_the_admin_is_audited_without_the_password(admin_client):
    mark = _mark()
    data = {"email": "added@example.com", "password1": "a-long-pass-phrase", "password2": "a-long-pass-phrase"}
    data["usable_password"] = "true"
    response = admin_client.post("/admin/studio/user/add/", data)
    assert response.status_code == 302
    user = User.objects.get(email="added@example.com")
    [row] = _staff_rows(mark)
    assert row[:5] == ("user.admin_add", "root@staff.example", ActorKind.STAFF, "studio.user", str(user.pk))
    assert "a-long-pass-phrase" not in str(row) and user.password not in str(row)
    assert row[6]["email"] == "added@example.com"


def test_changing_a_password_in_the_admin_is_audited(admin_client, owner):
    mark = _mark()
    data = {"password1": "another-pass-phrase", "password2": "another-pass-phrase", "usable_password": "true"}
    response = admin_client.post(f"/admin/studio/user/{owner.pk}/password/", data)
    assert response.status_code == 302
    assert _staff_rows(mark) == [
        ("user.admin_password", "root@staff.example", ActorKind.STAFF, "studio.user", str(owner.pk), {}, {})
    ]


def test_granting_staff_rights_in_the_admin_is_audited(admin_client, owner):
    url = f"/admin/studio/user/{owner.pk}/change/"
    data = _form_data(admin_client.get(url), is_staff="on")
    mark = _mark()
    assert admin_client.post(url, data).status_code == 302
    assert [(row[0], row[5], row[6]) for row in _staff_rows(mark)] == [
        ("user.admin_change", {"is_staff": False}, {"is_staff": True})
    ]


def test_deleting_in_the_admin_is_audited(admin_client):
    rule = TierRule.objects.get(tier="tier_3")
    mark = _mark()
    response = admin_client.post(f"/admin/billing/tierrule/{rule.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not TierRule.objects.filter(tier="tier_3").exists()
    assert [row[:5] for row in _staff_rows(mark)] == [
        ("tier_rule.admin_delete", "root@staff.example", ActorKind.STAFF, "billing.tierrule", str(rule.pk))
    ]


def test_a_billing_accounts_status_is_not_a_field_in_the_admin(admin_client, owner):
    account = make_account(owner)
    html = admin_client.get(f"/admin/billing/billingaccount/{account.pk}/change/").content.decode()
    assert 'name="status"' not in html
    assert 'name="prepayment_flagged"' not in html
    assert 'name="display_name"' in html


# Admin actions call the console's service functions (one audit shape for both)


def test_requiring_the_prepayment_in_the_admin_calls_the_service(admin_client, owner, project):
    account = make_account(owner, projects=[project])
    mark = _mark()
    response = admin_client.post(
        "/admin/billing/billingaccount/", {"action": "require_prepayment", "_selected_action": [account.pk]}
    )
    assert response.status_code == 302
    account.refresh_from_db()
    assert (account.prepayment_flagged, account.prepayment_status) == (True, "required")
    rows = AuditEvent.objects.filter(pk__gt=mark).order_by("pk")
    assert [(e.action, e.actor_kind, e.object_type, e.reason) for e in rows] == [
        ("billing_account.require_prepayment", ActorKind.STAFF, "billing.billingaccount", "Decided in the admin"),
        ("project.tier", ActorKind.USER, "studio.project", "Prepayment required"),
    ]


def test_revoking_a_fleet_token_in_the_admin_calls_the_model_method(admin_client):
    from usage.models import FleetToken

    token, _ = FleetToken.issue(name="fleet")
    mark = _mark()
    for _ in range(2):  # the second time changes nothing
        admin_client.post("/admin/usage/fleettoken/", {"action": "revoke", "_selected_action": [token.pk]})
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert [row[:5] for row in _staff_rows(mark)] == [
        ("fleet_token.revoke", "root@staff.example", ActorKind.STAFF, "usage.fleettoken", str(token.pk))
    ]


def test_every_admin_page_of_our_models_loads(admin_client, owner, project, key):
    make_account(owner, projects=[project])
    make_card(PaymentMethod.objects.first().profile, last4="1111")
    failures = []
    for model in our_models():
        if model not in admin.site._registry:
            continue
        url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        status = admin_client.get(url).status_code
        if status != 200:
            failures.append((url, status))
    assert failures == []
    assert Project.objects.exists()
