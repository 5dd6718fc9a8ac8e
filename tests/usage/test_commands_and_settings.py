from decimal import Decimal as D

import pytest
from django.core.management import call_command

from studio.models import Tier, User
from tests.factories import make_key, make_project
from usage.demo import DEMO_FLEET_TOKEN
from usage.models import FleetToken, UsageEvent


def test_seed_demo_prints_a_working_fleet_token(db, capsys):
    call_command("seed_demo", "--allow-without-debug")
    call_command("seed_demo", "--allow-without-debug")

    out = capsys.readouterr().out
    assert f"Bearer {DEMO_FLEET_TOKEN}" in out
    assert FleetToken.objects.authenticate(DEMO_FLEET_TOKEN).name == "Demo fleet (make run)"
    assert FleetToken.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_simulate_traffic_sends_checks_and_reports_to_a_running_server(live_server, capsys):
    call_command("seed_demo", "--allow-without-debug")

    call_command("simulate_traffic", "--url", live_server.url, "--seconds", "1", "--rps", "40", "--seed", "3")

    out = capsys.readouterr().out
    admitted = int(out.split("admitted ")[1].split(",")[0])
    assert admitted > 10
    assert UsageEvent.objects.exclude(event_id__startswith="demo-").count() == admitted  # besides the demo's history
    assert f"usage events accepted {admitted}" in out

    # The demo's story: the job charges the traffic, and the prototype's promotional credit pays first.
    from billing import ledger
    from billing.models import BillingAccount

    call_command("charge_usage", verbosity=0)
    prototype = BillingAccount.objects.get(display_name="Prototype billing")
    balances = ledger.balances(prototype)
    assert balances.total_spend > 0
    assert balances.credit_remaining == max(D("0.10") - balances.total_spend, D(0))
    assert balances.amount_due == max(balances.total_spend - D("0.10"), D(0))


def test_settings_links_a_paid_key_to_the_studio_and_unlinks_it(client_for, owner):
    paid_key, _ = make_key(make_project(owner, tier=Tier.TIER_1), name="Paid one")
    free_key, _ = make_key(make_project(owner), name="Free one")
    client = client_for(owner)

    page = client.get("/settings/").content.decode()
    assert "Paid one" in page and "Free one" not in page

    client.post("/settings/", {"full_name": "", "language": "en", "studio_api_key": paid_key.pk})
    assert User.objects.get(pk=owner.pk).studio_api_key == paid_key

    refused = client.post("/settings/", {"full_name": "", "language": "en", "studio_api_key": free_key.pk})
    assert refused.status_code == 422
    client.post("/settings/", {"full_name": "", "language": "en", "studio_api_key": ""})
    assert User.objects.get(pk=owner.pk).studio_api_key is None


def test_settings_refuses_someone_elses_key(client_for, owner, outsider):
    theirs, _ = make_key(make_project(outsider, tier=Tier.TIER_1))

    response = client_for(owner).post("/settings/", {"full_name": "", "language": "en", "studio_api_key": theirs.pk})

    assert response.status_code == 422
    assert User.objects.get(pk=owner.pk).studio_api_key is None


def studio_key_audit(user):
    from studio.models import AuditEvent

    return list(
        AuditEvent.objects.filter(action__startswith="studio_key.", object_id=str(user.pk))
        .order_by("pk")
        .values_list("actor_id", "actor_kind", "action", "object_type", "before", "after")
    )


def test_linking_changing_and_unlinking_the_studio_key_each_write_one_audit_event(client_for, owner):
    first, _ = make_key(make_project(owner, tier=Tier.TIER_1), name="First paid")
    second, _ = make_key(make_project(owner, tier=Tier.TIER_2), name="Second paid")
    client = client_for(owner)

    def save(key):
        response = client.post(
            "/settings/", {"full_name": "", "language": "en", "studio_api_key": key.pk if key else ""}
        )
        assert (response.status_code, response["Location"]) == (302, "/settings/")

    save(first)
    save(first)  # saved again unchanged: no event
    save(second)
    save(None)
    save(None)  # nothing linked, nothing to unlink: no event

    none = {"key_id": None, "key_prefix": None}
    one = {"key_id": first.pk, "key_prefix": first.prefix}
    two = {"key_id": second.pk, "key_prefix": second.prefix}
    assert studio_key_audit(owner) == [
        (owner.pk, "user", "studio_key.link", "studio.user", none, one),
        (owner.pk, "user", "studio_key.link", "studio.user", one, two),
        (owner.pk, "user", "studio_key.unlink", "studio.user", two, none),
    ]
    assert User.objects.get(pk=owner.pk).studio_api_key is None


def test_saving_other_settings_writes_no_studio_key_event(client_for, owner):
    key, _ = make_key(make_project(owner, tier=Tier.TIER_1))
    owner.link_studio_key(key, by=owner)
    before = studio_key_audit(owner)

    client_for(owner).post("/settings/", {"full_name": "Ada", "language": "ja", "studio_api_key": key.pk})

    saved = User.objects.get(pk=owner.pk)
    assert (saved.full_name, saved.language, saved.studio_api_key) == ("Ada", "ja", key)
    assert studio_key_audit(owner) == before
    assert len(before) == 1


def test_a_refused_studio_key_changes_nothing_and_writes_no_event(client_for, owner, outsider):
    theirs, _ = make_key(make_project(outsider, tier=Tier.TIER_1))

    response = client_for(owner).post("/settings/", {"full_name": "", "language": "en", "studio_api_key": theirs.pk})

    assert response.status_code == 422
    assert studio_key_audit(owner) == []
