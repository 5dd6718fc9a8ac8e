"""The keys table's rows, written by the key_rows tag, are the markup the template loop wrote before (issue 14):
the same rows rendered by both, for every quota state and role, in English and Japanese, in the reader's zone."""

import re

import pytest
from django.template import engines
from django.test import RequestFactory
from django.utils import timezone, translation
from django_tables2 import RequestConfig

from studio.models import ApiKey
from studio.tables import ApiKeyTable
from tests.personas import the_world

# The template loop key_rows replaced (studio/api_keys_table.html before it), kept here as the reference.
REFERENCE = """{% load i18n %}{% translate "Copy key prefix" as copy_label %}{% translate "Free" as free %}\
{% translate "Paid" as paid %}{% translate "Rename" as rename %}{% translate "Revoke" as revoke %}\
{% translate "View only" as view_only %}{% translate "Usage" as usage %}\
{% url 'api-keys' as keys_url %}{% url 'usage:dashboard' as usage_url %}\
{% for row in rows %}{% with record=row.record project=row.record.project pk=row.record.pk|stringformat:"d" %}
  <tr class="{% cycle 'even' 'odd' %}">
    <td><span class="key-cell"><code id="key-{{ pk }}">{{ record.prefix }}…{{ record.last4 }}</code><button \
type="button" class="icon-button copy" data-copy="{{ record.prefix }}" title="{{ copy_label }}" \
aria-label="{{ copy_label }}"><svg viewBox="0 0 24 24" width="16" height="16" aria-hidden="true" focusable="false">\
<path fill="currentColor" d="M16 1H4a2 2 0 0 0-2 2v14h2V3h12V1zm3 4H8a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h11a2 2 0 0 0 \
2-2V7a2 2 0 0 0-2-2zm0 16H8V7h11v14z"/></svg></button></span></td>
    <td><a href="{{ keys_url }}{{ pk }}/">{{ record.name }}</a></td>
    <td><span class="project-cell">{{ project.name }}<small>{{ project.project_id }}</small></span></td>
    <td>{{ record.created_at|date:"SHORT_DATE_FORMAT" }}</td>
    <td>{% include "studio/includes/quota_tier.html" with read_only=record.read_only %}</td>
    <td>{% if project.is_paid %}{{ paid }}{% else %}{{ free }}{% endif %}
</td>
    <td><span class="row-actions"><a href="{{ usage_url }}?project={{ project.project_id }}&amp;key={{ pk }}">\
{{ usage }}</a> {% if record.read_only %}<span class="muted">{{ view_only }}</span>{% else %}<a \
href="{{ keys_url }}{{ pk }}/rename/" data-hx-get="{{ keys_url }}{{ pk }}/rename/" data-hx-target="#modal">\
{{ rename }}</a> <a class="danger" href="{{ keys_url }}{{ pk }}/revoke/" data-hx-get="{{ keys_url }}{{ pk }}/revoke/" \
data-hx-target="#modal">{{ revoke }}</a>{% endif %}</span></td>
  </tr>
{% endwith %}{% endfor %}"""


def rows_of(user):
    request = RequestFactory().get("/api-keys/")
    request.user = user
    table = ApiKeyTable(ApiKey.objects.visible_to(user).order_by("-created_at", "-pk"), request=request)
    RequestConfig(request, paginate={"per_page": 100}).configure(table)
    return list(table.paginated_rows)


@pytest.mark.django_db
@pytest.mark.parametrize("language", ["en", "ja"])
def test_key_rows_write_what_the_template_loop_wrote(language):
    world = the_world(language)
    engine = engines["django"]
    tag = engine.from_string("{% load key_rows %}{% key_rows rows %}")
    reference = engine.from_string(REFERENCE)
    compared = 0
    with translation.override(language), timezone.override("Asia/Tokyo"):
        for person in world["people"].values():
            rows = rows_of(person)
            assert rows
            written = tag.render({"rows": rows})
            assert written == reference.render({"rows": rows})
            compared += len(rows)
    assert compared == 8  # every persona's keys: Owner, Editor and Viewer rows of paid, free and due projects


@pytest.mark.django_db
def test_key_rows_escape_what_people_typed():
    world = the_world("en")
    owner = world["people"]["owner"]
    key = ApiKey.objects.filter(project__memberships__user=owner).first()
    ApiKey.objects.filter(pk=key.pk).update(name='<img src=x onerror="x">&')
    html = engines["django"].from_string("{% load key_rows %}{% key_rows rows %}").render({"rows": rows_of(owner)})
    assert "&lt;img src=x onerror=&quot;x&quot;&gt;&amp;" in html
    assert not re.search(r"<img src=x", html)
