import re

import pytest
from django.core import mail

from tests.factories import deliver_mail

pytestmark = pytest.mark.django_db


def test_sign_in_uses_the_standard_field_names(client, owner, password):
    response = client.post("/accounts/login/", {"username": "OWNER@example.com", "password": password})

    assert response["Location"] == "/api-keys/"
    assert int(client.session["_auth_user_id"]) == owner.pk


def test_repeated_failed_sign_ins_are_throttled(client, owner, password):
    for _ in range(5):
        client.post("/accounts/login/", {"username": owner.email, "password": "wrong"})

    response = client.post("/accounts/login/", {"username": owner.email, "password": password})

    assert response.status_code == 429
    assert "Too many failed sign-in attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_sign_out_is_a_post(client_for, owner):
    client = client_for(owner)

    assert client.get("/accounts/logout/").status_code == 405
    assert client.post("/accounts/logout/")["Location"] == "/accounts/login/"
    assert "_auth_user_id" not in client.session


def test_password_reset_sends_a_working_link(client, owner):
    client.post("/accounts/password-reset/", {"email": owner.email})

    deliver_mail()
    assert [m.to for m in mail.outbox] == [[owner.email]]
    assert mail.outbox[0].subject == "Reset your Studio Console password"
    link = re.search(r"http://testserver(/accounts/reset/\S+/)", mail.outbox[0].body).group(1)
    set_password_url = client.get(link)["Location"]
    response = client.post(
        set_password_url, {"new_password1": "brand-new-secret-9", "new_password2": "brand-new-secret-9"}
    )
    assert response["Location"] == "/accounts/reset/done/"
    owner.refresh_from_db()
    assert owner.check_password("brand-new-secret-9")


def test_password_reset_for_an_unknown_address_sends_nothing_and_says_the_same(client):
    response = client.post("/accounts/password-reset/", {"email": "nobody@example.com"})

    assert response["Location"] == "/accounts/password-reset/sent/"
    deliver_mail()
    assert mail.outbox == []


def test_language_switch_sets_cookie_and_saves_on_the_user(client_for, owner):
    response = client_for(owner).post("/language/", {"language": "ja", "next": "/api-keys/"})

    assert response["Location"] == "/api-keys/"
    assert response.cookies["django_language"].value == "ja"
    owner.refresh_from_db()
    assert owner.language == "ja"


def test_language_switch_ignores_an_offsite_next(client):
    response = client.post("/language/", {"language": "ja", "next": "https://evil.example/"})

    assert response["Location"] == "/"


def test_settings_saves_name_and_language(client_for, owner):
    response = client_for(owner).post("/settings/", {"full_name": "Ada Lovelace", "language": "ja"})

    assert response["Location"] == "/settings/"
    owner.refresh_from_db()
    assert (owner.full_name, owner.language) == ("Ada Lovelace", "ja")


def test_settings_refuses_an_unknown_language(client_for, owner):
    response = client_for(owner).post("/settings/", {"full_name": "", "language": "xx"})

    assert response.status_code == 422
    owner.refresh_from_db()
    assert owner.language == "en"


def test_throttling_counts_case_variants_of_one_email_together(client, owner, password):
    for variant in ("OWNER@example.com", "owner@EXAMPLE.com", " owner@example.com", "Owner@Example.com", owner.email):
        client.post("/accounts/login/", {"username": variant, "password": "wrong"})

    response = client.post("/accounts/login/", {"username": owner.email, "password": password})

    assert response.status_code == 429


def test_throttling_of_one_account_leaves_others_alone(client, owner, editor, password):
    for _ in range(5):
        client.post("/accounts/login/", {"username": owner.email, "password": "wrong"})

    response = client.post("/accounts/login/", {"username": editor.email, "password": password})

    assert response["Location"] == "/api-keys/"
