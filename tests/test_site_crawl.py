"""Every link and form a person is offered leads somewhere (no 404 or 500), and every page and
dialog fragment they reach is valid HTML (the Nu HTML checker, vnu.jar from the npm registry).

The crawl starts at each persona's home pages and follows, breadth first, every `href`, every
form `action` and every htmx `hx-get`/`data-hx-get` on our own site, as that person. Pages under
/admin/ are requested but not crawled further (Django's admin is not ours to validate).
"""

import json
import os
import re
import shutil
import subprocess
from collections import deque
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit

import pytest
from django.test import Client

from tests.conftest import skip_or_fail
from tests.personas import the_world

VNU_JAR = Path(__file__).resolve().parent.parent / "node_modules" / "vnu-jar" / "build" / "dist" / "vnu.jar"
LANGUAGES = ["en", "ja"]
PERSONAS = [None, "owner", "editor", "viewer", "staff"]  # None: signed out
MAX_PAGES = 150


class Offers(HTMLParser):
    """The URLs a page offers: links, form actions (with their method), htmx GETs."""

    def __init__(self):
        super().__init__()
        self.urls: list[tuple[str, str]] = []  # (method, url)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href"):
            self.urls.append(("get", attrs["href"]))
        if tag == "form":
            self.urls.append(((attrs.get("method") or "get").lower(), attrs.get("action") or ""))
        for name in ("hx-get", "data-hx-get"):
            if attrs.get(name):
                self.urls.append(("htmx", attrs[name]))


def offered(html: str, page_url: str) -> list[tuple[str, str]]:
    parser = Offers()
    parser.feed(html)
    found = []
    for method, url in parser.urls:
        absolute = urldefrag(urljoin(page_url, url)).url
        parts = urlsplit(absolute)
        if parts.scheme not in ("", "http") or parts.netloc not in ("", "testserver"):
            continue  # another site (none today; mailto: and the like)
        found.append((method, parts.path + (f"?{parts.query}" if parts.query else "")))
    return found


def crawl(client: Client, start: list[str]) -> tuple[dict[str, str], list[str]]:
    """Returns (page url → HTML, as served) and the problems: offered URLs answering 404 or 500."""
    pages, problems, seen = {}, [], set()
    queue = deque(("get", url, "start") for url in start)
    while queue and len(pages) < MAX_PAGES:
        method, url, source = queue.popleft()
        if (method, url) in seen:
            continue
        seen.add((method, url))
        headers = {"HTTP_HX_REQUEST": "true"} if method == "htmx" else {}
        # A POST form is checked with a GET: the URL must exist (405 or a confirmation page is
        # fine); posting every form would change the very data the crawl walks.
        response = client.get(url, **headers)
        if response.status_code in (404, 500):
            problems.append(f"{method.upper()} {url} → {response.status_code} (offered by {source})")
            continue
        if response.status_code in (301, 302) and method != "post":
            queue.append(("get", response["Location"], url))
            continue
        is_html = response.get("Content-Type", "").startswith("text/html")
        if response.status_code not in (200, 422) or not is_html or method == "post":
            continue
        key = f"{url} (htmx)" if method == "htmx" else url
        pages[key] = response.content.decode()
        if url.startswith("/admin/"):
            continue
        for next_method, next_url in offered(pages[key], url):
            if next_url.startswith(("/static/", "/accounts/logout/", "/language/")):
                continue
            queue.append((next_method, next_url, url))
    return pages, problems


def crawl_as(persona, language, world) -> tuple[dict[str, str], list[str]]:
    client = Client(HTTP_ACCEPT_LANGUAGE=language)
    if persona is None:
        return crawl(client, ["/accounts/login/", "/accounts/signup/", "/accounts/password-reset/"])
    client.force_login(world["people"][persona])
    return crawl(client, ["/api-keys/", "/billing/", "/settings/"])


_pages_by_language: dict[str, dict[str, str]] = {}


def crawl_everyone(language) -> tuple[dict[str, str], list[str]]:
    world = the_world(language)
    pages, problems = {}, []
    for persona in PERSONAS:
        found, wrong = crawl_as(persona, language, world)
        pages.update({f"{persona or 'signed-out'} {url}": html for url, html in found.items()})
        problems += [f"{persona or 'signed-out'}: {problem}" for problem in wrong]
    _pages_by_language[language] = pages
    return pages, problems


@pytest.mark.django_db
@pytest.mark.parametrize("language", LANGUAGES)
def test_no_offered_link_or_form_answers_404_or_500(language):
    pages, problems = crawl_everyone(language)

    assert not problems, "\n".join(problems)
    assert len(pages) > 40  # the crawl reached the site, not just the start pages


def as_document(html: str, language: str) -> str:
    """An htmx fragment checked as the body of a minimal document."""
    if html.lstrip().lower().startswith("<!doctype"):
        return html
    head = '<meta charset="utf-8"><title>fragment</title>'
    return f'<!doctype html><html lang="{language}"><head>{head}</head><body>{html}</body></html>'


@pytest.mark.django_db
@pytest.mark.parametrize("language", LANGUAGES)
def test_every_page_and_fragment_is_valid_html(language, tmp_path):
    if not VNU_JAR.exists() or shutil.which("java") is None:
        skip_or_fail("needs Java and node_modules/vnu-jar (npm ci)", required_by="REQUIRE_HTML_CHECKER")
    pages = _pages_by_language.get(language) or crawl_everyone(language)[0]
    names = {}
    for index, (url, html) in enumerate(sorted(pages.items())):
        path = tmp_path / f"page{index:03}.html"
        path.write_text(as_document(html, language))
        names[path.name] = url

    result = subprocess.run(
        [
            "java",
            "-Xss4m",
            "-jar",
            str(VNU_JAR),
            "--errors-only",
            "--format",
            "json",
            *map(str, sorted(tmp_path.iterdir())),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "LC_ALL": "C.UTF-8"},
    )
    messages = json.loads(result.stderr or '{"messages": []}')["messages"]
    errors = [
        f"{names[Path(m['url']).name]}:{m.get('lastLine', '?')}: {m['message']}"
        for m in messages
        if m["type"] == "error"
    ]
    assert not errors, f"{len(errors)} HTML errors:\n" + "\n".join(errors[:200])


class VisibleText(HTMLParser):
    """Text a reader sees or hears: text nodes and the labelling attributes, not code or scripts,
    and not what is marked as written in another language (the 'English' of the language switch)."""

    SKIP = {"script", "style", "code", "pre", "template"}
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
    ATTRIBUTES = ("aria-label", "title", "placeholder", "alt")

    def __init__(self, language: str):
        super().__init__()
        self.language = language
        self.texts: list[str] = []
        self._open: list[tuple[str, bool]] = []  # (tag, skipped)

    @property
    def _skipping(self) -> bool:
        return any(skipped for _, skipped in self._open)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        other_language = attrs.get("lang") not in (None, self.language)
        if not self._skipping and not other_language:
            self.texts += [attrs[name].strip() for name in self.ATTRIBUTES if attrs.get(name)]
        if tag not in self.VOID:
            self._open.append((tag, tag in self.SKIP or other_language))

    def handle_endtag(self, tag):
        for index in range(len(self._open) - 1, -1, -1):
            if self._open[index][0] == tag:
                del self._open[index:]
                break

    def handle_data(self, data):
        if not self._skipping and data.strip():
            self.texts.append(" ".join(data.split()))


def english_msgids() -> set[str]:
    """Catalogue strings whose Japanese differs, without placeholders (those are checked by parts)."""
    import polib
    from django.conf import settings

    po = polib.pofile(str(Path(settings.BASE_DIR) / "locale/ja/LC_MESSAGES/django.po"))
    return {
        " ".join(e.msgid.split())
        for e in po
        if e.translated() and e.msgstr and e.msgstr != e.msgid and "%" not in e.msgid and "{" not in e.msgid
    }


def english_in(text: str, english: set[str], phrases: re.Pattern) -> list[str]:
    """English catalogue strings in one piece of visible text: the whole text or a part of it
    between separators, or any phrase of several words inside it."""
    parts = {text, *re.split(r"\s+[·:|—]\s+|:\s*$", text)}
    return sorted({part for part in parts if part in english} | set(phrases.findall(text)))


@pytest.mark.django_db
def test_japanese_pages_show_no_english_text_that_has_a_translation():
    pages = _pages_by_language.get("ja") or crawl_everyone("ja")[0]
    english = english_msgids()
    several_words = sorted((m for m in english if " " in m and len(m) >= 10), key=len, reverse=True)
    phrases = re.compile(r"\b(?:" + "|".join(map(re.escape, several_words)) + r")\b")
    found = set()
    for url, html in pages.items():
        parser = VisibleText("ja")
        parser.feed(html)
        found |= {f"{url}: {hit!r}" for text in parser.texts for hit in english_in(text, english, phrases)}

    assert not found, "\n".join(sorted(found))


@pytest.mark.django_db
def test_every_page_has_one_h1_and_a_description():
    """X12: a page reached without JavaScript (dialogs included) has its own h1 and a meta
    description; htmx fragments are parts of a page and have neither."""
    pages = _pages_by_language.get("en") or crawl_everyone("en")[0]
    wrong = []
    for url, html in sorted(pages.items()):
        if url.endswith("(htmx)") or " /admin/" in url:
            continue
        h1 = len(re.findall(r"<h1[\s>]", html))
        description = re.search(r'<meta name="description" content="([^"]+)">', html)
        if h1 != 1 or description is None:
            wrong.append(f"{url}: {h1} h1, description {'yes' if description else 'no'}")

    assert not wrong, "\n".join(wrong)
