import os
import re
from datetime import UTC, datetime

import pytest
import time_machine

from tests.personas import the_world

OUT = os.environ.get("KEYS_DUMP", "/tmp/keys_html/before")


@pytest.mark.django_db
@pytest.mark.parametrize("language", ["en", "ja"])
def test_dump(client, language):
    os.makedirs(OUT, exist_ok=True)
    with time_machine.travel(datetime(2026, 11, 20, 12, 0, tzinfo=UTC), tick=False):
        world = the_world(language)
        for name, person in world["people"].items():
            client.force_login(person)
            for query in ("", "?sort=name", "?sort=-quota_tier", "?sort=project"):
                for htmx in (False, True):
                    headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
                    html = client.get(f"/api-keys/{query}", **headers).content.decode()
                    html = re.sub(r'csrfmiddlewaretoken" value="[^"]+"', "CSRF", html)
                    html = re.sub(r'"X-CSRFToken": "[^"]+"', "CSRF", html)
                    html = re.sub(r"/(\d+)/", "/N/", html)  # key ids differ between runs only by sequence
                    fname = f"{OUT}/{language}-{name}-{query.strip('?').replace('=', '_') or 'plain'}-{htmx}.html"
                    open(fname, "w").write(html)
