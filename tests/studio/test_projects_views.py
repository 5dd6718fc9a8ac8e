import re

from studio.models import Membership, Role
from tests.factories import add_member, make_project


def listed(response):
    return re.findall(r'name="projects" value="([^"]+)"', response.content.decode())


def importable(user, *names, role=Role.OWNER):
    projects = [make_project(name=name) for name in names]
    for project in projects:
        add_member(project, user, role, imported=False)
    return projects


def test_import_lists_only_the_users_projects_not_yet_imported(client_for, owner, outsider):
    alpha, beta = importable(owner, "Alpha", "Beta")
    make_project(owner, name="Already imported")
    importable(outsider, "Someone else's")

    response = client_for(owner).get("/projects/import/")

    assert listed(response) == [alpha.project_id, beta.project_id]


def test_import_search_matches_name_or_id(client_for, owner):
    alpha, beta = importable(owner, "Alpha", "Beta")
    client = client_for(owner)

    assert listed(client.get("/projects/import/?q=alp")) == [alpha.project_id]
    assert listed(client.get(f"/projects/import/?q={beta.project_id[-6:]}")) == [beta.project_id]
    response = client.get("/projects/import/?q=zzz")
    assert listed(response) == []
    assert "No project matches “zzz”." in response.content.decode()


def test_import_search_with_htmx_returns_only_the_results(client_for, owner):
    (alpha,) = importable(owner, "Alpha")

    response = client_for(owner).get(
        "/projects/import/?q=Al", headers={"HX-Request": "true", "HX-Target": "import-results"}
    )

    html = response.content.decode()
    assert html.lstrip().startswith('<div id="import-results">')
    assert listed(response) == [alpha.project_id]


def test_import_several_projects(client_for, owner):
    alpha, _beta, gamma = importable(owner, "Alpha", "Beta", "Gamma")

    response = client_for(owner).post("/projects/import/", {"projects": [alpha.project_id, gamma.project_id]})

    assert response["Location"] == "/api-keys/"
    imported = Membership.objects.filter(user=owner, imported_at__isnull=False).values_list("project__name", flat=True)
    assert sorted(imported) == ["Alpha", "Gamma"]


def test_import_of_a_project_that_is_not_importable_changes_nothing(client_for, owner, outsider):
    (alpha,) = importable(owner, "Alpha")
    theirs = make_project(outsider, name="Theirs")

    response = client_for(owner).post("/projects/import/", {"projects": [alpha.project_id, theirs.project_id]})

    assert response.status_code == 422
    assert "Some of the selected projects can no longer be imported." in response.content.decode()
    assert Membership.objects.get(user=owner, project=alpha).imported_at is None
    assert not Membership.objects.filter(user=owner, project=theirs).exists()


def test_import_with_nothing_selected_says_so(client_for, owner):
    importable(owner, "Alpha")

    response = client_for(owner).post("/projects/import/", {})

    assert response.status_code == 422
    assert "Select at least one project to import." in response.content.decode()


def test_imported_project_can_then_get_keys(client_for, owner):
    (alpha,) = importable(owner, "Alpha")
    client = client_for(owner)
    client.post("/projects/import/", {"projects": [alpha.project_id]})

    html = client.get("/api-keys/create/").content.decode()

    assert f'<option value="{alpha.project_id}"' in html


def test_import_list_query_count_does_not_grow_with_rows(client_for, owner, django_assert_num_queries):
    client = client_for(owner)
    importable(owner, "One")
    with django_assert_num_queries(4):  # session, user, prepayment notice, projects
        assert len(listed(client.get("/projects/import/"))) == 1

    importable(owner, "Two", "Three")
    with django_assert_num_queries(4):  # session, user, prepayment notice, projects
        assert len(listed(client.get("/projects/import/"))) == 3
