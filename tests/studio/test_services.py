import pytest

from studio.models import ApiKey, Membership, Project, Role
from studio.services import StudioError, import_projects, provision_defaults
from tests.concurrency import at_once
from tests.factories import add_member, make_project, make_user


def test_provision_defaults_creates_one_project_and_one_key(db):
    user = make_user("new@example.com")

    key, raw = provision_defaults(user)

    membership = Membership.objects.get(user=user)
    assert membership.role == Role.OWNER
    assert membership.imported_at is not None
    assert membership.project.name == "Default Gemini Project"
    assert [k.name for k in ApiKey.objects.filter(project=membership.project)] == ["Default API key"]
    assert ApiKey.objects.authenticate(raw) == key
    user.refresh_from_db()
    assert user.defaults_provisioned_at is not None


def test_provision_defaults_twice_creates_nothing_more(db):
    user = make_user("new@example.com")
    provision_defaults(user)

    assert provision_defaults(user) is None

    assert Project.objects.filter(memberships__user=user).count() == 1
    assert ApiKey.objects.filter(project__memberships__user=user).count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_provision_defaults_concurrently_creates_one_project():
    user = make_user("race@example.com")

    results, errors = at_once(lambda _: provision_defaults(user), 4)

    assert errors == []
    assert sum(result is not None for result in results) == 1
    assert Project.objects.filter(memberships__user=user).count() == 1
    assert ApiKey.objects.filter(project__memberships__user=user).count() == 1


def test_import_projects_imports_only_the_chosen(owner):
    first = make_project(name="First")
    second = make_project(name="Second")
    add_member(first, owner, Role.OWNER, imported=False)
    add_member(second, owner, Role.EDITOR, imported=False)

    imported = import_projects(owner, project_ids=[second.project_id])

    assert imported == [second]
    assert list(Project.objects.imported_by(owner)) == [second]
    assert list(Project.objects.not_imported_by(owner)) == [first]


@pytest.mark.parametrize("case", ["unknown", "already_imported", "someone_elses"])
def test_import_projects_refuses_what_is_not_importable_and_imports_nothing(owner, outsider, case):
    mine = make_project(name="Mine")
    add_member(mine, owner, Role.OWNER, imported=False)
    other = {
        "unknown": "gen-lang-client-9999999999",
        "already_imported": make_project(owner, name="Imported").project_id,
        "someone_elses": make_project(outsider, name="Theirs").project_id,
    }[case]

    with pytest.raises(StudioError):
        import_projects(owner, project_ids=[mine.project_id, other])

    assert Membership.objects.get(user=owner, project=mine).imported_at is None


def test_import_projects_needs_a_selection(owner):
    with pytest.raises(StudioError):
        import_projects(owner, project_ids=[])
