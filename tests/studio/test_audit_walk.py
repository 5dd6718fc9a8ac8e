"""The audit walk (X10, SPEC §10): every state-changing view and every periodic job writes audit rows.

The project's URL patterns are enumerated (django.urls.get_resolver, recursively) and every view that accepts POST,
PUT, PATCH or DELETE, or that changes state on GET (GET_STATE_CHANGES), must have a scenario here (`@covers`) or a
documented exemption (EXEMPT_VIEWS, EXCLUDED_PREFIXES); likewise every job the apps register with huey (`@covers_job`,
EXEMPT_JOBS). A new POST view or job without one fails `test_every_state_changing_view_is_walked` or
`test_every_job_is_walked`. Each scenario makes a valid change through the test client (or runs the job) and asserts
the exact new audit rows: action, actor, actor kind, object type and id (and reason, before and after where given).
"""

import functools
import inspect
import json
import uuid
from datetime import datetime, timedelta
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.contrib.auth.tokens import default_token_generator
from django.core.mail import send_mail
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice
from huey.contrib.djhuey import HUEY
from ninja.operation import PathView

from billing import ledger
from billing.goodwill import request_goodwill
from billing.models import (
    BillingAccount,
    Budget,
    Credit,
    CreditKind,
    GoodwillGrant,
    GoodwillReason,
    PaymentMethod,
    PaymentsProfile,
    Prepayment,
    PromoCode,
    RefundRequest,
    RefundStatus,
    SetupSession,
    Statement,
)
from billing.payments import pay_prepayment
from billing.promotions import create_code
from billing.services import start_setup
from billing.statements import charge_due, issue_statement
from staff import roles
from studio import signup
from studio.models import ActorKind, ApiKey, AuditEvent, OutboundEmail, Project, Role, User
from tests.factories import (
    add_member,
    approved_code,
    make_account,
    make_card,
    make_key,
    make_profile,
    make_project,
    make_staff,
    make_user,
)
from tests.staff.finance import refund_of
from tests.usage.test_dunning import statement_line
from usage.models import FleetToken, PendingCharge, QuotaIncreaseRequest, QuotaOverride
from usage.quotas import request_increase

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")

# Whole areas this walk leaves to others, by URL name prefix (namespace), each with why.
EXCLUDED_PREFIXES = {
    "admin:": "the Django admin: its generic add/change/delete is audited by studio.admin.AuditedAdmin (every "
    "editable ModelAdmin must be one: tests/studio/test_admin_coverage.py), money, ledger and audit rows are "
    "read-only there, and its actions call the service functions the console calls (their own audit rows)",
}
# Single views that change nothing anybody needs to answer for, each with why.
EXEMPT_VIEWS = {
    "login": "signing in changes only the session (and last_login); django-axes records failed attempts",
    "logout": "signing out changes only the session",
    "signup": "step one of sign-up only e-mails a link (its outbox row is the record); no account exists yet, and "
    "a row per address would tell who has an account",
    "password_reset": "only e-mails a reset link (its outbox row is the record); changing the password is audited "
    "(password_reset_confirm)",
    "fleet-api:quota_check": "admission: the hottest path of the fleet, no database write; its counters live in "
    "the limiter (Redis) and its denials reach QuotaDenial through the flush_denials job",
}
# Views that change state on GET (a real URL for each wizard step: the state lives on the server).
GET_STATE_CHANGES = {
    "billing:setup": "starts (or resumes) the set-up and records the project it was started from",
    "billing:setup-details": "pre-fills the payment method from the payments profile (R8)",
}
EXEMPT_JOBS = {
    "usage.jobs.sync_admission": "rebuilds the admission store, a Redis copy of rows whose every change is audited "
    "where it is made; it decides nothing",
    "usage.jobs.flush_key_use": "moves the keys' last use from Redis to ApiKey.last_used_at, as quota:check's own "
    "mark_used does: a fact of the fleet's traffic, nobody's decision",
    "usage.jobs.ensure_usage_partitions": "creates empty monthly partitions of raw usage events ahead of time: schema "
    "upkeep that changes no row",
    "usage.jobs.flush_denials": "moves quota:check's denial counts from the limiter to QuotaDenial: the fleet's own "
    "append-only counts, nobody's decision (like usage events, which usage:report audits per batch)",
    "studio.jobs.deliver_outbox_now": "the deliver_outbox sweep, queued after a commit: same command, same audit",
    "usage.jobs.charge_usage_later": "the charge_usage job, again within the minute: same command, same audit",
}
# Why the fleet's usage events get one audit row per usage:report call and not one per event: at 20,000 events a
# second an audit row each would double the hot table's writes; the events are an append-only record of their own
# (unique event_id, received_at, the account billed), and their money is audited when charged (usage.charge, one
# row per account charge, never per event).
FLEET_REPORT_AUDIT = "one usage.report row per call that stored new events (accepted, duplicates, rejected)"

VIEW_SCENARIOS: dict[str, str] = {}
JOB_SCENARIOS: dict[str, str] = {}


def covers(*names):
    def register(test):
        for name in names:
            VIEW_SCENARIOS[name] = test.__name__
        return test

    return register


def covers_job(*names):
    def register(test):
        for name in names:
            JOB_SCENARIOS[name] = test.__name__
        return test

    return register


# Enumeration


def _patterns(patterns, prefix="", namespace=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            yield from _patterns(pattern.url_patterns, prefix + str(pattern.pattern), inner)
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), f"{namespace}{pattern.name or ''}", pattern.callback


def accepts_writes(callback) -> bool:
    """Whether a view answers POST, PUT, PATCH or DELETE: a class-based view's handlers, a django-ninja
    operation's methods, else the function view's source (its decorators and its `request.method` checks)."""
    view_class = getattr(callback, "view_class", None)
    if view_class is not None:
        return any(m.lower() in view_class.http_method_names and hasattr(view_class, m.lower()) for m in WRITE_METHODS)
    for cell in getattr(callback, "__closure__", None) or ():
        if isinstance(cell.cell_contents, PathView):
            return any(set(op.methods) & set(WRITE_METHODS) for op in cell.cell_contents.operations)
    if isinstance(callback, functools.partial):  # django-ninja's OpenAPI document and root
        return False
    source = inspect.getsource(inspect.unwrap(callback))
    return any(method in source for method in WRITE_METHODS)


def state_changing_views() -> set[str]:
    names = set()
    for route, name, callback in _patterns(get_resolver().url_patterns):
        assert name, f"{route}: every URL pattern has a name"
        if any(name.startswith(prefix) for prefix in EXCLUDED_PREFIXES):
            continue
        if accepts_writes(callback) or name in GET_STATE_CHANGES:
            names.add(name)
    return names


def registered_jobs() -> set[str]:
    return set(HUEY._registry._registry)


def test_every_state_changing_view_is_walked():
    documented = set(VIEW_SCENARIOS) | set(EXEMPT_VIEWS)
    assert state_changing_views() == documented
    assert not set(VIEW_SCENARIOS) & set(EXEMPT_VIEWS)


def test_every_job_is_walked():
    periodic = {f"{task.__module__}.{task.__name__}" for task in HUEY._registry._periodic_tasks}
    assert periodic - set(EXEMPT_JOBS) == set(JOB_SCENARIOS)  # every scenario is of a periodic job
    assert registered_jobs() == set(JOB_SCENARIOS) | set(EXEMPT_JOBS)
    assert not set(JOB_SCENARIOS) & set(EXEMPT_JOBS)


def test_the_enumeration_sees_what_it_must():
    """The detection itself: a POST-only view, a GET-and-POST view, a class-based one, a ninja operation, a GET view;
    through staff_view's decorator too (the staff console's lists and pages only read: require_GET, or no method
    check and no write)."""
    views = {name: callback for _, name, callback in _patterns(get_resolver().url_patterns)}
    writes = ("set-language", "settings", "logout", "fleet-api:usage_report", "staff:view-as", "staff:refund-decide")
    assert all(accepts_writes(views[name]) for name in writes)
    reads = ("api-keys", "healthz", "password_reset_done", "usage:limits", "staff:home", "staff:refunds")
    assert not any(accepts_writes(views[name]) for name in (*reads, "staff:promotions", "staff:audit"))


# Helpers


def audit_mark() -> int:
    return AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def rows_since(mark: int) -> list[tuple]:
    """(action, actor e-mail, actor kind, object type, object id) of every audit row written since `mark`."""
    events = AuditEvent.objects.filter(pk__gt=mark).select_related("actor").order_by("pk")
    return [(e.action, e.actor.email if e.actor else None, e.actor_kind, e.object_type, e.object_id) for e in events]


def events_since(mark: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(pk__gt=mark).order_by("pk"))


def ref(obj) -> tuple[str, str]:
    return obj._meta.label_lower, str(obj.pk)


USER, STAFF, SYSTEM, FLEET = ActorKind.USER, ActorKind.STAFF, ActorKind.SYSTEM, ActorKind.FLEET
OWNER = "owner@example.com"
CONTACT = {
    "profile_type": "individual",
    "name": "Ada Lovelace",
    "address_line1": "1 Main Street",
    "city": "San Francisco",
    "postal_code": "94105",
    "country": "US",
    "email": "ada@example.com",
    "phone": "+1 650 555 0100",
}
CARD = {"number": "4242 4242 4242 4242", "exp_month": "12", "exp_year": str(timezone.now().year + 2), "cvc": "123"}
LA = ZoneInfo("America/Los_Angeles")


@pytest.fixture
def paid(owner):
    """The owner's Tier 1 project with a key, linked to their billing account (a card, no prepayment due)."""
    project = make_project(owner, name="Paid app")
    key = make_key(project, name="Paid key", created_by=owner)[0]
    account = make_account(owner, name="Main billing", projects=[project])
    project.refresh_from_db()
    return {"project": project, "key": key, "account": account}


# Staff personas (as tests/staff/conftest.py's)
SUPPORT, FINANCE, FINANCE2 = "support@staff.example", "finance@staff.example", "finance2@staff.example"
FLASH = "gemini-2.5-flash"


@pytest.fixture
def support(db, settings):
    settings.STAFF_REQUIRE_2FA = False  # the second factor has its own scenario
    return make_staff(SUPPORT, roles.SUPPORT)


@pytest.fixture
def finance(db, settings):
    settings.STAFF_REQUIRE_2FA = False
    return make_staff(FINANCE, roles.FINANCE)


@pytest.fixture
def finance2(db):
    return make_staff(FINANCE2, roles.FINANCE)


# The developer console: keys, projects, settings, sign-up


@covers("api-key-create")
def test_walk_api_key_create(client_for, owner, project):
    mark = audit_mark()
    client_for(owner).post("/api-keys/create/", {"name": "CI", "project": project.project_id})
    key = ApiKey.objects.get(name="CI")
    assert rows_since(mark) == [("api_key.create", OWNER, USER, *ref(key))]
    assert events_since(mark)[0].after == {"name": "CI"}


@covers("api-key-rename")
def test_walk_api_key_rename(client_for, owner, key):
    mark = audit_mark()
    client_for(owner).post(f"/api-keys/{key.pk}/rename/", {"name": "Renamed"})
    assert rows_since(mark) == [("api_key.rename", OWNER, USER, *ref(key))]
    assert (events_since(mark)[0].before, events_since(mark)[0].after) == ({"name": "Team key"}, {"name": "Renamed"})


@covers("api-key-revoke")
def test_walk_api_key_revoke(client_for, editor, key):
    mark = audit_mark()
    client_for(editor).post(f"/api-keys/{key.pk}/revoke/")
    assert rows_since(mark) == [("api_key.revoke", "editor@example.com", USER, *ref(key))]


@covers("project-import")
def test_walk_project_import(client_for, owner):
    cloud = make_project(name="Cloud only")
    add_member(cloud, owner, Role.OWNER, imported=False)
    mark = audit_mark()
    client_for(owner).post("/projects/import/", {"projects": [cloud.project_id]})
    assert rows_since(mark) == [("project.import", OWNER, USER, *ref(cloud))]


@covers("settings")
def test_walk_settings(client_for, owner, paid):
    key = paid["key"]
    mark = audit_mark()
    data = {"full_name": "Ada", "language": "ja", "time_zone": "Asia/Tokyo", "studio_api_key": key.pk}
    response = client_for(owner).post("/settings/", data)
    assert response.status_code == 302
    assert rows_since(mark) == [
        ("user.settings", OWNER, USER, *ref(owner)),
        ("studio_key.link", OWNER, USER, *ref(owner)),
    ]
    settings_row, link_row = events_since(mark)
    assert (settings_row.before, settings_row.after) == (
        {"full_name": "", "language": "en", "time_zone": ""},
        {"full_name": "Ada", "language": "ja", "time_zone": "Asia/Tokyo"},
    )
    assert link_row.after == {"key_id": key.pk, "key_prefix": key.prefix}


def test_walk_settings_saved_unchanged_records_nothing(client_for, owner):
    client = client_for(owner)
    client.post("/settings/", {"full_name": "Ada", "language": "en", "time_zone": "", "studio_api_key": ""})
    mark = audit_mark()
    client.post("/settings/", {"full_name": "Ada", "language": "en", "time_zone": "", "studio_api_key": ""})
    assert rows_since(mark) == []


@covers("set-language")
def test_walk_set_language(client_for, owner):
    mark = audit_mark()
    client_for(owner).post("/language/", {"language": "ja", "next": "/api-keys/"})
    assert rows_since(mark) == [("user.settings", OWNER, USER, *ref(owner))]
    assert (events_since(mark)[0].before, events_since(mark)[0].after) == ({"language": "en"}, {"language": "ja"})


def test_walk_set_language_signed_out_is_a_cookie_only(client, db):
    mark = audit_mark()
    response = client.post("/language/", {"language": "ja", "next": "/"})
    assert (response.cookies["django_language"].value, rows_since(mark)) == ("ja", [])


@covers("signup-confirm")
def test_walk_signup_confirm(client, db):
    token = signup.make_token(email="new@example.com", language="en")
    mark = audit_mark()
    password = {"new_password1": "a-long-pass-phrase", "new_password2": "a-long-pass-phrase"}
    client.post(f"/accounts/signup/confirm/{token}/", password)
    user = User.objects.get(email="new@example.com")
    project, key = Project.objects.get(memberships__user=user), ApiKey.objects.get(created_by=user)
    assert rows_since(mark) == [
        ("user.signup", "new@example.com", USER, *ref(user)),
        ("project.create", "new@example.com", USER, *ref(project)),
        ("api_key.create", "new@example.com", USER, *ref(key)),
    ]
    assert events_since(mark)[0].after == {"email": "new@example.com", "terms_accepted": True}


@covers("password_reset_confirm")
def test_walk_password_reset_confirm(client, owner):
    uid, token = urlsafe_base64_encode(force_bytes(owner.pk)), default_token_generator.make_token(owner)
    form_url = client.get(f"/accounts/reset/{uid}/{token}/")["Location"]  # Django keeps the token in the session
    mark = audit_mark()
    response = client.post(form_url, {"new_password1": "a-new-pass-phrase", "new_password2": "a-new-pass-phrase"})
    assert response["Location"] == "/accounts/reset/done/"
    owner.refresh_from_db()
    assert owner.check_password("a-new-pass-phrase")
    assert rows_since(mark) == [("user.password_reset", OWNER, USER, *ref(owner))]
    assert (events_since(mark)[0].before, events_since(mark)[0].after) == ({}, {})  # never the password or its hash


# The set-up wizard (every step is a real URL; its state is a SetupSession)


def _session(owner) -> SetupSession:
    return SetupSession.objects.get(user=owner, finished_at__isnull=True)


@covers("billing:setup")
def test_walk_setup_start(client_for, owner, project, key):
    mark = audit_mark()
    client_for(owner).get(f"/billing/setup/?project={project.project_id}")
    session = _session(owner)
    assert rows_since(mark) == [
        ("setup.start", OWNER, USER, *ref(session)),
        ("setup.project", OWNER, USER, *ref(session)),
    ]
    assert [e.after for e in events_since(mark)] == [
        {"flow": "new"},
        {"project": project.project_id, "api_key": key.pk},
    ]


@covers("billing:setup-project")
def test_walk_setup_project(client_for, owner, project, key):
    session = start_setup(owner)
    mark = audit_mark()
    client_for(owner).post(f"/billing/setup/{session.pk}/project/", {"project": project.project_id, "api_key": key.pk})
    assert rows_since(mark) == [("setup.project", OWNER, USER, *ref(session))]


@covers("billing:setup-account")
def test_walk_setup_account_country_and_terms(client_for, owner, project):
    session = start_setup(owner, project=project)
    mark = audit_mark()
    client_for(owner).post(f"/billing/setup/{session.pk}/account/", {"country": "US", "accept_terms": "on"})
    assert rows_since(mark) == [("setup.country", OWNER, USER, *ref(session))]
    assert events_since(mark)[0].after == {"country": "US", "terms_accepted": True}


def test_walk_setup_account_existing_account_finishes(client_for, owner, project, paid):
    session = start_setup(owner, project=project)
    mark = audit_mark()
    client_for(owner).post(f"/billing/setup/{session.pk}/account/", {"account": paid["account"].account_id})
    assert rows_since(mark) == [
        ("setup.account", OWNER, USER, *ref(session)),
        ("project.billing_link", OWNER, USER, *ref(project)),
        ("project.tier", OWNER, USER, *ref(project)),
        ("setup.finish", OWNER, USER, *ref(session)),
    ]


@covers("billing:setup-contact")
def test_walk_setup_contact(client_for, owner, project):
    session = start_setup(owner, project=project)
    mark = audit_mark()
    client_for(owner).post(f"/billing/setup/{session.pk}/contact/", CONTACT)
    profile = PaymentsProfile.objects.get(owner=owner)
    assert rows_since(mark) == [("payments_profile.create", OWNER, USER, *ref(profile))]


@covers("billing:setup-payment-method")
def test_walk_setup_payment_method(client_for, owner, project):
    session = start_setup(owner, project=project)
    make_profile(owner)
    mark = audit_mark()
    client_for(owner).post(f"/billing/setup/{session.pk}/payment-method/", CARD)
    method = PaymentMethod.objects.get(profile__owner=owner)
    assert rows_since(mark) == [
        ("payment_method.add", OWNER, USER, *ref(method)),
        ("setup.payment_method", OWNER, USER, *ref(session)),
    ]
    assert events_since(mark)[0].after == {"brand": "visa", "last4": "4242"}


@covers("billing:setup-details")
def test_walk_setup_details_prefills_the_payment_method(client_for, owner, project):
    session = start_setup(owner, project=project)
    session.choose_country(session.country or _us())
    method = make_card(make_profile(owner))
    mark = audit_mark()
    response = client_for(owner).get(f"/billing/setup/{session.pk}/details/")
    assert response.status_code == 200
    assert rows_since(mark) == [("setup.payment_method", OWNER, USER, *ref(session))]
    assert events_since(mark)[0].after == {"payment_method": method.pk}


def _us():
    from billing.models import Country

    return Country.objects.get(code="US")


@covers("billing:setup-finish")
def test_walk_setup_finish(client_for, owner, project):
    session = start_setup(owner, project=project)
    session.choose_country(_us())
    session.choose_payment_method(make_card(make_profile(owner)))
    mark = audit_mark()
    client_for(owner).post(f"/billing/setup/{session.pk}/finish/")
    account, credit = BillingAccount.objects.get(created_by=owner), Credit.objects.get(welcome_for=owner)
    assert rows_since(mark) == [
        ("billing_account.create", OWNER, USER, *ref(account)),
        ("credit.grant", OWNER, USER, *ref(credit)),
        ("project.billing_link", OWNER, USER, *ref(project)),
        ("project.tier", OWNER, USER, *ref(project)),
        ("setup.finish", OWNER, USER, *ref(session)),
    ]
    grant, finish = events_since(mark)[1], events_since(mark)[-1]
    assert (grant.after["kind"], grant.after["amount"]) == (CreditKind.WELCOME, "300.000000")
    assert finish.after == {"account": account.account_id, "welcome_credit": True}


# The billing page


@covers("billing:unlink")
def test_walk_unlink(client_for, owner, paid):
    project, account = paid["project"], paid["account"]
    mark = audit_mark()
    client_for(owner).post(f"/billing/accounts/{account.account_id}/projects/{project.project_id}/unlink/")
    assert rows_since(mark) == [
        ("project.billing_unlink", OWNER, USER, *ref(project)),
        ("project.tier", OWNER, USER, *ref(project)),
    ]
    assert (events_since(mark)[1].after, events_since(mark)[1].reason) == (
        {"tier": "free", "billing_state": "none"},
        "Billing account unlinked",
    )


@covers("billing:move")
def test_walk_move(client_for, owner, paid):
    project, source = paid["project"], paid["account"]
    target = make_account(owner, name="Second billing")
    mark = audit_mark()
    url = f"/billing/accounts/{source.account_id}/projects/{project.project_id}/move/"
    client_for(owner).post(url, {"account": target.account_id})
    assert rows_since(mark) == [("project.billing_link", OWNER, USER, *ref(project))]  # same tier: no tier row
    assert events_since(mark)[0].after == {"account": target.account_id}


@covers("billing:make-primary")
def test_walk_make_primary(client_for, owner, paid):
    account = paid["account"]
    second = make_card(account.payments_profile, last4="1881")
    mark = audit_mark()
    client_for(owner).post(f"/billing/accounts/{account.account_id}/payment-methods/{second.pk}/primary/")
    assert rows_since(mark) == [("billing_account.primary_payment_method", OWNER, USER, *ref(account))]
    assert events_since(mark)[0].after == {"id": second.pk}


@covers("billing:add-payment-method")
def test_walk_add_payment_method(client_for, owner, paid):
    mark = audit_mark()
    client_for(owner).post("/billing/payment-methods/add/", {**CARD, "number": "5555 5555 5555 4444"})
    method = PaymentMethod.objects.get(last4="4444")
    assert rows_since(mark) == [("payment_method.add", OWNER, USER, *ref(method))]


@covers("billing:remove-payment-method")
def test_walk_remove_payment_method(client_for, owner, paid):
    spare = make_card(paid["account"].payments_profile, last4="1881")
    mark = audit_mark()
    client_for(owner).post(f"/billing/payment-methods/{spare.pk}/remove/")
    assert rows_since(mark) == [("payment_method.remove", OWNER, USER, *ref(spare))]


@covers("billing:upgrade")
def test_walk_upgrade(client_for, owner, paid):
    project, account = paid["project"], paid["account"]
    ledger.record_usage_charge(account, amount=D("300"), description="usage", idempotency_key="walk-spend")
    ledger.record_payment(account, amount=D("300"), description="Statement paid", idempotency_key="walk-paid")
    with time_machine.travel(timezone.now() + timedelta(days=31)):
        mark = audit_mark()
        client_for(owner).post(f"/billing/projects/{project.project_id}/upgrade/")
    assert rows_since(mark) == [("project.tier", OWNER, USER, *ref(project))]
    assert (events_since(mark)[0].after, events_since(mark)[0].reason) == (
        {"tier": "tier_2", "billing_state": "active"},
        "Upgrade requested",
    )


@covers("usage:spend-cap")
def test_walk_spend_cap(client_for, editor, project):
    mark = audit_mark()
    client_for(editor).post(f"/usage/projects/{project.project_id}/spend-cap/", {"amount": "25"})
    assert rows_since(mark) == [("project.spend_cap", "editor@example.com", USER, *ref(project))]
    assert events_since(mark)[0].after == {"monthly_spend_cap": "25.00"}


@covers("billing:budget-create", "billing:budget-edit", "billing:budget-delete")
def test_walk_budgets(client_for, owner, paid):
    account, client = paid["account"], client_for(owner)
    base = f"/billing/accounts/{account.account_id}/budgets/"
    mark = audit_mark()
    client.post(f"{base}new/", {"project": "", "amount": "5", "actual": "50"})
    budget = Budget.objects.get(account=account)
    client.post(f"{base}{budget.pk}/", {"project": "", "amount": "8", "actual": "50"})
    client.post(f"{base}{budget.pk}/delete/")
    assert rows_since(mark) == [
        ("budget.create", OWNER, USER, *ref(budget)),
        ("budget.update", OWNER, USER, *ref(budget)),
        ("budget.delete", OWNER, USER, *ref(budget)),
    ]
    assert not Budget.objects.exists()


# The one-time prepayment, the notice, refunds, paying a statement


@pytest.fixture
def due(owner, project):
    """The project's billing account, its one-time prepayment (USD 10) due."""
    account = make_account(owner, name="India billing", country="IN", prepayment_due=True, projects=[project])
    return account


@covers("billing:prepayment")
def test_walk_prepayment(client_for, owner, project, due):
    attempt = uuid.uuid4()
    data = {"attempt": str(attempt), "amount": "10.00", "method": str(due.primary_payment_method.pk)}
    mark = audit_mark()
    client_for(owner).post(f"/billing/accounts/{due.account_id}/prepayment/", data)
    prepayment = Prepayment.objects.get(pk=attempt)
    assert rows_since(mark) == [
        ("prepayment.start", OWNER, USER, *ref(prepayment)),
        ("prepayment.settle", None, SYSTEM, *ref(prepayment)),  # the processor's answer settles it
        ("project.tier", OWNER, USER, *ref(project)),
    ]
    assert events_since(mark)[1].after == {"status": "succeeded", "failure": ""}


@covers("billing:dismiss-notice")
def test_walk_dismiss_notice(client_for, owner, due):
    client = client_for(owner)
    mark = audit_mark()
    client.post(f"/billing/accounts/{due.account_id}/notice/dismiss/", {"next": "/api-keys/"})
    client.post(f"/billing/accounts/{due.account_id}/notice/dismiss/", {"next": "/api-keys/"})  # once is enough
    assert rows_since(mark) == [("billing_account.dismiss_notice", OWNER, USER, *ref(due))]


@covers("billing:refund")
def test_walk_refund(client_for, owner, paid):
    account = paid["account"]
    ledger.grant_credit(account, kind=CreditKind.PREPAYMENT, amount=D("30"), source="One-time prepayment")
    mark = audit_mark()
    client_for(owner).post(f"/billing/accounts/{account.account_id}/refund/", {"amount": "20", "reason": "Ended"})
    refund = RefundRequest.objects.get(account=account)
    assert rows_since(mark) == [("refund.request", OWNER, USER, *ref(refund))]
    assert events_since(mark)[0].after == {"amount": "20"}


OCTOBER = datetime(2026, 10, 1).date()
T0 = datetime(2026, 11, 2, 0, 35, tzinfo=LA)


def _october_usage(owner, project) -> BillingAccount:
    with time_machine.travel(datetime(2026, 9, 30, tzinfo=LA), tick=False):
        account = make_account(owner, name="Team billing", projects=[project])
    with time_machine.travel(datetime(2026, 10, 20, tzinfo=LA), tick=False):
        ledger.record_usage(account, month=OCTOBER, lines=[statement_line(project, "15")])
    return account


def _declined(account):
    from billing.models import TestProcessorToken

    token = TestProcessorToken.objects.create(token=f"tok_test_{uuid.uuid4().hex[:12]}", behaviour="card_declined")
    method = account.primary_payment_method
    method.processor_token = token.token
    method.save(update_fields=["processor_token"])


@covers("billing:statement-pay")
def test_walk_statement_pay(client_for, owner, project):
    account = _october_usage(owner, project)
    with time_machine.travel(datetime(2026, 11, 1, 0, 5, tzinfo=LA), tick=False):
        statement, _ = issue_statement(account, OCTOBER)
    _declined(account)
    with time_machine.travel(T0, tick=False):
        charge_due()
    mark = audit_mark()
    form = {"attempt": str(uuid.uuid4()), "method": "new_card", **CARD, "make_primary": "on"}
    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        client_for(owner).post(f"/billing/accounts/{account.account_id}/statements/2026-10/pay/", form)
    payment, card = (
        statement.payments.get(created_by=owner),
        PaymentMethod.objects.get(last4="4242", exp_year=int(CARD["exp_year"])),
    )
    assert rows_since(mark) == [
        ("payment_method.add", OWNER, USER, *ref(card)),
        ("statement.payment.start", OWNER, USER, *ref(payment)),
        ("statement.payment.settle", OWNER, USER, *ref(payment)),
        ("billing_account.primary_payment_method", OWNER, USER, *ref(account)),
    ]


# The fleet API


@covers("fleet-api:usage_report")
def test_walk_usage_report(client, paid):
    token, raw = FleetToken.issue(name="walk fleet")
    event = {
        "event_id": "walk-1",
        "key_id": str(paid["key"].pk),
        "model": "gemini-2.5-flash",
        "kind": "generate",
        "status_code": 200,
        "input_tokens": 1000,
        "output_tokens": 100,
        "occurred_at": timezone.now().isoformat(),
    }
    headers = {"Authorization": f"Bearer {raw}"}
    mark = audit_mark()
    for _ in range(2):  # the replay stores nothing new, so it records nothing
        response = client.post(
            "/api/v1/usage:report", json.dumps({"events": [event]}), content_type="application/json", headers=headers
        )
        assert response.status_code == 200
    assert rows_since(mark) == [("usage.report", None, FLEET, *ref(token))]
    assert events_since(mark)[0].after == {"accepted": 1, "duplicates": 0, "rejected": 0}


# Promotional codes and quota increases (the customer's side)


@covers("billing:redeem-code")
def test_walk_redeem_code(client_for, owner, paid, finance):
    account = paid["account"]
    promo = approved_code(
        code="WALK-2026",
        amount=D("40"),
        redeem_by=timezone.now() + timedelta(days=30),
        credit_valid_days=60,
        max_redemptions=5,
        by=finance,
    )
    mark = audit_mark()
    client_for(owner).post(f"/billing/accounts/{account.account_id}/redeem-code/", {"code": "walk-2026"})
    credit = Credit.objects.get(account=account, kind=CreditKind.PROMOTIONAL)
    assert rows_since(mark) == [("promo_code.redeem", OWNER, USER, *ref(account))]
    after = events_since(mark)[0].after
    assert (after["code"], after["amount"], after["credit"], after["times_redeemed"]) == (
        promo.code,
        "40.00",
        credit.pk,
        1,
    )


@covers("usage:quota-request")
def test_walk_quota_request(client_for, owner, paid):
    project = paid["project"]
    data = {"model": FLASH, "metric": "rpm", "value": "1000000", "reason": "Launch traffic"}
    mark = audit_mark()
    client_for(owner).post(f"/usage/projects/{project.project_id}/quota-request/", data)
    ask = QuotaIncreaseRequest.objects.get(project=project)
    assert rows_since(mark) == [("quota_request.create", OWNER, USER, *ref(ask))]
    event = events_since(mark)[0]
    assert (event.after, event.reason) == (
        {"model": FLASH, "metric": "rpm", "current": ask.current_limit, "requested": 1_000_000},
        "Launch traffic",
    )


# The staff console (/staff/): every decision is a staff action with a reason


def reasons_since(mark: int) -> list[str]:
    return [event.reason for event in events_since(mark)]


@covers("staff:view-as", "staff:view-as-stop")
def test_walk_view_as(client_for, owner, support):
    client = client_for(support)
    mark = audit_mark()
    client.post(f"/staff/customers/{owner.pk}/view-as/", {"reason": "Case 4711: keys missing"})
    client.post("/staff/view-as/stop/")
    assert rows_since(mark) == [
        ("staff.view_as", SUPPORT, STAFF, *ref(owner)),
        ("staff.view_as_end", SUPPORT, STAFF, *ref(owner)),
    ]
    assert reasons_since(mark) == ["Case 4711: keys missing", ""]


@covers("staff:refund-decide")
def test_walk_refund_decide_two_person_rule(client_for, finance, finance2):
    refund = refund_of("150")  # above the threshold (USD 100): two Finance members approve
    url = f"/staff/refunds/{refund.pk}/"
    mark = audit_mark()
    client_for(finance).post(url, {"decision": "approve", "reason": "Looks right"})
    client_for(finance2).post(url, {"decision": "approve", "reason": "Agreed"})
    refund.refresh_from_db()
    assert refund.status == RefundStatus.REFUNDED
    assert rows_since(mark) == [
        ("refund.first_approval", FINANCE, STAFF, *ref(refund)),
        ("refund.approve", FINANCE2, STAFF, *ref(refund)),
    ]
    first, second = events_since(mark)
    assert (first.after, first.reason) == ({"first_approved_by": FINANCE}, "Looks right")
    assert (second.before, second.after, second.reason) == ({"status": "pending"}, {"status": "refunded"}, "Agreed")


def test_walk_refund_decide_reject(client_for, finance):
    refund = refund_of("20")
    mark = audit_mark()
    client_for(finance).post(f"/staff/refunds/{refund.pk}/", {"decision": "reject", "reason": "Credit was a promo"})
    assert rows_since(mark) == [("refund.reject", FINANCE, STAFF, *ref(refund))]
    assert (events_since(mark)[0].after, events_since(mark)[0].reason) == ({"status": "rejected"}, "Credit was a promo")


@covers("staff:transfer-decide")
def test_walk_transfer_decide(client_for, finance):
    customer = make_user("payer@example.com")
    project = make_project(customer, name="Transfer app")
    account = make_account(customer, prepayment_due=True, projects=[project])
    attempt = pay_prepayment(
        account, attempt_id=uuid.uuid4(), amount=D("10"), bank_transfer=True, payment_method=None, by=customer
    )
    assert attempt.status == "pending"
    mark = audit_mark()
    client_for(finance).post(f"/staff/transfers/{attempt.pk}/", {"decision": "received", "reason": "On the statement"})
    assert rows_since(mark) == [
        ("prepayment.settle", FINANCE, STAFF, *ref(attempt)),
        # R14: the projects move up as for a card payment, on behalf of the customer who paid
        ("project.tier", "payer@example.com", USER, *ref(project)),
    ]
    settle = events_since(mark)[0]
    assert (settle.before, settle.after, settle.reason) == (
        {"status": "pending"},
        {"status": "succeeded", "failure": ""},
        "On the statement",
    )


@covers("staff:account-status")
def test_walk_account_status(client_for, finance, owner, paid):
    account, project, client = paid["account"], paid["project"], client_for(finance)
    url = f"/staff/accounts/{account.account_id}/status/"
    mark = audit_mark()
    client.post(url, {"decision": "suspend", "reason": "Card fraud reported"})
    client.post(url, {"decision": "reinstate", "reason": "Cleared by the bank"})
    assert rows_since(mark) == [
        ("billing_account.status", FINANCE, STAFF, *ref(account)),
        ("project.tier", FINANCE, STAFF, *ref(project)),
        ("billing_account.status", FINANCE, STAFF, *ref(account)),
        ("project.tier", FINANCE, STAFF, *ref(project)),
    ]
    suspend, _, reinstate, _ = events_since(mark)
    assert (suspend.after, suspend.reason) == (
        {"status": "suspended", "suspension_reason": "staff"},
        "Card fraud reported",
    )
    assert (reinstate.after, reinstate.reason) == ({"status": "active", "suspension_reason": ""}, "Cleared by the bank")


def _goodwill_form(amount: str) -> dict:
    expires_on = (timezone.now() + timedelta(days=30)).date().isoformat()
    return {
        "amount": amount,
        "reason_code": GoodwillReason.values[0],
        "note": "Outage on 1 Dec",
        "expires_on": expires_on,
    }


@covers("staff:goodwill-new")
def test_walk_goodwill_new_at_most_the_threshold_is_granted(client_for, finance, paid):
    account = paid["account"]
    mark = audit_mark()
    client_for(finance).post(f"/staff/accounts/{account.account_id}/goodwill/", _goodwill_form("100"))
    grant = GoodwillGrant.objects.get(account=account)
    assert rows_since(mark) == [
        ("goodwill.request", FINANCE, STAFF, *ref(grant)),
        ("goodwill.grant", FINANCE, STAFF, *ref(grant)),
    ]
    assert reasons_since(mark) == ["Outage on 1 Dec", "Outage on 1 Dec"]
    assert events_since(mark)[1].after == {"status": "granted", "credit": grant.credit_id, "amount": "100.00"}


@covers("staff:goodwill-decide")
def test_walk_goodwill_above_the_threshold_waits_for_a_second_member(client_for, finance, finance2, paid):
    account = paid["account"]
    mark = audit_mark()
    client_for(finance).post(f"/staff/accounts/{account.account_id}/goodwill/", _goodwill_form("100.01"))
    grant = GoodwillGrant.objects.get(account=account)
    assert rows_since(mark) == [("goodwill.request", FINANCE, STAFF, *ref(grant))]
    mark = audit_mark()
    client_for(finance2).post(f"/staff/goodwill/{grant.pk}/", {"decision": "approve", "reason": "Agreed"})
    grant.refresh_from_db()
    assert rows_since(mark) == [("goodwill.grant", FINANCE2, STAFF, *ref(grant))]
    assert (events_since(mark)[0].after, events_since(mark)[0].reason) == (
        {"status": "granted", "credit": grant.credit_id, "amount": "100.01"},
        "Agreed",
    )


def test_walk_goodwill_decide_reject(client_for, finance, finance2, paid):
    grant = request_goodwill(
        paid["account"],
        amount=D("500"),
        reason_code=GoodwillReason.values[0],
        note="Big outage",
        expires_at=timezone.now() + timedelta(days=30),
        by=finance,
    )
    mark = audit_mark()
    client_for(finance2).post(f"/staff/goodwill/{grant.pk}/", {"decision": "reject", "reason": "Too much"})
    assert rows_since(mark) == [("goodwill.reject", FINANCE2, STAFF, *ref(grant))]
    assert (events_since(mark)[0].after, events_since(mark)[0].reason) == ({"status": "rejected"}, "Too much")


@covers("staff:quota-request-decide")
def test_walk_quota_request_decide(client_for, support, owner, paid):
    ask = request_increase(
        paid["project"], model_id=FLASH, metric="rpm", value=1_000_000, reason="Launch traffic", by=owner
    )
    mark = audit_mark()
    data = {"decision": "approve", "value": "500000", "reason": "Half for now"}
    client_for(support).post(f"/staff/quota-requests/{ask.pk}/", data)
    override = QuotaOverride.objects.get(project=paid["project"], model_id=FLASH)
    assert rows_since(mark) == [
        ("quota_override.set", SUPPORT, STAFF, *ref(override)),
        ("quota_request.approve", SUPPORT, STAFF, *ref(ask)),
    ]
    assert reasons_since(mark) == ["Half for now", "Half for now"]
    assert events_since(mark)[1].after == {"status": "approved", "approved_value": 500_000}


def test_walk_quota_request_decline(client_for, support, owner, paid):
    ask = request_increase(paid["project"], model_id=FLASH, metric="rpd", value=10**9, reason="Nightly", by=owner)
    mark = audit_mark()
    client_for(support).post(f"/staff/quota-requests/{ask.pk}/", {"decision": "decline", "reason": "Not needed"})
    assert rows_since(mark) == [("quota_request.decline", SUPPORT, STAFF, *ref(ask))]
    assert (events_since(mark)[0].after, events_since(mark)[0].reason) == ({"status": "declined"}, "Not needed")


@covers("staff:tier-override")
def test_walk_tier_override(client_for, support, paid):
    project = paid["project"]
    mark = audit_mark()
    data = {"tier": "tier_2", "keep": "keep", "reason": "Enterprise trial"}
    client_for(support).post(f"/staff/projects/{project.project_id}/tier/", data)
    assert rows_since(mark) == [
        ("project.tier", SUPPORT, STAFF, *ref(project)),
        ("project.tier_override", SUPPORT, STAFF, *ref(project)),
    ]
    tier, override = events_since(mark)
    assert (tier.after, tier.reason) == ({"tier": "tier_2", "billing_state": "active"}, "Changed by Support")
    assert (override.before, override.after, override.reason) == (
        {"tier": "tier_1", "tier_locked": False},
        {"tier": "tier_2", "tier_locked": True},
        "Enterprise trial",
    )


@covers("staff:promotion-new", "staff:promotion")
def test_walk_promotions(client_for, finance):
    client = client_for(finance)
    form = {
        "code": "walk-promo",
        "amount": "25.50",
        "redeem_by": (timezone.now() + timedelta(days=30)).date().isoformat(),
        "credit_valid_days": "60",
        "max_redemptions": "100",
        "description": "Walk campaign",
    }
    mark = audit_mark()
    client.post("/staff/promotions/new/", form)
    promo = PromoCode.objects.get(code="WALK-PROMO")
    client.post(f"/staff/promotions/{promo.pk}/", {"reason": "Posted on a coupon site"})
    client.post(f"/staff/promotions/{promo.pk}/", {"reason": "Again"})  # deactivated once: nothing more
    assert rows_since(mark) == [
        ("promo_code.create", FINANCE, STAFF, *ref(promo)),
        ("promo_code.deactivate", FINANCE, STAFF, *ref(promo)),
    ]
    create, deactivate = events_since(mark)
    assert (create.after["code"], create.after["amount"], create.after["max_redemptions"]) == (
        "WALK-PROMO",
        "25.50",
        100,
    )
    assert (deactivate.after, deactivate.reason) == ({"active": False}, "Posted on a coupon site")


@covers("staff:promotion-approve")
def test_walk_promotion_approve_by_a_second_finance_member(client_for, finance, finance2):
    promo = create_code(
        code="WALK-BIG",
        amount=D("25.50"),
        redeem_by=timezone.now() + timedelta(days=30),
        credit_valid_days=60,
        max_redemptions=100,  # USD 2,550 in all: above the threshold, so it waits
        by=finance,
    )
    url = f"/staff/promotions/{promo.pk}/approve/"
    mark = audit_mark()
    client_for(finance).post(url, {"note": "Mine"})  # its creator may not: nothing recorded
    client_for(finance2).post(url, {"note": "Spring campaign, agreed"})
    client_for(finance2).post(url, {"note": "Again"})  # approved once: nothing more
    assert rows_since(mark) == [("promo_code.approve", FINANCE2, STAFF, *ref(promo))]
    (approve,) = events_since(mark)
    assert (approve.before, approve.after, approve.reason) == (
        {"approved_by": None},
        {"approved_by": FINANCE2, "exposure": "2550.00"},
        "Spring campaign, agreed",
    )


def _totp(device: TOTPDevice) -> str:
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits, drift=device.drift):06d}"


@covers("staff:two-factor-setup", "staff:two-factor", "staff:two-factor-recovery")
def test_walk_two_factor(client, support, settings, time_machine):
    settings.STAFF_REQUIRE_2FA = True
    time_machine.move_to(datetime(2026, 12, 1, 12, tzinfo=ZoneInfo("UTC")), tick=False)
    client.force_login(support)
    mark = audit_mark()
    client.get("/staff/2fa/setup/")  # an unconfirmed authenticator is nobody's yet: its confirmation is audited
    assert rows_since(mark) == []
    device = TOTPDevice.objects.get(user=support)
    client.post("/staff/2fa/setup/", {"code": _totp(device), "next": "/staff/"})
    time_machine.shift(30)  # each code works once: the next step's code signs in again
    client.logout()
    client.force_login(support)
    client.post("/staff/2fa/", {"code": _totp(device), "next": "/staff/"})
    client.post("/staff/2fa/recovery-codes/")
    assert rows_since(mark) == [
        ("staff.two_factor.enrol", SUPPORT, STAFF, *ref(support)),
        ("staff.two_factor.verify", SUPPORT, STAFF, *ref(support)),
        ("staff.two_factor.recovery_codes", SUPPORT, STAFF, *ref(support)),
    ]
    assert [(e.before, e.after) for e in events_since(mark)] == [
        ({"authenticators": []}, {"authenticator": device.pk, "recovery_codes": 10}),
        ({}, {"method": "authenticator"}),
        ({"recovery_codes": 10}, {"recovery_codes": 10}),
    ]


# Jobs (each runs its management command, as the job runner does)


def run_job(name: str):
    HUEY._registry._registry[name]().execute()


@covers_job("studio.jobs.deliver_outbox")
def test_walk_job_deliver_outbox(db):
    send_mail("Hello", "Body", None, ["someone@example.com"])
    row = OutboundEmail.objects.get()
    mark = audit_mark()
    run_job("studio.jobs.deliver_outbox")
    assert rows_since(mark) == [("outbound_email.sent", None, SYSTEM, *ref(row))]
    assert events_since(mark)[0].after == {"status": "sent", "attempts": 1}


def test_walk_outbox_failing_for_good_is_audited(db, settings):
    settings.OUTBOX_MAX_ATTEMPTS = 1
    settings.OUTBOX_DELIVERY_BACKEND = "tests.studio.test_audit_walk.BrokenBackend"
    send_mail("Hello", "Body", None, ["someone@example.com"])
    row = OutboundEmail.objects.get()
    mark = audit_mark()
    run_job("studio.jobs.deliver_outbox")
    assert rows_since(mark) == [("outbound_email.fail", None, SYSTEM, *ref(row))]
    assert (events_since(mark)[0].after, events_since(mark)[0].reason) == (
        {"status": "failed", "attempts": 1},
        "ConnectionRefusedError: the mail server is down",
    )


class BrokenBackend:
    def __init__(self, *args, **kwargs):
        pass

    def open(self):
        raise ConnectionRefusedError("the mail server is down")

    def close(self):
        pass


@covers_job("billing.jobs.reconcile_payments")
def test_walk_job_reconcile_payments(owner, project, due, settings):
    timeout_card = make_card(due.payments_profile, last4=settings.TEST_PROCESSOR_TIMEOUT_CARD[-4:])
    timeout_card.processor_token = _timeout_token(settings)
    timeout_card.save(update_fields=["processor_token"])
    attempt = pay_prepayment(due, attempt_id=uuid.uuid4(), amount=D("10"), payment_method=timeout_card, by=owner)
    assert attempt.status == "unknown"
    mark = audit_mark()
    run_job("billing.jobs.reconcile_payments")
    assert rows_since(mark)[0] == ("prepayment.settle", None, SYSTEM, *ref(attempt))


def _timeout_token(settings):
    from billing.processor import get_processor

    token = get_processor().tokenize_card(
        number=settings.TEST_PROCESSOR_TIMEOUT_CARD, exp_month=12, exp_year=2099, cvc="123", brand="visa"
    )
    return token.token


@covers_job("billing.jobs.evaluate_tiers")
def test_walk_job_evaluate_tiers(owner, paid):
    project, account = paid["project"], paid["account"]
    with time_machine.travel(timezone.now() - timedelta(days=40)):
        ledger.record_usage_charge(account, amount=D("300"), description="usage", idempotency_key="walk-spend")
        ledger.record_payment(account, amount=D("300"), description="Statement paid", idempotency_key="walk-paid")
    mark = audit_mark()
    run_job("billing.jobs.evaluate_tiers")
    assert rows_since(mark) == [("project.tier", None, SYSTEM, *ref(project))]
    assert (events_since(mark)[0].after, events_since(mark)[0].reason) == (
        {"tier": "tier_2", "billing_state": "active"},
        "Automatic tier evaluation",
    )


@covers_job("billing.jobs.expire_credits")
def test_walk_job_expire_credits(owner, paid):
    account, now = paid["account"], timezone.now()
    expired = ledger.grant_credit(
        account, kind=CreditKind.GOODWILL, amount=D("5"), expires_at=now - timedelta(days=1), at=now - timedelta(days=9)
    )
    expiring = ledger.grant_credit(account, kind=CreditKind.GOODWILL, amount=D("7"), expires_at=now + timedelta(days=2))
    mark = audit_mark()
    run_job("billing.jobs.expire_credits")
    assert rows_since(mark) == [
        ("credit.expire", None, SYSTEM, *ref(expired)),
        ("credit.remind", None, SYSTEM, *ref(expiring)),
    ]
    write_off, reminder = events_since(mark)
    assert (write_off.before, write_off.after["written_off"]) == ({"remaining": "5.000000"}, "5.000000")
    assert reminder.after == {"days_before": 3, "remaining": "7.000000", "recipients": 1}


@covers_job("billing.jobs.check_budgets")
def test_walk_job_check_budgets(owner, paid):
    account, project = paid["account"], paid["project"]
    budget = Budget.objects.create(account=account, amount=D("100"), created_by=owner)
    ledger.record_usage(account, month=ledger_month(), lines=[statement_line(project, "95", at=timezone.now())])
    mark = audit_mark()
    run_job("billing.jobs.check_budgets")
    assert rows_since(mark) == [("budget.alert", None, SYSTEM, *ref(budget))]
    assert events_since(mark)[0].after["thresholds"][:2] == ["50% actual", "90% actual"]


def ledger_month():
    from billing.statements import month_of

    return month_of(timezone.now())


@covers_job("billing.jobs.issue_statements")
def test_walk_job_issue_statements(owner, project):
    account = _october_usage(owner, project)
    mark = audit_mark()
    with time_machine.travel(datetime(2026, 11, 1, 0, 5, tzinfo=LA), tick=False):
        run_job("billing.jobs.issue_statements")
    statement = Statement.objects.get(account=account)
    assert rows_since(mark) == [("statement.issue", None, SYSTEM, *ref(statement))]


@covers_job("billing.jobs.charge_statements")
def test_walk_job_charge_statements(owner, project):
    account = _october_usage(owner, project)
    with time_machine.travel(datetime(2026, 11, 1, 0, 5, tzinfo=LA), tick=False):
        statement, _ = issue_statement(account, OCTOBER)
    mark = audit_mark()
    with time_machine.travel(T0, tick=False):
        run_job("billing.jobs.charge_statements")
    payment = statement.payments.get()
    assert rows_since(mark) == [
        ("statement.payment.start", None, SYSTEM, *ref(payment)),
        ("statement.payment.settle", None, SYSTEM, *ref(payment)),
    ]


@covers_job("billing.jobs.retry_statement_payments")
def test_walk_job_retry_statement_payments(owner, project):
    account = _october_usage(owner, project)
    with time_machine.travel(datetime(2026, 11, 1, 0, 5, tzinfo=LA), tick=False):
        statement, _ = issue_statement(account, OCTOBER)
    _declined(account)
    with time_machine.travel(T0, tick=False):
        charge_due()
    mark = audit_mark()
    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        run_job("billing.jobs.retry_statement_payments")
    retry = statement.payments.order_by("-attempt").first()
    assert [row for row in rows_since(mark) if row[0].startswith("statement.payment")] == [
        ("statement.payment.retry", None, SYSTEM, *ref(retry)),
        ("statement.payment.settle", None, SYSTEM, *ref(retry)),
    ]
    assert {row[2] for row in rows_since(mark)} == {SYSTEM}


@covers_job("usage.jobs.charge_usage")
def test_walk_job_charge_usage(client, paid):
    from usage.ingest import ingest

    account, key = paid["account"], paid["key"]
    ingest(
        [
            {
                "event_id": f"walk-charge-{n}",
                "key_id": str(key.pk),
                "model": "gemini-2.5-flash",
                "kind": "generate",
                "status_code": 200,
                "input_tokens": 100_000,
                "output_tokens": 10_000,
                "occurred_at": timezone.now().isoformat(),
            }
            for n in range(3)
        ]
    )
    assert PendingCharge.objects.filter(account=account).exists()
    mark = audit_mark()
    run_job("usage.jobs.charge_usage")
    entry = account.entries.get(kind="usage_charge")
    assert rows_since(mark) == [("usage.charge", None, SYSTEM, *ref(account))]  # one per account charge, not per event
    assert events_since(mark)[0].after == {
        "entry": entry.pk,
        "month": str(entry.usage_month),
        "amount": str(entry.amount),
        "lines": 2,
    }


@covers_job("usage.jobs.drop_usage_partitions")
@pytest.mark.postgres
def test_walk_job_drop_usage_partitions(db, settings):
    """Raw events of a month nobody is billed for, past the retention: its partition is dropped and audited (the
    months this database made ahead of today are dropped too: nothing is billed in them either)."""
    from datetime import UTC, date

    from usage import partitions

    settings.USAGE_RAW_RETENTION_MONTHS = 3
    partitions.ensure([date(2031, 4, 1)])
    doomed = [p.name for p in partitions.partitions(partitions.RAW) if p.month < date(2031, 5, 1)]
    assert "usage_usageevent_p203104" in doomed
    mark = audit_mark()
    with time_machine.travel(datetime(2031, 8, 10, 12, tzinfo=UTC), tick=False):
        run_job("usage.jobs.drop_usage_partitions")
    assert rows_since(mark) == [("usage.raw_events.drop", None, SYSTEM, "usage.usageevent", name) for name in doomed]
    assert {event.reason for event in events_since(mark)} == {"no billed usage: no statement needs its events"}
