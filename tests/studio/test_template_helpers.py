"""The shared template helpers: `usd` (every amount of money), `url_once`, `repeat_block`."""

from decimal import Decimal

import pytest
from django.conf import settings
from django.template import Context, Template
from django.utils import translation

from studio.templatetags.money import usd


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (Decimal("0"), "USD 0.00"),
        (Decimal("12.3"), "USD 12.30"),
        (Decimal("12.345"), "USD 12.35"),  # half-up, as billing.money rounds
        (Decimal("12.344999"), "USD 12.34"),  # rounded once, from the micro-dollars
        (Decimal("0.005"), "USD 0.01"),
        (Decimal("-12.345"), "USD -12.35"),
        (Decimal("-0.004"), "USD 0.00"),  # no "-0.00"
        (Decimal("999.995"), "USD 1,000.00"),
        (Decimal("1234567.891"), "USD 1,234,567.89"),
        (Decimal("-1234.5"), "USD -1,234.50"),
        (Decimal("1E+30"), "USD 1,000,000,000,000,000,000,000,000,000,000.00"),
        (300, "USD 300.00"),
        (0.1 + 0.2, "USD 0.30"),  # a float is read as it prints, never as its binary value
        ("12.5", "USD 12.50"),
        (None, ""),
        ("", ""),
        ("twelve", ""),
        (True, ""),
        (Decimal("NaN"), ""),
        (Decimal("-Infinity"), ""),
    ],
)
def test_usd_formats_every_amount_one_way(amount, shown):
    assert usd(amount) == shown


@pytest.mark.parametrize("language", ["en", "ja"])
def test_usd_reads_the_same_in_english_and_japanese(language):
    template = Template("{% load money %}{{ amount|usd }} · {{ refund|usd }}")

    with translation.override(language):
        html = template.render(Context({"amount": Decimal("1234.5"), "refund": Decimal("-0.5")}))

    assert html == "USD 1,234.50 · USD -0.50"


def test_no_template_formats_money_another_way():
    templates = settings.BASE_DIR / "templates"
    others = sorted(
        f"{path.relative_to(templates)}: {line.strip()[:60]}"
        for path in [*templates.rglob("*.html"), *templates.rglob("*.txt")]
        for line in path.read_text().splitlines()
        if "floatformat" in line or "USD {{" in line
    )

    assert others == []


def test_url_once_reverses_a_url_once_per_render(monkeypatch):
    from studio.templatetags import url_once as library

    calls = []
    real_reverse = library.reverse
    monkeypatch.setattr(library, "reverse", lambda name: calls.append(name) or real_reverse(name))
    row = Template('{% load url_once %}{% url_once "billing:setup" as setup_url %}{{ setup_url }}')
    page = Template("{% for project in projects %}{% include row %};{% endfor %}")

    first = page.render(Context({"projects": [1, 2, 3], "row": row}))
    second = page.render(Context({"projects": [1], "row": row}))

    assert (first, second) == ("/billing/setup/;/billing/setup/;/billing/setup/;", "/billing/setup/;")
    assert calls == ["billing:setup", "billing:setup"]  # once per render


def test_repeat_block_renders_the_most_derived_content_again(tmp_path, settings):
    (tmp_path / "base.html").write_text(
        '{% load blocks %}<title>{% block name %}Base{% endblock %}</title><h2>{% repeat_block "name" %}</h2>'
    )
    (tmp_path / "child.html").write_text('{% extends "base.html" %}{% block name %}Child {{ who }}{% endblock %}')
    (tmp_path / "plain.html").write_text('{% extends "base.html" %}')
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [tmp_path]}]
    from django.template.loader import render_to_string

    assert render_to_string("child.html", {"who": "<b>"}) == "<title>Child &lt;b&gt;</title><h2>Child &lt;b&gt;</h2>"
    assert render_to_string("plain.html") == "<title>Base</title><h2>Base</h2>"
