import shutil
from pathlib import Path

import polib
import pytest
from django.conf import settings
from django.core import mail
from django.core.management import call_command

from tests.factories import deliver_mail, make_key, make_project

PO = Path(settings.BASE_DIR) / "locale/ja/LC_MESSAGES/django.po"
MO = PO.with_suffix(".mo")


def entries(po):
    return {(e.msgctxt, e.msgid, e.msgid_plural) for e in po if not e.obsolete}


def test_japanese_catalogue_is_complete():
    po = polib.pofile(str(PO))

    assert [e.msgid for e in po if not e.translated() or "fuzzy" in e.flags] == []


def test_compiled_catalogue_matches_the_source():
    po, mo = polib.pofile(str(PO)), polib.mofile(str(MO))

    assert {(e.msgid, e.msgstr or e.msgstr_plural.get(0)) for e in po if not e.obsolete} == {
        (e.msgid, e.msgstr or e.msgstr_plural.get(0)) for e in mo if e.msgid
    }


@pytest.mark.skipif(shutil.which("xgettext") is None, reason="needs GNU gettext (xgettext)")
def test_every_string_in_the_code_is_in_the_catalogue(tmp_path, settings, monkeypatch):
    base = Path(settings.BASE_DIR)
    for folder in ("studio", "billing", "usage", "templates"):
        shutil.copytree(base / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "migrations"))
    shutil.copytree(base / "locale", tmp_path / "locale")
    settings.LOCALE_PATHS = [tmp_path / "locale"]
    monkeypatch.chdir(tmp_path)

    call_command("makemessages", locale=["ja"], no_obsolete=True, verbosity=0)

    extracted = polib.pofile(str(tmp_path / "locale/ja/LC_MESSAGES/django.po"))
    assert sorted(entries(extracted) - entries(polib.pofile(str(PO))), key=str) == []


@pytest.fixture
def japanese_owner(owner):
    owner.language = "ja"
    owner.save()
    return owner


def test_saved_language_wins_over_the_browser(client_for, japanese_owner):
    make_key(make_project(japanese_owner))

    html = client_for(japanese_owner).get("/api-keys/", headers={"Accept-Language": "en"}).content.decode()

    assert '<html lang="ja">' in html
    assert "<h1>API キー</h1>" in html
    assert "課金を設定" in html


def test_form_errors_are_translated(client):
    client.cookies["django_language"] = "ja"

    response = client.post("/accounts/signup/", {"email": "not-an-email", "password": "x"})

    html = response.content.decode()
    assert "有効なメールアドレスを入力してください。" in html  # Django's own catalogue
    assert "アカウントを作成するには、利用規約に同意する必要があります。" in html


def test_password_reset_email_in_japanese(client, owner):
    client.cookies["django_language"] = "ja"

    client.post("/accounts/password-reset/", {"email": owner.email})

    deliver_mail()
    (message,) = mail.outbox
    assert message.subject == "Studio Console のパスワード再設定"
    assert "新しいパスワードを設定するには、次のリンクを開いてください。" in message.body
    assert "/accounts/reset/" in message.body
