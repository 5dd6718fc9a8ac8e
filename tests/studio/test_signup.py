"""Sign-up by e-mailed link: no answer reveals whether an address has an account."""

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core import signing
from django.test import Client

from studio.models import ApiKey, Membership, Project, User
from studio.signup import make_token
from tests.concurrency import at_once
from tests.factories import PASSWORD, deliver_mail, make_user

pytestmark = pytest.mark.django_db

SIGNUP = {"email": "New.Person@Example.com", "accept_terms": "on"}
NEW_PASSWORD = {"new_password1": "a-long-pass-phrase", "new_password2": "a-long-pass-phrase"}
LINK = re.compile(r"http://testserver(/accounts/signup/confirm/[^/\s]+/)")
CSRF = re.compile(r'(name="csrfmiddlewaretoken" value="|"X-CSRFToken": ")[^"]+')
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def link_in(message) -> str:
    return LINK.search(message.body).group(1)


def test_signup_emails_a_link_and_creates_nothing_yet(client):
    response = client.post("/accounts/signup/", SIGNUP)

    assert response["Location"] == "/accounts/signup/sent/"
    assert not User.objects.exists()
    (message,) = deliver_mail()
    assert message.to == ["new.person@example.com"]
    assert message.subject == "Confirm your email to create your Studio Console account"
    link = link_in(message)
    assert message.body == (
        "Someone, hopefully you, asked to create a Studio Console account for new.person@example.com.\n\n"
        "To choose your password and finish creating your account, open this link:\n"
        f"http://testserver{link}\n\n"
        "The link works for 3 days.\n\n"
        "If you did not ask for this, ignore this email: no account is created.\n\n"
        "— The Studio Console team\n\n"
    )


def test_signup_link_creates_the_account_signs_in_and_shows_the_default_key_once(client):
    client.post("/accounts/signup/", SIGNUP)
    link = link_in(deliver_mail()[0])

    page = client.get(link)
    response = client.post(link, NEW_PASSWORD)

    assert "Your account will be new.person@example.com." in page.content.decode()
    user = User.objects.get()
    assert (user.email, user.language) == ("new.person@example.com", "en")
    assert user.terms_accepted_at is not None
    assert user.check_password("a-long-pass-phrase")
    assert int(client.session["_auth_user_id"]) == user.pk
    raw = re.search(r'value="(stc_[0-9A-Za-z]{38})"', response.content.decode()).group(1)
    key = ApiKey.objects.authenticate(raw)
    assert (key.name, key.project.name) == ("Default API key", "Default Gemini Project")
    assert "no-store" in response["Cache-Control"]
    assert Membership.objects.get(user=user).role == "owner"
    assert client.get("/api-keys/").content.decode().count(raw) == 0  # shown once


def test_signup_in_japanese_sends_a_japanese_link_and_saves_the_language(client):
    client.cookies["django_language"] = "ja"

    client.post("/accounts/signup/", SIGNUP)
    client.post(link_in(deliver_mail()[0]), NEW_PASSWORD)

    assert "— Studio Console チーム" in deliver_mail()[0].body
    assert User.objects.get().language == "ja"


def test_signup_answers_a_registered_address_exactly_like_a_new_one(client):
    make_user("taken@example.com")
    other = Client()

    registered = client.post("/accounts/signup/", {**SIGNUP, "email": "Taken@Example.com"}, follow=True)
    unregistered = other.post("/accounts/signup/", {**SIGNUP, "email": "free@example.com"}, follow=True)

    assert registered.redirect_chain == unregistered.redirect_chain == [("/accounts/signup/sent/", 302)]
    assert registered.status_code == unregistered.status_code == 200
    assert CSRF.sub("", registered.content.decode()) == CSRF.sub("", unregistered.content.decode())
    assert "We sent an email to the address you entered." in registered.content.decode()
    assert [m.to for m in deliver_mail()] == [["taken@example.com"], ["free@example.com"]]
    assert "_auth_user_id" not in client.session
    assert list(User.objects.values_list("email", flat=True)) == ["taken@example.com"]


def test_signup_with_a_registered_address_tells_the_owner(client):
    owner = make_user("taken@example.com")

    client.post("/accounts/signup/", {**SIGNUP, "email": "taken@example.com"})

    (message,) = deliver_mail()
    assert message.to == ["taken@example.com"]
    assert message.subject == "Someone tried to sign up with your email"
    assert message.body == (
        "Someone tried to create a Studio Console account with your email address taken@example.com. "
        "You already have an account, so nothing was changed.\n\n"
        "If it was you, sign in:\nhttp://testserver/accounts/login/\n\n"
        "Forgot your password? Choose a new one here:\nhttp://testserver/accounts/password-reset/\n\n"
        "If it was not you, you can ignore this email: your account is safe.\n\n"
        "— The Studio Console team\n\n"
    )
    owner.refresh_from_db()
    assert owner.check_password(PASSWORD)


def test_signup_with_a_registered_address_writes_in_the_owners_language(client):
    make_user("taken@example.com", language="ja")

    client.post("/accounts/signup/", {**SIGNUP, "email": "taken@example.com"}, headers={"Accept-Language": "en"})

    (message,) = deliver_mail()
    assert "— Studio Console チーム" in message.body
    assert "http://testserver/accounts/password-reset/" in message.body


def test_signup_requires_the_terms_and_keeps_what_was_typed(client):
    response = client.post("/accounts/signup/", {**SIGNUP, "accept_terms": ""})

    html = response.content.decode()
    assert response.status_code == 422
    assert "You must accept the Terms of Service to create an account." in html
    assert 'value="New.Person@Example.com"' in html
    assert deliver_mail() == []


def test_signup_link_expires_after_three_days(client):
    with time_machine.travel(NOW, tick=False) as clock:
        client.post("/accounts/signup/", SIGNUP)
        link = link_in(deliver_mail()[0])
        clock.shift(timedelta(days=3) - timedelta(seconds=1))
        assert client.get(link).status_code == 200
        clock.shift(timedelta(seconds=2))

        page = client.get(link)
        response = client.post(link, NEW_PASSWORD)

    assert page.status_code == response.status_code == 400
    assert "This sign-up link has expired. Sign up again to get a new one." in response.content.decode()
    assert not User.objects.exists()


def _tampered_signature(good: str) -> str:
    return good[:-1] + ("A" if good[-1] != "A" else "B")


def _another_address(good: str) -> str:
    """The payload of a link for another address under the good link's timestamp and signature."""
    _payload, timestamp, signature = good.split(":")
    other = make_token(email="attacker@example.com", language="en").split(":")[0]
    return f"{other}:{timestamp}:{signature}"


def _another_purpose(good: str) -> str:
    return signing.dumps({"email": "new.person@example.com", "language": "en"}, salt="another.purpose")


@pytest.mark.parametrize("forge", [_tampered_signature, _another_address, _another_purpose, lambda good: "hello"])
def test_signup_link_that_was_not_issued_is_refused(client, forge):
    token = forge(make_token(email="new.person@example.com", language="en"))

    page = client.get(f"/accounts/signup/confirm/{token}/")
    response = client.post(f"/accounts/signup/confirm/{token}/", NEW_PASSWORD)

    assert page.status_code == response.status_code == 400
    assert (
        "This sign-up link is not valid. Check that you opened the whole link from the email, or sign up again."
        in response.content.decode()
    )
    assert not User.objects.exists()


def test_signup_link_used_again_goes_to_sign_in(client):
    client.post("/accounts/signup/", SIGNUP)
    link = link_in(deliver_mail()[0])
    client.post(link, NEW_PASSWORD)
    client.logout()

    again = client.get(link)
    resubmitted = client.post(link, {"new_password1": "another-pass-phrase", "new_password2": "another-pass-phrase"})

    assert again["Location"] == resubmitted["Location"] == "/accounts/login/"
    page = client.get("/accounts/login/").content.decode()
    assert "An account with this email already exists. Sign in, or reset your password." in page
    assert User.objects.get().check_password("a-long-pass-phrase")
    assert (Project.objects.count(), ApiKey.objects.count()) == (1, 1)
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize(
    ("password1", "password2", "message"),
    [
        ("short", "short", "This password is too short. It must contain at least 10 characters."),
        ("password123", "password123", "This password is too common."),
        ("new.person.example", "new.person.example", "The password is too similar to the email address."),
        ("a-long-pass-phrase", "a-different-phrase", "The two password fields didn’t match."),
    ],
)
def test_choose_password_enforces_the_rules_and_keeps_the_link(client, password1, password2, message):
    client.post("/accounts/signup/", SIGNUP)
    link = link_in(deliver_mail()[0])

    refused = client.post(link, {"new_password1": password1, "new_password2": password2})
    accepted = client.post(link, NEW_PASSWORD)

    html = refused.content.decode()
    assert refused.status_code == 422
    assert f'<p class="field-error" id="id_new_password2_error">{message}</p>' in html
    assert "Your account will be new.person@example.com." in html
    assert accepted.status_code == 200
    assert User.objects.get().check_password("a-long-pass-phrase")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_choose_password_submitted_twice_at_once_creates_one_account():
    link = "/accounts/signup/confirm/{}/".format(make_token(email="race@example.com", language="en"))

    responses, errors = at_once(lambda _: Client().post(link, NEW_PASSWORD), 2)

    assert errors == []
    assert sorted(r.status_code for r in responses) == [200, 302]
    assert [r["Location"] for r in responses if r.status_code == 302] in (["/api-keys/"], ["/accounts/login/"])
    assert User.objects.get().email == "race@example.com"
    assert (Project.objects.count(), ApiKey.objects.count()) == (1, 1)
