import pytest
from django.urls import reverse

from staff import roles


def test_groups_hold_exactly_the_listed_permissions(db):
    from django.contrib.auth.models import Group

    roles.ensure_groups()
    held = {
        g.name: sorted(f"{p.content_type.app_label}.{p.codename}" for p in g.permissions.all())
        for g in Group.objects.all()
    }
    assert held == {name: sorted(perms) for name, perms in roles.GROUPS.items()}


@pytest.mark.parametrize("method", ["get", "post"])
def test_home_is_404_to_anyone_but_staff(client, customer, method):
    assert getattr(client, method)(reverse("staff:home")).status_code == 404
    client.force_login(customer)
    assert getattr(client, method)(reverse("staff:home")).status_code == 404


def test_home_counts_the_queues_each_group_may_work_on(client, support, finance):
    client.force_login(support)
    page = client.get(reverse("staff:home")).content.decode()
    assert "Quota increases" in page and "Refund requests" not in page
    client.force_login(finance)
    page = client.get(reverse("staff:home")).content.decode()
    assert "Refund requests" in page and "Quota increases" not in page
