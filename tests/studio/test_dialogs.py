"""Every dialog extends partials/dialog.html: one heading, one form with its actions and Cancel,
and the same template as a page without JS and as the modal's content for htmx."""

import re
from datetime import date

import pytest
from django.conf import settings

from billing.models import Budget, ProjectBilling, Statement, StatementStatus
from billing.services import start_setup
from studio.models import BillingState, Role, Tier
from tests.factories import add_member, make_account, make_key, make_project
from tests.staff.test_staff_dialogs import STAFF_DIALOGS


@pytest.fixture
def world(owner, editor):
    """An owner with a key, a billing account with a prepayment due and a paid project on it."""
    free = make_project(owner, name="Free app")
    key, _ = make_key(free, name="CI")
    account = make_account(owner, name="Main", prepayment_due=True)
    paid = make_project(owner, name="Paid app", tier=Tier.TIER_1, upgrade_available=True)
    ProjectBilling.objects.create(project=paid, account=account, linked_by=owner)
    due = make_project(owner, name="Due app", billing_state=BillingState.PREPAYMENT_DUE)
    ProjectBilling.objects.create(project=due, account=account, linked_by=owner)
    add_member(due, editor, Role.EDITOR)
    setup = start_setup(owner, project=free)
    budget = Budget.objects.create(account=account, amount=100, created_by=owner)
    Statement.objects.create(  # past due: its page offers to pay it with another card (dunning)
        account=account,
        month=date(2026, 10, 1),
        status=StatementStatus.PAYMENT_FAILED,
        usage_total=15,
        credits_total=0,
        amount_due=15,
    )
    return {"key": key, "account": account, "paid": paid, "due": due, "setup": setup, "budget": budget}


def form_dialogs(world):
    """(URL, title, heading, form action, Cancel's URL) of each dialog with a form, as the owner."""
    key, account, paid, setup = world["key"], world["account"], world["paid"], world["setup"]
    on_account = f"/billing/accounts/{account.account_id}"
    return [
        ("/api-keys/create/", "Create API key", "Create API key", "/api-keys/create/", "/api-keys/"),
        *[
            (f"/api-keys/{key.pk}/{action}/", title, title, f"/api-keys/{key.pk}/{action}/", "/api-keys/")
            for action, title in [("rename", "Rename API key"), ("revoke", "Revoke API key")]
        ],
        ("/projects/import/", "Import project", "Import project", "/projects/import/", "/api-keys/"),
        (
            f"/billing/projects/{paid.project_id}/upgrade/",
            "Upgrade",
            "Upgrade Paid app",
            f"/billing/projects/{paid.project_id}/upgrade/",
            "/api-keys/",
        ),
        *[
            (f"{on_account}/projects/{paid.project_id}/{action}/", title, title, None, "/billing/")
            for action, title in [("unlink", "Disable billing"), ("move", "Change billing account")]
        ],
        ("/billing/payment-methods/add/", "Add payment method", "Add payment method", None, "/billing/"),
        (f"{on_account}/prepayment/", "One-time prepayment", "One-time prepayment", None, "/billing/"),
        (f"{on_account}/refund/", "Request a refund", "Request a refund", None, "/billing/"),
        (
            f"{on_account}/statements/2026-10/pay/",
            "Pay the October 2026 statement",
            "Pay the October 2026 statement",
            None,
            f"{on_account}/statements/2026-10/",
        ),
        (f"{on_account}/budgets/new/", "Create budget", "Create budget", None, "/billing/"),
        *[
            (f"{on_account}/budgets/{world['budget'].pk}/{action}", title, title, None, "/billing/")
            for action, title in [("", "Change budget"), ("delete/", "Delete budget")]
        ],
        *[
            (f"/billing/setup/{setup.pk}/{step}/", title, title, None, f"/billing/setup/{setup.pk}/details/")
            for step, title in [("contact", "Contact information"), ("payment-method", "Payment method")]
        ],
        (
            f"/usage/projects/{paid.project_id}/spend-cap/",
            "Set a monthly spend cap",
            "Set a monthly spend cap",
            None,
            f"/usage/limits/?project={paid.project_id}",
        ),
        (
            f"{on_account}/redeem-code/",
            "Redeem a promotional code",
            "Redeem a promotional code",
            None,
            "/billing/",
        ),
        (
            f"/usage/projects/{paid.project_id}/quota-request/?model=gemini-2.5-flash",
            "Request a higher limit",
            "Request a higher limit",
            f"/usage/projects/{paid.project_id}/quota-request/",
            f"/usage/limits/?project={paid.project_id}",
        ),
    ]


DIALOG_COUNT = 19


def page_form(html: str) -> list[str]:
    """The action of a dialog's form on its own page: a plain POST, htmx or not (it posts as a page, not into the
    modal, so that it never opens a second copy of itself there)."""
    return re.findall(r'<form method="post" action="([^"]*)"(?![^>]*data-hx-post)[^>]*>', html)[-1:]


def the_form(html: str) -> list[tuple[str, str]]:
    """(action, data-hx-post) of the dialog's form: the last one posting into the modal."""
    form = r'<form method="post" action="([^"]*)" data-hx-post="([^"]*)" data-hx-target="#modal"[^>]*>'
    return re.findall(form, html)[-1:]


def test_every_dialog_with_a_form_is_listed_here(db, owner, editor):
    from django.template.loader import get_template

    templates = settings.BASE_DIR / "templates"
    dialogs = sorted(
        str(path.relative_to(templates))
        for path in templates.rglob("*.html")
        if 'extends "partials/dialog.html"' in path.read_text()
    )

    # + the staff console's (tests/staff/test_staff_dialogs.py), the key created, not an admin, the prepayment's
    # outcome; - one: budgets/edit.html creates and changes
    assert len(dialogs) == DIALOG_COUNT + len(STAFF_DIALOGS) + 3 - 1
    assert [get_template(name).template.nodelist[0].parent_name.token for name in dialogs] == [
        '"partials/dialog.html"'
    ] * len(dialogs)


def test_the_dialog_heading_is_in_one_template():
    templates = settings.BASE_DIR / "templates"
    defining = sorted(
        str(path.relative_to(templates)) for path in templates.rglob("*.html") if 'id="modal-title"' in path.read_text()
    )

    assert defining == ["partials/dialog.html"]


@pytest.mark.parametrize("index", range(DIALOG_COUNT))
def test_dialog_without_js_is_a_page(client_for, owner, world, index):
    url, title, heading, action, cancel = form_dialogs(world)[index]
    action = action or url

    response = client_for(owner).get(url)

    html = response.content.decode()
    assert response.status_code == 200
    assert re.findall(r"<title>(.*?)</title>", html) == [f"{title} · Studio Console"]
    page = html[html.index('<section class="card page-dialog">') : html.index("</section>", html.index("page-dialog"))]
    # Its own page: the dialog's heading is the page's h1 (X12).
    assert re.findall(r'<h1 id="modal-title">(.*?)</h1>', page) == [heading]
    assert re.findall(r"<h1[ >]", html) == ["<h1 "]
    assert page_form(page) == [action] and "data-hx-post" not in page
    assert re.findall(r'<a class="button" href="([^"]*)" data-close-modal>Cancel</a>', page) == [cancel]


@pytest.mark.parametrize("index", range(DIALOG_COUNT))
def test_dialog_for_htmx_is_only_the_modal_content(client_for, owner, world, index):
    url, _, heading, action, cancel = form_dialogs(world)[index]
    action = action or url

    response = client_for(owner).get(url, headers={"HX-Request": "true", "HX-Target": "modal"})

    html = response.content.decode()
    assert html.lstrip().startswith(f'<h2 id="modal-title">{heading}</h2>')
    assert ("<html" in html, "page-dialog" in html, "<title>" in html) == (False, False, False)
    assert the_form(html) == [(action, action)]
    assert re.findall(r'<a class="button" href="([^"]*)" data-close-modal>Cancel</a>', html) == [cancel]
    assert "HX-Request" in response["Vary"]


def test_a_dialog_without_a_form_has_its_own_action(client_for, editor, world):
    """Not an administrator of the billing account: a Close link instead of a form."""
    url = f"/billing/prepayment/?project={world['due'].project_id}"

    page = client_for(editor).get(url).content.decode()
    fragment = client_for(editor).get(url, headers={"HX-Request": "true"}).content.decode()

    assert re.findall(r"<title>(.*?)</title>", page) == ["Action required · Studio Console"]
    assert re.findall(r'<h1 id="modal-title">(.*?)</h1>', page) == ["Action required"]
    assert re.findall(r'<h2 id="modal-title">(.*?)</h2>', fragment) == ["Action required"]
    for html in (page, fragment):
        assert re.findall(r'<a class="button" href="([^"]*)" data-close-modal>([^<]*)</a>', html) == [
            ("/api-keys/", "Close")
        ]
        assert "<form" not in html[html.index('id="modal-title"') :]
    assert "<html" not in fragment


def test_the_key_created_dialog_shows_done_and_is_never_cached(client_for, owner, world):
    response = client_for(owner).post(
        "/api-keys/create/", {"name": "New", "project": world["paid"].project_id}, headers={"HX-Request": "true"}
    )

    html = response.content.decode()
    assert html.lstrip().startswith('<h2 id="modal-title">API key created</h2>')
    assert re.findall(r'<a class="button primary" href="([^"]*)" data-close-modal>([^<]*)</a>', html) == [
        ("/api-keys/", "Done")
    ]
    assert "no-store" in response["Cache-Control"]


def test_a_dialog_with_errors_answers_422_with_the_dialog(client_for, owner, world):
    key = world["key"]

    response = client_for(owner).post(f"/api-keys/{key.pk}/rename/", {"name": " "}, headers={"HX-Request": "true"})

    html = response.content.decode()
    assert response.status_code == 422
    assert html.lstrip().startswith('<h2 id="modal-title">Rename API key</h2>')
    assert the_form(html) == [(f"/api-keys/{key.pk}/rename/", f"/api-keys/{key.pk}/rename/")]


def test_the_import_search_still_answers_with_the_result_list_only(client_for, owner):
    elsewhere = make_project(name="Elsewhere")
    add_member(elsewhere, owner, Role.EDITOR, imported=False)

    response = client_for(owner).get(
        "/projects/import/?q=else", headers={"HX-Request": "true", "HX-Target": "import-results"}
    )

    html = response.content.decode()
    assert html.lstrip().startswith('<div id="import-results">')
    assert "modal-title" not in html
    assert re.findall(r'name="projects" value="([^"]+)"', html) == [elsewhere.project_id]
