"""The Quota tier cell (one template, studio/includes/quota_tier.html) per state and per role, and
what a Viewer is offered on the keys, key, tier progress and billing pages: no link that fails."""

import html as html_lib
import re

import pytest

from billing.models import BillingAdministrator, ProjectBilling
from billing.services import start_setup
from studio.models import BillingState, QuotaState, Role, Tier
from tests.factories import add_member, make_account, make_key, make_project

# (tier, billing state, upgrade available) of each state the cell shows.
STATES = {
    "set_up_billing": (Tier.FREE, BillingState.NONE, False),
    "action_required": (Tier.FREE, BillingState.PREPAYMENT_DUE, False),
    "billing_suspended": (Tier.FREE, BillingState.SUSPENDED, False),
    "tier_1_upgrade": (Tier.TIER_1, BillingState.ACTIVE, True),
    "tier_3": (Tier.TIER_3, BillingState.ACTIVE, False),
}

# What an Owner or an Editor sees (unchanged markup: the links they can follow).
WRITER = {
    "set_up_billing": '<span class="quota-tier" data-state="set_up_billing">\n<span class="badge">Free</span> '
    '<a class="tier-action" href="/billing/setup/?project={pid}">Set up billing</a>\n</span>',
    "action_required": '<span class="quota-tier" data-state="action_required">\n<a class="badge warning" '
    'href="/billing/prepayment/?project={pid}" data-hx-get="/billing/prepayment/?project={pid}" '
    'data-hx-target="#modal">'
    "Action required</a>\n</span>",
    "billing_suspended": '<span class="quota-tier" data-state="billing_suspended">\n'
    '<span class="badge warning">Billing suspended</span> <small class="tier-hint">Paid requests are refused until '
    "the billing account is reinstated, for example by paying a past-due statement.</small> "
    '<a class="tier-action" href="/billing/">Go to billing</a>\n</span>',
    "tier_1_upgrade": '<span class="quota-tier" data-state="tier_1">\n<span class="badge paid">Tier 1</span> '
    '<a class="badge upgrade" href="/billing/projects/{pid}/upgrade/" data-hx-get="/billing/projects/{pid}/upgrade/" '
    'data-hx-target="#modal">Upgrade</a>\n</span>',
    "tier_3": '<span class="quota-tier" data-state="tier_3">\n<span class="badge paid">Tier 3</span>\n</span>',
}

# What a Viewer sees: the state, no link, and whom to ask.
VIEWER = {
    "set_up_billing": '<span class="quota-tier" data-state="set_up_billing">\n<span class="badge">Free</span> '
    '<small class="tier-hint">To set up billing, ask an owner or editor of this project.</small>\n</span>',
    "action_required": '<span class="quota-tier" data-state="action_required">\n'
    '<span class="badge warning">Action required</span> <small class="tier-hint">'
    "To make the one-time prepayment, ask an owner or editor of this project.</small>\n</span>",
    "billing_suspended": '<span class="quota-tier" data-state="billing_suspended">\n'
    '<span class="badge warning">Billing suspended</span> <small class="tier-hint">Paid requests are refused until '
    "the billing account is reinstated, for example by paying a past-due statement.</small>\n</span>",
    "tier_1_upgrade": '<span class="quota-tier" data-state="tier_1">\n<span class="badge paid">Tier 1</span> '
    '<small class="tier-hint">To upgrade, ask an owner or editor of this project.</small>\n</span>',
    "tier_3": WRITER["tier_3"],
}


def quota_cells(html: str) -> list[str]:
    return re.findall(r'(<span class="quota-tier".*?</span>)\n(?=</td>|</dd>|</p>)', html, re.S)


def link(project, account, *, by):
    """Link without link_project, which would evaluate again the tier these tests set."""
    ProjectBilling.objects.create(project=project, account=account, linked_by=by)


def team_project(owner, editor, viewer, state: str):
    tier, billing_state, upgrade = STATES[state]
    project = make_project(owner, tier=tier, billing_state=billing_state, upgrade_available=upgrade)
    add_member(project, editor, Role.EDITOR)
    add_member(project, viewer, Role.VIEWER)
    return project


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("persona", ["owner", "editor", "viewer"])
def test_keys_table_quota_cell_per_role_and_state(client_for, request, owner, editor, viewer, persona, state):
    project = team_project(owner, editor, viewer, state)
    make_key(project)
    expected = (VIEWER if persona == "viewer" else WRITER)[state].format(pid=project.project_id)

    html = client_for(request.getfixturevalue(persona)).get("/api-keys/").content.decode()

    assert quota_cells(html) == [expected]


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("persona", ["owner", "editor", "viewer"])
def test_key_page_quota_cell_per_role_and_state(client_for, request, owner, editor, viewer, persona, state):
    project = team_project(owner, editor, viewer, state)
    key, _ = make_key(project)
    expected = (VIEWER if persona == "viewer" else WRITER)[state].format(pid=project.project_id)

    html = client_for(request.getfixturevalue(persona)).get(f"/api-keys/{key.pk}/").content.decode()

    assert quota_cells(html) == [expected]


@pytest.mark.parametrize("persona", ["owner", "editor", "viewer"])
def test_tier_progress_quota_cell_per_role(client_for, request, owner, editor, viewer, persona):
    project = team_project(owner, editor, viewer, "tier_1_upgrade")
    link(project, make_account(owner), by=owner)
    expected = (VIEWER if persona == "viewer" else WRITER)["tier_1_upgrade"].format(pid=project.project_id)

    html = client_for(request.getfixturevalue(persona)).get(f"/billing/projects/{project.project_id}/tier/")

    assert quota_cells(html.content.decode()) == [expected]


def test_keys_table_rows_of_projects_in_different_roles(client_for, owner, editor, viewer):
    """The role is the row's: one page, a writable and a read-only project in the same state."""
    mine = make_project(viewer, name="Mine")
    theirs = team_project(owner, editor, viewer, "set_up_billing")
    make_key(mine, name="Older")
    make_key(theirs, name="Newer")

    html = client_for(viewer).get("/api-keys/").content.decode()

    assert quota_cells(html) == [
        VIEWER["set_up_billing"].format(pid=theirs.project_id),
        WRITER["set_up_billing"].format(pid=mine.project_id),
    ]


def test_project_quota_state_is_a_quota_state_member(db):
    cases = [(make_project(tier=tier, billing_state=state), upgrade) for tier, state, upgrade in STATES.values()]

    assert [(p.quota_state, p.quota_state.label) for p, _ in cases] == [
        (QuotaState.SET_UP_BILLING, "Set up billing"),
        (QuotaState.ACTION_REQUIRED, "Action required"),
        (QuotaState.BILLING_SUSPENDED, "Billing suspended"),
        (QuotaState.TIER_1, "Tier 1"),
        (QuotaState.TIER_3, "Tier 3"),
    ]
    assert all(type(p.quota_state) is QuotaState for p, _ in cases)


def test_quota_cell_compares_states_with_the_enum_not_strings():
    from django.conf import settings

    source = (settings.BASE_DIR / "templates/studio/includes/quota_tier.html").read_text()

    assert re.findall(r"==\s*['\"]", source) == []
    assert re.findall(r"state == (QuotaState\.\w+)", source) == [
        "QuotaState.SET_UP_BILLING",
        "QuotaState.ACTION_REQUIRED",
        "QuotaState.BILLING_SUSPENDED",
    ]


def test_the_cell_is_in_one_template():
    from django.conf import settings

    templates = settings.BASE_DIR / "templates"
    paths = templates.rglob("*.html")
    defining = sorted(str(path.relative_to(templates)) for path in paths if 'class="quota-tier"' in path.read_text())

    assert defining == ["studio/includes/quota_tier.html"]


# Every link a person is offered works.


def offered_urls(html: str) -> list[str]:
    """The site's URLs a page's main content links to or loads with htmx GET."""
    main = html[html.index("<main") : html.index("</main>")]
    urls = re.findall(r'(?:href|data-hx-get)="(/[^"]*)"', main)
    return sorted({html_lib.unescape(url) for url in urls if not url.startswith("/static/")})


def billing_team(owner, editor, viewer):
    """Projects in every state; the viewer also administers the billing account that pays for them."""
    projects = {state: team_project(owner, editor, viewer, state) for state in STATES}
    for project in projects.values():
        make_key(project)
    account = make_account(owner, name="Team billing")
    for state in ("action_required", "tier_1_upgrade", "tier_3"):
        link(projects[state], account, by=owner)
    BillingAdministrator.objects.create(account=account, user=viewer)
    return projects, account


@pytest.mark.parametrize("persona", ["owner", "editor", "viewer"])
def test_no_link_on_the_keys_key_and_billing_pages_answers_404(client_for, request, owner, editor, viewer, persona):
    projects, _ = billing_team(owner, editor, viewer)
    client = client_for(request.getfixturevalue(persona))
    key = projects["tier_1_upgrade"].api_keys.get()
    pages = ["/api-keys/", f"/api-keys/{key.pk}/", f"/billing/projects/{key.project.project_id}/tier/", "/billing/"]

    offered = sorted({url for page in pages for url in offered_urls(client.get(page).content.decode())})
    answers = {url: client.get(url, follow=True).status_code for url in offered}

    assert offered  # the pages do offer links
    assert {url: status for url, status in answers.items() if status >= 400} == {}


def test_a_viewer_is_offered_no_billing_or_tier_action_on_a_project(client_for, owner, editor, viewer):
    projects, _ = billing_team(owner, editor, viewer)
    client = client_for(viewer)
    key = projects["tier_1_upgrade"].api_keys.get()
    pages = ["/api-keys/", f"/api-keys/{key.pk}/", f"/billing/projects/{key.project.project_id}/tier/", "/billing/"]

    offered = {url for page in pages for url in offered_urls(client.get(page).content.decode())}

    tier_action = r"/billing/(setup/\?project|prepayment/\?project|projects/.+/upgrade/)"
    actions = sorted(url for url in offered if re.search(tier_action, url))
    project_actions = sorted(url for url in offered if re.search(r"/projects/.+/(move|unlink)/", url))
    assert (actions, project_actions) == ([], [])


def test_billing_page_tells_a_viewer_whom_to_ask_instead_of_move_and_unlink(client_for, owner, editor, viewer):
    projects, account = billing_team(owner, editor, viewer)
    paid = projects["tier_3"]

    viewers_page = client_for(viewer).get("/billing/").content.decode()
    owners_page = client_for(owner).get("/billing/").content.decode()

    hint = "To move it or disable its billing, ask an owner or editor of this project."
    assert viewers_page.count(hint) == 3
    assert f"/billing/accounts/{account.account_id}/projects/{paid.project_id}/unlink/" not in viewers_page
    assert hint not in owners_page
    assert f'href="/billing/accounts/{account.account_id}/projects/{paid.project_id}/unlink/"' in owners_page


def test_billing_page_treats_a_linked_project_the_admin_is_no_member_of_as_read_only(client_for, owner, outsider):
    project = make_project(owner, tier=Tier.TIER_1, upgrade_available=True)
    account = make_account(owner, name="Shared")
    link(project, account, by=owner)
    BillingAdministrator.objects.create(account=account, user=outsider)

    html = client_for(outsider).get("/billing/").content.decode()

    assert quota_cells(html) == [VIEWER["tier_1_upgrade"].format(pid=project.project_id)]
    assert "To move it or disable its billing, ask an owner or editor of this project." in html


def test_setup_status_quota_cell_for_the_person_who_set_it_up(client_for, owner):
    project = make_project(owner, tier=Tier.TIER_1, upgrade_available=True)
    session = start_setup(owner, project=project)
    account = make_account(owner, name="Done")
    link(project, account, by=owner)
    session.result, session.finished_at = account, project.created_at
    session.save(update_fields=["result", "finished_at"])

    html = client_for(owner).get(f"/billing/setup/{session.pk}/status/").content.decode()

    assert quota_cells(html) == [WRITER["tier_1_upgrade"].format(pid=project.project_id)]


@pytest.mark.parametrize(("persona", "hint"), [("owner", False), ("viewer", True)])
def test_tier_progress_of_a_free_project_says_whom_to_ask(client_for, request, owner, editor, viewer, persona, hint):
    project = team_project(owner, editor, viewer, "set_up_billing")

    html = client_for(request.getfixturevalue(persona)).get(f"/billing/projects/{project.project_id}/tier/")

    advice = "Set up billing (and make the prepayment, if one is due) to reach Tier 1."
    ask = " To set up billing, ask an owner or editor of this project."
    assert f'<p class="muted">{advice}{ask if hint else ""}</p>' in html.content.decode()
