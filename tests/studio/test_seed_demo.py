from django.core.management import call_command

from studio.models import ApiKey, Membership, Project, User


def quota_states(user):
    keys = ApiKey.objects.visible_to(user)
    return sorted({(k.project.quota_state, k.project.upgrade_available) for k in keys})


def test_seed_demo_is_idempotent_and_shows_every_quota_state(db, capsys):
    call_command("seed_demo", "--allow-without-debug")
    counts = (User.objects.count(), Project.objects.count(), Membership.objects.count(), ApiKey.objects.count())

    call_command("seed_demo", "--allow-without-debug")

    assert (User.objects.count(), Project.objects.count(), Membership.objects.count(), ApiKey.objects.count()) == counts
    developer = User.objects.get(email="dev@example.com")
    assert developer.check_password("studio-demo")
    assert User.objects.get(email="staff@example.com").is_staff
    # The main billing account qualifies for Tier 2, so its Tier 1 projects can upgrade.
    assert quota_states(developer) == [
        ("action_required", False),
        ("set_up_billing", False),
        ("tier_1", False),
        ("tier_1", True),
        ("tier_2", False),
        ("tier_3", False),
    ]
    assert Project.objects.not_imported_by(developer).count() == 3
    assert "dev@example.com / studio-demo" in capsys.readouterr().out


def test_demo_developer_is_a_viewer_somewhere(db):
    call_command("seed_demo", "--allow-without-debug")

    roles = set(Membership.objects.filter(user__email="dev@example.com").values_list("role", flat=True))

    assert roles == {"owner", "editor", "viewer"}


def test_seed_demo_refuses_to_run_without_debug(db, settings):
    import pytest
    from django.core.management.base import CommandError

    settings.DEBUG = False

    with pytest.raises(CommandError, match="only with DEBUG on"):
        call_command("seed_demo")
    assert not User.objects.exists()
