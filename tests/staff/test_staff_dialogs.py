"""The staff console's dialogs (templates/staff/*.html extending partials/dialog.html), as the customer console's
(tests/studio/test_dialogs.py): a page of its own without JS, only the modal's content for htmx, the form posting to
its own URL both ways, and Cancel leading back to the queue or page the dialog belongs to."""

import re
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from billing.goodwill import request_goodwill
from billing.models import GoodwillReason
from billing.payments import pay_prepayment
from tests.factories import make_account, make_project
from tests.staff.finance import D, refund_of
from usage.quotas import request_increase

# Every staff dialog, in the order of staff_dialogs(); tests/studio/test_dialogs.py counts them.
STAFF_DIALOGS = [
    "staff/refund_decide.html",
    "staff/transfer_decide.html",
    "staff/account_status.html",
    "staff/goodwill_new.html",
    "staff/goodwill_decide.html",
    "staff/quota_request_decide.html",
    "staff/tier_override.html",
]


@pytest.fixture
def world(customer_world, finance, settings):
    """One item waiting in each queue: a refund, a bank transfer, a goodwill credit above the threshold and a quota
    request, and the customer's billing account and paid project."""
    settings.STAFF_REQUIRE_2FA = False
    customer, account, project = customer_world["user"], customer_world["account"], customer_world["project"]
    transfer_account = make_account(customer, name="Transfer billing", prepayment_due=True, projects=[make_project()])
    transfer = pay_prepayment(
        transfer_account,
        attempt_id=uuid.uuid4(),
        amount=D("10"),
        bank_transfer=True,
        payment_method=None,
        by=customer,
    )
    grant = request_goodwill(
        account,
        amount=D("150"),
        reason_code=GoodwillReason.values[0],
        note="Outage",
        expires_at=timezone.now() + timedelta(days=30),
        by=finance,
    )
    ask = request_increase(
        project, model_id="gemini-2.5-flash", metric="rpm", value=1500, reason="Launch traffic", by=customer
    )
    return {
        "refund": refund_of("150"),
        "transfer": transfer,
        "account": account,
        "grant": grant,
        "ask": ask,
        "project": project,
    }


def staff_dialogs(world):
    """(URL, title, Cancel's URL) of each staff dialog, in STAFF_DIALOGS' order; each form posts to its URL."""
    account_id, project_id = world["account"].account_id, world["project"].project_id
    return [
        (f"/staff/refunds/{world['refund'].pk}/", "Refund request", "/staff/refunds/"),
        (f"/staff/transfers/{world['transfer'].pk}/", "Bank transfer", "/staff/transfers/"),
        (f"/staff/accounts/{account_id}/status/", "Suspend or reinstate", "/staff/past-due/"),
        (f"/staff/accounts/{account_id}/goodwill/", "Grant a goodwill credit", "/staff/goodwill/"),
        (f"/staff/goodwill/{world['grant'].pk}/", "Goodwill credit", "/staff/goodwill/"),
        (f"/staff/quota-requests/{world['ask'].pk}/", "Quota increase request", "/staff/quota-requests/"),
        (f"/staff/projects/{project_id}/tier/", "Override tier", f"/staff/projects/{project_id}/"),
    ]


def page_form(html: str) -> list[str]:
    """The action of a dialog's form on its own page: a plain POST (tests/studio/test_dialogs.py)."""
    return re.findall(r'<form method="post" action="([^"]*)"(?![^>]*data-hx-post)[^>]*>', html)[-1:]


def the_form(html: str) -> list[tuple[str, str]]:
    """(action, data-hx-post) of the dialog's form: the last one posting into the modal."""
    form = r'<form method="post" action="([^"]*)" data-hx-post="([^"]*)" data-hx-target="#modal"[^>]*>'
    return re.findall(form, html)[-1:]


def cancel_links(html: str) -> list[str]:
    return re.findall(r'<a class="button" href="([^"]*)" data-close-modal>Cancel</a>', html)


def test_every_staff_dialog_is_listed_here():
    templates = settings.BASE_DIR / "templates"
    dialogs = sorted(
        str(path.relative_to(templates))
        for path in (templates / "staff").rglob("*.html")
        if 'extends "partials/dialog.html"' in path.read_text()
    )

    assert dialogs == sorted(STAFF_DIALOGS)


@pytest.mark.parametrize("index", range(len(STAFF_DIALOGS)))
def test_staff_dialog_without_js_is_a_page(client, superuser, world, index):
    url, title, cancel = staff_dialogs(world)[index]
    client.force_login(superuser)

    response = client.get(url)

    html = response.content.decode()
    assert (response.status_code, response.templates[0].name) == (200, STAFF_DIALOGS[index])
    assert re.findall(r"<title>(.*?)</title>", html) == [f"{title} · Studio Console"]
    page = html[html.index('<section class="card page-dialog">') : html.index("</section>", html.index("page-dialog"))]
    assert re.findall(r'<h1 id="modal-title">(.*?)</h1>', page) == [title]
    assert re.findall(r"<h1[ >]", html) == ["<h1 "]
    assert page_form(page) == [url] and "data-hx-post" not in page
    assert cancel_links(page) == [cancel]


@pytest.mark.parametrize("index", range(len(STAFF_DIALOGS)))
def test_staff_dialog_for_htmx_is_only_the_modal_content(client, superuser, world, index):
    url, title, cancel = staff_dialogs(world)[index]
    client.force_login(superuser)

    response = client.get(url, headers={"HX-Request": "true", "HX-Target": "modal"})

    html = response.content.decode()
    assert (response.status_code, response.templates[0].name) == (200, STAFF_DIALOGS[index])
    assert html.lstrip().startswith(f'<h2 id="modal-title">{title}</h2>')
    assert ("<html" in html, "page-dialog" in html, "<title>" in html) == (False, False, False)
    assert the_form(html) == [(url, url)]
    assert cancel_links(html) == [cancel]
    assert "HX-Request" in response["Vary"]
