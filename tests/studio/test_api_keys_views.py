import re

import pytest

from studio.models import ApiKey, AuditEvent, BillingState, Membership, Role, Tier
from tests.factories import add_member, make_key, make_project


def row_names(response):
    """The key names of the table rows, in order."""
    return re.findall(r'<td\s*><a href="/api-keys/\d+/">([^<]+)</a>', response.content.decode())


def test_list_requires_sign_in(client):
    response = client.get("/api-keys/")

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/api-keys/"


def test_list_shows_active_keys_of_imported_projects_newest_first(client_for, owner, project, outsider):
    make_key(project, name="Older")
    make_key(project, name="Newer")
    revoked, _ = make_key(project, name="Revoked")
    revoked.revoke(by=owner)
    not_imported = make_project(name="Not imported")
    add_member(not_imported, owner, Role.OWNER, imported=False)
    make_key(not_imported, name="Hidden")
    make_key(make_project(outsider), name="Outsider's")

    response = client_for(owner).get("/api-keys/")

    assert response.status_code == 200
    assert row_names(response) == ["Newer", "Older"]


def test_list_is_empty_for_an_outsider(client_for, outsider, key):
    response = client_for(outsider).get("/api-keys/")

    assert row_names(response) == []
    assert "No API keys yet." in response.content.decode()


def test_list_query_count_does_not_grow_with_rows(client_for, owner, django_assert_num_queries):
    client = client_for(owner)
    project = make_project(owner)
    make_key(project, name="one")
    with django_assert_num_queries(7):  # + the prepayment notice (billing context processor)
        assert len(row_names(client.get("/api-keys/"))) == 1

    for name in ("two", "three"):
        make_key(make_project(owner, tier=Tier.TIER_2, upgrade_available=True), name=name)
    with django_assert_num_queries(7):  # + the prepayment notice (billing context processor)
        assert len(row_names(client.get("/api-keys/"))) == 3


def test_list_sorts_by_name(client_for, owner, project):
    for name in ("b", "c", "a"):
        make_key(project, name=name)

    client = client_for(owner)

    assert row_names(client.get("/api-keys/?sort=name")) == ["a", "b", "c"]
    assert row_names(client.get("/api-keys/?sort=-name")) == ["c", "b", "a"]


def test_list_paginates_by_100(client_for, owner, project):
    ApiKey.objects.bulk_create(
        ApiKey(project=project, name=f"k{i:03}", prefix="stc_x", last4="abcd", secret_hash=f"{i:064x}")
        for i in range(101)
    )
    client = client_for(owner)

    first = client.get("/api-keys/?sort=name")
    second = client.get("/api-keys/?sort=name&page=2")

    assert len(row_names(first)) == 100
    assert row_names(second) == ["k100"]
    assert "Page 2 of 2" in second.content.decode()


def test_htmx_request_gets_only_the_table(client_for, owner, key):
    response = client_for(owner).get("/api-keys/?sort=name", headers={"HX-Request": "true", "HX-Target": "keys-table"})

    html = response.content.decode()
    assert html.lstrip().startswith('<div id="keys-table"')
    assert "<html" not in html
    assert row_names(response) == ["Team key"]
    assert "HX-Request" in response["Vary"]


def test_history_restore_gets_the_whole_page(client_for, owner, key):
    response = client_for(owner).get("/api-keys/", headers={"HX-Request": "true", "HX-History-Restore-Request": "true"})

    assert "<html" in response.content.decode()


@pytest.mark.parametrize(
    ("tier", "billing_state", "upgrade", "expected"),
    [
        (
            Tier.FREE,
            BillingState.NONE,
            False,
            '<span class="badge">Free</span> <a class="tier-action" href="/billing/setup/?project={pid}">'
            "Set up billing</a>",
        ),
        (
            Tier.FREE,
            BillingState.PREPAYMENT_DUE,
            False,
            '<a class="badge warning" href="/billing/prepayment/?project={pid}" '
            'data-hx-get="/billing/prepayment/?project={pid}" data-hx-target="#modal">Action required</a>',
        ),
        (Tier.TIER_1, BillingState.ACTIVE, False, '<span class="badge paid">Tier 1</span>\n</span>'),
        (
            Tier.TIER_1,
            BillingState.ACTIVE,
            True,
            '<span class="badge paid">Tier 1</span> <a class="badge upgrade" href="/billing/projects/{pid}/upgrade/" '
            'data-hx-get="/billing/projects/{pid}/upgrade/" data-hx-target="#modal">Upgrade</a>',
        ),
        (
            Tier.TIER_2,
            BillingState.ACTIVE,
            True,
            '<span class="badge paid">Tier 2</span> <a class="badge upgrade" href="/billing/projects/{pid}/upgrade/" '
            'data-hx-get="/billing/projects/{pid}/upgrade/" data-hx-target="#modal">Upgrade</a>',
        ),
        (Tier.TIER_3, BillingState.ACTIVE, False, '<span class="badge paid">Tier 3</span>\n</span>'),
    ],
)
def test_quota_tier_cell_renders_every_state(client_for, owner, tier, billing_state, upgrade, expected):
    project = make_project(owner, tier=tier, billing_state=billing_state, upgrade_available=upgrade)
    make_key(project)

    html = client_for(owner).get("/api-keys/").content.decode()

    assert expected.format(pid=project.project_id) in html


def test_plan_column_and_paid_terms_statement(client_for, owner):
    make_key(make_project(owner, name="Free one"))
    client = client_for(owner)

    html = client.get("/api-keys/").content.decode()
    assert "your studio prompts are handled under the free-services terms" in html

    make_key(make_project(owner, name="Paid one", tier=Tier.TIER_1))
    html = client.get("/api-keys/").content.decode()
    assert "your studio prompts are handled under the paid-services terms" in html
    assert re.findall(r"<td>(Free|Paid)\n</td>", html) == ["Paid", "Free"]


def test_viewer_sees_keys_without_write_actions(client_for, viewer, key):
    html = client_for(viewer).get("/api-keys/").content.decode()

    assert "Team key" in html
    assert "View only" in html
    assert f"/api-keys/{key.pk}/revoke/" not in html
    assert "Create API key" not in html  # the viewer can write to no project


def test_viewer_of_a_project_owned_by_someone_else_gets_no_create_button(client_for, viewer, owner):
    # The owner imported it and may write; that must not leak to the viewer (same membership row).
    shared = make_project(owner)
    add_member(shared, viewer, Role.VIEWER)

    html = client_for(viewer).get("/api-keys/").content.decode()

    assert "Create API key" not in html


# Create


def test_create_page_offers_only_writable_projects(client_for, editor, project, outsider):
    read_only = make_project(outsider, name="Read only")
    add_member(read_only, editor, Role.VIEWER)

    html = client_for(editor).get("/api-keys/create/").content.decode()

    options = re.findall(r'<option value="([^"]+)"', html)
    assert options == [project.project_id, "new"]


def test_create_key_in_existing_project_shows_the_secret_once(client_for, editor, project):
    response = client_for(editor).post("/api-keys/create/", {"name": "CI", "project": project.project_id})

    key = ApiKey.objects.get(name="CI")
    raw = re.search(r'value="(stc_[0-9A-Za-z]{38})"', response.content.decode()).group(1)
    assert ApiKey.objects.authenticate(raw) == key
    assert key.project == project and key.created_by == editor
    assert "shown only once" in response.content.decode()
    assert "no-store" in response["Cache-Control"]


def test_create_key_in_a_new_project_makes_the_user_its_owner(client_for, owner):
    client_for(owner).post("/api-keys/create/", {"name": "Bot", "project": "new", "new_project_name": " Chat bot "})

    key = ApiKey.objects.get(name="Bot")
    assert key.project.name == "Chat bot"
    membership = Membership.objects.get(project=key.project)
    assert (membership.user, membership.role, membership.imported_at is not None) == (owner, Role.OWNER, True)


def test_create_key_new_project_needs_a_name(client_for, owner):
    response = client_for(owner).post("/api-keys/create/", {"name": "Bot", "project": "new", "new_project_name": ""})

    assert response.status_code == 422
    assert "Enter a name for the new project." in response.content.decode()
    assert 'value="Bot"' in response.content.decode()
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize("who", ["viewer", "outsider"])
def test_create_key_refuses_a_project_the_user_cannot_write(client_for, request, project, who):
    user = request.getfixturevalue(who)

    response = client_for(user).post("/api-keys/create/", {"name": "Sneaky", "project": project.project_id})

    assert response.status_code == 422
    assert "Select a valid choice." in response.content.decode()
    assert not ApiKey.objects.filter(name="Sneaky").exists()


def test_create_key_with_htmx_returns_the_dialog_and_reloads_the_table(client_for, owner, project):
    response = client_for(owner).post(
        "/api-keys/create/", {"name": "Live", "project": project.project_id}, headers={"HX-Request": "true"}
    )

    assert "<html" not in response.content.decode()
    assert response["HX-Trigger"] == '{"keys-changed": {}}'


# Detail, rename, revoke


def test_detail_shows_the_key(client_for, viewer, key):
    html = client_for(viewer).get(f"/api-keys/{key.pk}/").content.decode()

    assert f'<code id="detail-key">{key.masked}</code>' in html
    assert key.project.project_id in html
    assert "<dd>Viewer</dd>" in html
    assert f"/api-keys/{key.pk}/revoke/" not in html


@pytest.mark.parametrize("action", ["", "rename/", "revoke/"])
@pytest.mark.parametrize("method", ["get", "post"])
def test_every_key_url_is_404_for_an_outsider(client_for, outsider, key, action, method):
    response = getattr(client_for(outsider), method)(f"/api-keys/{key.pk}/{action}", {"name": "x"})

    assert response.status_code == 404
    key.refresh_from_db()
    assert (key.name, key.revoked_at) == ("Team key", None)


def test_key_of_a_project_the_member_has_not_imported_is_404(client_for, owner):
    project = make_project()
    add_member(project, owner, Role.OWNER, imported=False)
    key, _ = make_key(project)

    assert client_for(owner).get(f"/api-keys/{key.pk}/").status_code == 404


@pytest.mark.parametrize("action", ["rename/", "revoke/"])
def test_viewer_cannot_change_a_key(client_for, viewer, key, action):
    response = client_for(viewer).post(f"/api-keys/{key.pk}/{action}", {"name": "x"})

    assert response.status_code == 403
    key.refresh_from_db()
    assert (key.name, key.revoked_at) == ("Team key", None)


def test_editor_renames_a_key(client_for, editor, key):
    response = client_for(editor).post(f"/api-keys/{key.pk}/rename/", {"name": "Renamed"})

    assert response.status_code == 302 and response["Location"] == "/api-keys/"
    key.refresh_from_db()
    assert key.name == "Renamed"


def test_rename_with_an_empty_name_keeps_the_key(client_for, editor, key):
    response = client_for(editor).post(f"/api-keys/{key.pk}/rename/", {"name": "  "})

    assert response.status_code == 422
    assert "This field is required." in response.content.decode()
    key.refresh_from_db()
    assert key.name == "Team key"


def test_revoke_asks_for_confirmation_first(client_for, owner, key):
    response = client_for(owner).get(f"/api-keys/{key.pk}/revoke/")

    assert "This cannot be undone." in response.content.decode()
    key.refresh_from_db()
    assert key.revoked_at is None


def test_revoke_removes_the_key_from_the_list_and_it_stops_working(client_for, owner, project):
    key, raw = make_key(project, name="Doomed")
    client = client_for(owner)

    response = client.post(f"/api-keys/{key.pk}/revoke/")

    assert response["Location"] == "/api-keys/"
    assert "Doomed" not in row_names(client.get("/api-keys/"))
    assert ApiKey.objects.authenticate(raw) is None
    assert ApiKey.objects.filter(pk=key.pk).exists()  # kept, not deleted
    assert client.get(f"/api-keys/{key.pk}/").status_code == 404


def test_revoke_with_htmx_closes_the_modal_and_reloads_the_table(client_for, owner, key):
    response = client_for(owner).post(f"/api-keys/{key.pk}/revoke/", headers={"HX-Request": "true"})

    assert response["HX-Retarget"] == "#messages"
    assert response["HX-Trigger"] == '{"keys-changed": {}, "close-modal": {}}'
    assert "Key “Team key” revoked. It no longer works." in response.content.decode()
    assert AuditEvent.objects.filter(action="api_key.revoke", object_id=str(key.pk)).count() == 1


def test_revoking_twice_is_harmless(client_for, owner, key):
    client = client_for(owner)
    client.post(f"/api-keys/{key.pk}/revoke/")

    assert client.post(f"/api-keys/{key.pk}/revoke/").status_code == 404
    assert AuditEvent.objects.filter(action="api_key.revoke").count() == 1


def test_forms_need_csrf(owner, key):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)

    assert client.post(f"/api-keys/{key.pk}/revoke/").status_code == 403
    key.refresh_from_db()
    assert key.revoked_at is None


def test_table_rows_have_one_cell_per_column(client_for, owner, key):
    html = client_for(owner).get("/api-keys/").content.decode()

    head = html[html.index("<thead") : html.index("</thead>")]
    row = html[html.index("<tbody") : html.index("</tr>", html.index("<tbody"))]
    assert len(re.findall(r"<th[ >]", head)) == row.count("<td") == 7


@pytest.mark.parametrize(
    ("tier", "billing_state", "upgrade"),
    [
        (Tier.FREE, BillingState.NONE, False),
        (Tier.FREE, BillingState.PREPAYMENT_DUE, False),
        (Tier.TIER_1, BillingState.ACTIVE, True),
        (Tier.TIER_3, BillingState.ACTIVE, False),
    ],
)
def test_table_quota_cell_matches_the_shared_include(client_for, owner, tier, billing_state, upgrade):
    from django.template.loader import render_to_string

    project = make_project(owner, tier=tier, billing_state=billing_state, upgrade_available=upgrade)
    make_key(project)

    html = client_for(owner).get("/api-keys/").content.decode()

    in_table = re.search(r'<span class="quota-tier".*?</span>\n</td>', html, re.S).group(0).removesuffix("\n</td>")
    shared = render_to_string("studio/includes/quota_tier.html", {"project": project}).strip()
    assert " ".join(in_table.split()) == " ".join(shared.split())


def test_field_errors_are_the_target_of_their_inputs_aria_describedby(client_for, editor, key):
    """X12: Django points an invalid input's aria-describedby at id_<field>_error; that id exists."""
    html = client_for(editor).post(f"/api-keys/{key.pk}/rename/", {"name": "  "}).content.decode()

    described = re.findall(r'<input[^>]*name="name"[^>]*aria-describedby="([^"]+)"', html)
    assert described == ["id_name_error"]
    assert re.findall(r'<p class="field-error" id="([^"]+)">', html) == ["id_name_error"]
