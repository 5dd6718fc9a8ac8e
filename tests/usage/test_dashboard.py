"""The Usage & Limits dashboard (SPEC §3.7: R20, R21, X5, X6): the numbers on the page and in the
CSV equal sums over the raw events for each range and filter, in UTC and in Los Angeles across a
DST change; who may see it; the time zone; the forms; htmx; a query count that does not grow with
the range."""

import csv
import io
import random
import re
from bisect import bisect_right
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from studio.models import Role
from tests.factories import add_member, make_billed_project, make_key, make_project
from usage.admission import quota_ids
from usage.denials import record_past
from usage.ingest import ingest
from usage.models import CatalogModel, RateLimit, UsageEvent
from usage.queries import (
    SUM_COLUMNS,
    Window,
    limits_for_project,
    usage_by_bucket,
    usage_by_bucket_and_key,
    usage_by_key,
)

# 20:30 UTC is 13:30 in Los Angeles, hours after its clocks went back (1 November 2026, 02:00 PDT).
NOW = datetime(2026, 11, 1, 20, 30, tzinfo=UTC)
FLASH, PRO = "gemini-2.5-flash", "gemini-2.5-pro"
LA = ZoneInfo("America/Los_Angeles")
RPM_TIER1 = quota_ids("tier_1")["rpm"]
RPD_TIER1 = quota_ids("tier_1")["rpd"]
# (minute, model, quota id, requests denied): one in the last hour, one the day before, one weeks ago.
DENIALS = [
    (NOW - timedelta(minutes=7), FLASH, RPM_TIER1, 3),
    (NOW - timedelta(hours=20), PRO, RPD_TIER1, 5),
    (NOW - timedelta(days=40), FLASH, RPM_TIER1, 2),
]


@pytest.fixture
def team(owner, editor, viewer):
    """A Tier 1 project billed since long before the usage, with an owner, an editor and a viewer."""
    project = make_billed_project(owner, name="Team project", since=NOW - timedelta(days=120))
    add_member(project, editor, Role.EDITOR)
    add_member(project, viewer, Role.VIEWER)
    return project


def ingest_over_time(events):
    """Ingest events of the past: in batches of at most six days, each as of its newest event
    (ingestion takes events up to 7 days old)."""
    events = sorted(events, key=lambda e: e["occurred_at"])
    while events:
        first = datetime.fromisoformat(events[0]["occurred_at"])
        batch = [e for e in events if datetime.fromisoformat(e["occurred_at"]) < first + timedelta(days=6)]
        events = events[len(batch) :]
        report = ingest(batch, now=datetime.fromisoformat(batch[-1]["occurred_at"]))
        assert report.rejected == [], report.rejected


@pytest.fixture
def keys(team):
    """Two keys' usage over the 91 days before NOW (denser in the last day and hour): requests of
    every outcome, count_tokens (not counted) and cache storage (cost, no request); and denials."""
    alpha, beta = make_key(team, name="Alpha")[0], make_key(team, name="Beta")[0]
    rng = random.Random(11)
    spans = [(160, 91 * 24 * 60), (70, 25 * 60), (40, 61)]
    moments = [
        NOW - timedelta(minutes=rng.randint(0, span), seconds=rng.randint(0, 59)) for n, span in spans for _ in range(n)
    ]
    events = []
    for number, moment in enumerate(moments):
        event = {
            "event_id": f"dash-{number}",
            "key_id": str(rng.choice([alpha, beta]).pk),
            "model": rng.choice([FLASH, FLASH, PRO]),
            "occurred_at": min(moment, NOW).isoformat(),
        }
        if number % 23 == 0:
            event.update(kind="cache_storage", cache_token_hours=str(rng.randint(1000, 90000)))
        else:
            event.update(
                kind=rng.choice(["generate", "generate", "batch", "count_tokens"]),
                status_code=rng.choice([200, 200, 200, 200, 400, 429, 500, 503]),
                input_tokens=rng.randint(100, 40000),
                output_tokens=rng.randint(0, 3000),
            )
            event["cached_tokens"] = rng.randint(0, event["input_tokens"] // 2)
        events.append(event)
    ingest_over_time(events)
    for minute, model, quota_id, count in DENIALS:
        record_past(team, model, quota_id, minute, count)
    return alpha, beta


def window_for(choice, tz):
    """The range as the dashboard must read it (SPEC: the reader's minutes, hours or calendar days)."""
    today = NOW.astimezone(tz).date()
    return {
        "1h": lambda: Window.minutes(NOW, 60, tz),
        "24h": lambda: Window.hours(NOW, 24, tz),
        "7d": lambda: Window.days(today - timedelta(days=6), today, tz),
        "28d": lambda: Window.days(today - timedelta(days=27), today, tz),
        "90d": lambda: Window.days(today - timedelta(days=89), today, tz),
        "custom": lambda: Window.days(date(2026, 10, 30), date(2026, 11, 1), tz),
    }[choice]()


def cents(amount) -> Decimal:
    return Decimal(amount).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def expected(window, *, model=None, key=None):
    """What the Usage tab must show, from the raw events: {"buckets": [[requests, succeeded, 4xx,
    5xx, denied, input, output, cached, cost] + [cost per model]], "models": [...], "keys": {pk: [...]}}."""
    edges = window.edges
    count = len(edges) - 1
    rows = [[0] * 8 + [Decimal(0)] for _ in range(count)]
    by_model, by_key = {}, {}
    for e in UsageEvent.objects.exclude(kind="count_tokens"):
        if not edges[0] <= e.occurred_at < edges[-1] or model not in (None, e.model_id):
            continue
        if key not in (None, e.api_key_id):
            continue
        index = bisect_right(edges, e.occurred_at) - 1
        request, error, server = int(e.kind != "cache_storage"), int(e.status_code >= 400), int(e.status_code >= 500)
        cells = [request, request - error, error - server, server, 0, e.input_tokens, e.output_tokens, e.cached_tokens]
        rows[index] = [a + b for a, b in zip(rows[index], [*cells, e.cost], strict=True)]
        by_model.setdefault(e.model_id, [Decimal(0)] * count)[index] += e.cost
        totals = by_key.setdefault(e.api_key_id, [0, 0, 0, 0, 0, Decimal(0)])
        by_key[e.api_key_id] = [a + b for a, b in zip(totals, [request, error, *cells[5:], e.cost], strict=True)]
    for minute, denied_model, _quota, denied in DENIALS:
        if edges[0] <= minute < edges[-1] and model in (None, denied_model):
            rows[bisect_right(edges, minute) - 1][4] += denied
    names = dict(CatalogModel.objects.values_list("model_id", "display_name"))
    models = sorted(by_model, key=lambda m: (names[m], m))
    return {
        "buckets": [row + [by_model[m][i] for m in models] for i, row in enumerate(rows)],
        "models": [names[m] for m in models],
        "keys": by_key,
    }


def csv_blocks(response):
    """The export's two tables: per period (with its total row) and per key."""
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    blank = rows.index([])
    return rows[:blank], rows[blank + 1 :]


def as_text(values):
    return [str(cents(v)) if isinstance(v, Decimal) else str(v) for v in values]


def query(**params):
    return "&".join(f"{name}={value}" for name, value in params.items())


RANGES = ["1h", "24h", "7d", "28d", "90d", "custom"]


def range_params(choice):
    return {"range": choice, **({"start": "2026-10-30", "end": "2026-11-01"} if choice == "custom" else {})}


@pytest.mark.parametrize("zone", ["UTC", "America/Los_Angeles"])
@pytest.mark.parametrize("choice", RANGES)
def test_csv_equals_the_raw_events(client_for, owner, team, keys, zone, choice):
    tz = ZoneInfo(zone)
    window = window_for(choice, tz)
    want = expected(window)
    with time_machine.travel(NOW, tick=False):
        params = query(project=team.project_id, tz=zone, **range_params(choice))
        response = client_for(owner).get(f"/usage/export.csv?{params}")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    first, last = window.bucket_starts[0].date(), window.bucket_starts[-1].date()
    filename = f"usage-{team.project_id}-{first:%Y%m%d}-{last:%Y%m%d}.csv"
    assert response["Content-Disposition"] == f'attachment; filename="{filename}"'
    periods, per_key = csv_blocks(response)
    assert periods[0] == [
        f"Start ({zone})",
        "Requests",
        "Succeeded",
        "Client errors (4xx)",
        "Server errors (5xx)",
        "Denied by quota",
        "Input tokens",
        "Output tokens",
        "Cached tokens",
        "Cost (USD)",
        *[f"Cost (USD): {name}" for name in want["models"]],
    ]
    starts = [start.isoformat() for start in window.bucket_starts]
    assert periods[1:-1] == [[start, *as_text(row)] for start, row in zip(starts, want["buckets"], strict=True)]
    totals = [sum(column) for column in zip(*want["buckets"], strict=True)]
    assert periods[-1] == ["Total", *as_text(totals)]
    alpha, beta = keys
    assert per_key == [
        ["API key", "Requests", "Errors", "Input tokens", "Output tokens", "Cached tokens", "Cost (USD)"],
        *[[f"{k.name} ({k.masked})", *as_text(want["keys"].get(k.pk, [0] * 6))] for k in (alpha, beta)],
        ["Total", *as_text([sum(c) for c in zip(*want["keys"].values(), strict=True)] if want["keys"] else [0] * 6)],
    ]
    assert totals[0] > 0 and totals[4] > 0  # every range holds requests and denials


def grouped(value):
    return f"USD {cents(value):,}" if isinstance(value, Decimal) else f"{value:,}"


def page_totals(html):
    stats = re.search(r'<dl class="stats" id="totals">(.*?)</dl>', html, re.S).group(1)
    return dict(re.findall(r"<dt>([^<]+)</dt><dd>([^<]+)</dd>", stats))


def table_rows(html, start_marker):
    """The body and footer rows of the first table after `start_marker`: [header cell, cells…]."""
    table = html[html.index(start_marker) :]
    table = table[: table.index("</table>")]
    body = table[table.index("<tbody>") :]
    return [
        [re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    ]


@pytest.mark.parametrize(
    ("zone", "choice", "filters"),
    [
        ("UTC", "28d", {}),
        ("America/Los_Angeles", "24h", {}),
        ("America/Los_Angeles", "7d", {"model": FLASH}),
        ("America/Los_Angeles", "90d", {"key": "alpha"}),
        ("UTC", "custom", {"model": PRO, "key": "beta"}),
    ],
)
def test_page_shows_the_raw_events_sums(client_for, viewer, team, keys, zone, choice, filters):
    tz = ZoneInfo(zone)
    alpha, beta = keys
    key = {"alpha": alpha, "beta": beta}.get(filters.get("key"))
    window = window_for(choice, tz)
    want = expected(window, model=filters.get("model"), key=key.pk if key else None)
    params = {"project": team.project_id, "tz": zone, **range_params(choice), **filters}
    if key:
        params["key"] = key.pk
    with time_machine.travel(NOW, tick=False):
        html = client_for(viewer).get(f"/usage/?{query(**params)}").content.decode()

    totals = [sum(column) for column in zip(*want["buckets"], strict=True)]
    names = ["Requests", "Succeeded", "Client errors (4xx)", "Server errors (5xx)", "Denied by quota"]
    names += ["Input tokens", "Output tokens", "Cached tokens", "Cost"]
    assert page_totals(html) == {name: grouped(value) for name, value in zip(names, totals, strict=False)}
    # The cost by model table: every period, each model and the period's total, then the totals.
    labels = [row[0] for row in table_rows(html, 'id="chart-cost"')]
    assert len(labels) == len(window.bucket_starts) + 1
    assert [row[1:] for row in table_rows(html, 'id="chart-cost"')] == [
        [grouped(v) for v in [*row[9:], row[8]]] for row in want["buckets"]
    ] + [[grouped(v) for v in [*totals[9:], totals[8]]]]
    shown_keys = [key] if key else [alpha, beta]
    key_rows = [[f"{k.name} ({k.masked})", *map(grouped, want["keys"].get(k.pk, [0] * 6))] for k in shown_keys]
    key_total = [sum(c) for c in zip(*[want["keys"].get(k.pk, [0] * 6) for k in shown_keys], strict=True)]
    assert table_rows(html, 'id="key-usage"') == [*key_rows, ["Total", *map(grouped, key_total)]]
    assert ("Denials by quota are counted per project" in html) == bool(key)


def test_days_follow_the_readers_zone_across_the_dst_change(client_for, owner, team, keys):
    with time_machine.travel(NOW, tick=False):
        params = query(project=team.project_id, tz="America/Los_Angeles", **range_params("24h"))
        response = client_for(owner).get(f"/usage/export.csv?{params}")

    starts = [row[0] for row in csv_blocks(response)[0][1:-1]]
    # 24 local hours up to 13:00 PST; 01:00 comes twice (PDT, then PST) and 02:00 PDT never.
    assert starts[:3] == ["2026-10-31T14:00:00-07:00", "2026-10-31T15:00:00-07:00", "2026-10-31T16:00:00-07:00"]
    assert starts[10:14] == [
        "2026-11-01T00:00:00-07:00",
        "2026-11-01T01:00:00-07:00",
        "2026-11-01T01:00:00-08:00",
        "2026-11-01T02:00:00-08:00",
    ]
    assert len(starts) == 24


# Access: Owners, Editors and Viewers of an imported project; 404 for anyone else.

PAGES = ["/usage/", "/usage/limits/", "/usage/export.csv"]


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize("who", ["owner", "editor", "viewer"])
def test_members_see_the_projects_usage(client_for, request, team, keys, path, who):
    with time_machine.travel(NOW, tick=False):
        response = client_for(request.getfixturevalue(who)).get(f"{path}?project={team.project_id}&range=7d")

    assert response.status_code == 200
    if path == "/usage/export.csv":
        assert csv_blocks(response)[1][1][0] == f"Alpha ({keys[0].masked})"
    else:
        assert f'<option value="{team.project_id}" selected>Team project ({team.project_id})</option>' in (
            response.content.decode()
        )


@pytest.mark.parametrize("path", PAGES)
def test_a_project_that_is_not_yours_is_404(client_for, outsider, owner, team, path):
    not_imported = make_project(name="Not imported")
    add_member(not_imported, outsider, Role.OWNER, imported=False)
    client = client_for(outsider)

    assert client.get(f"{path}?project={team.project_id}").status_code == 404
    assert client.get(f"{path}?project={not_imported.project_id}").status_code == 404
    assert client.get(f"{path}?project=gen-lang-client-0000000000").status_code == 404


def test_a_project_the_viewer_has_not_imported_is_404(client_for, viewer, team):
    team.memberships.filter(user=viewer).update(imported_at=None)

    for path in PAGES:
        assert client_for(viewer).get(f"{path}?project={team.project_id}").status_code == 404


def test_someone_without_projects_is_asked_to_import_one(client_for, outsider):
    html = client_for(outsider).get("/usage/").content.decode()

    assert "You have no projects yet. Import a project to see its usage." in html
    assert '<a href="/projects/import/">Import project</a>' in html


def test_pages_require_sign_in(client):
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"] == f"/accounts/login/?next={path}"


def test_without_a_project_the_first_one_is_shown(client_for, owner, team):
    make_project(owner, name="Another project")  # sorts before "Team project"

    html = client_for(owner).get("/usage/").content.decode()

    assert re.search(r'<option value="[^"]+" selected>Another project', html)


# The page: htmx, the zone, the forms, the language, the queries.


def test_htmx_request_gets_only_the_content(client_for, owner, team, keys):
    with time_machine.travel(NOW, tick=False):
        response = client_for(owner).get(
            f"/usage/?project={team.project_id}&range=24h", headers={"HX-Request": "true", "HX-Target": "usage-body"}
        )

    html = response.content.decode()
    assert html.lstrip().startswith('<div id="usage-body" class="usage">')
    assert "<html" not in html
    assert 'id="chart-requests"' in html
    assert "HX-Request" in response["Vary"]


def test_filters_are_a_get_form_that_swaps_the_content_and_keeps_a_url(client_for, owner, team):
    html = client_for(owner).get(f"/usage/?project={team.project_id}").content.decode()

    form = re.search(r'<form class="filters card"[^>]*>', html).group(0)
    assert form == (
        '<form class="filters card" method="get" action="/usage/" data-hx-get="/usage/" '
        'data-hx-target="#usage-body" data-hx-swap="outerHTML" data-hx-push-url="true" novalidate>'
    )
    assert f'<input type="hidden" name="project" value="{team.project_id}">' in html


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"start": "2026-11-01", "end": "2026-10-30"}, "end", "The last day cannot be before the first day."),
        ({"start": "2026-08-01", "end": "2026-10-30"}, "end", "Choose at most 90 days."),
        ({"start": "2026-10-30", "end": "2026-11-02"}, "end", "Choose a day that is not in the future."),
        ({"start": "", "end": "2026-10-30"}, "start", "Enter the first day of the range."),
        ({"start": "30 October", "end": "2026-10-30"}, "start", "Enter a valid date."),
    ],
)
def test_custom_dates_are_checked(client_for, owner, team, params, field, message):
    with time_machine.travel(NOW, tick=False):
        response = client_for(owner).get(
            f"/usage/?{query(project=team.project_id, range='custom', tz='UTC', **params)}"
        )

    html = response.content.decode()
    assert response.status_code == 422
    assert re.findall(r'<p class="field-error" id="([^"]+)">([^<]+)</p>', html) == [(f"id_{field}_error", message)]
    assert re.search(rf'<input type="date" name="{field}"[^>]*aria-describedby="id_{field}_error"', html)
    assert 'id="totals"' not in html


def test_ninety_custom_days_up_to_today_are_fine(client_for, owner, team):
    with time_machine.travel(NOW, tick=False):
        params = query(project=team.project_id, range="custom", start="2026-08-04", end="2026-11-01", tz="UTC")
        response = client_for(owner).get(f"/usage/export.csv?{params}")

    assert response.status_code == 200
    assert len(csv_blocks(response)[0]) == 1 + 90 + 1


def test_a_key_of_another_project_is_a_field_error(client_for, owner, team):
    other, _ = make_key(make_project(owner))

    response = client_for(owner).get(f"/usage/?project={team.project_id}&key={other.pk}")

    assert response.status_code == 422
    assert 'id="id_key_error"' in response.content.decode()


def zone_note(html):
    return re.search(r"Times and days are in ([^<]+)\.", html).group(1)


def test_the_zone_is_the_parameter_then_the_setting_then_the_browser_then_utc(client_for, owner, team):
    client = client_for(owner)
    with time_machine.travel(NOW, tick=False):
        assert zone_note(client.get("/usage/").content.decode()) == "UTC (UTC+00:00)"
        client.cookies["tz"] = "Asia/Kolkata"
        assert zone_note(client.get("/usage/").content.decode()) == "Asia/Kolkata (UTC+05:30)"
        owner.time_zone = "America/Los_Angeles"
        owner.save()
        assert zone_note(client.get("/usage/").content.decode()) == "America/Los_Angeles (UTC-08:00)"
        assert zone_note(client.get("/usage/?tz=Asia/Kathmandu").content.decode()) == "Asia/Kathmandu (UTC+05:45)"
        assert zone_note(client.get("/usage/?tz=Mars/Olympus").content.decode()) == "America/Los_Angeles (UTC-08:00)"


def test_a_zone_asked_for_is_kept_by_the_tabs_the_export_and_the_forms(client_for, owner, team):
    html = client_for(owner).get(f"/usage/?project={team.project_id}&tz=Asia/Kolkata&range=7d").content.decode()

    pid = team.project_id
    assert f'<a href="/usage/limits/?project={pid}&amp;tz=Asia%2FKolkata&amp;range=7d">Limits</a>' in html
    assert f'href="/usage/export.csv?project={pid}&amp;tz=Asia%2FKolkata&amp;range=7d"' in html
    assert html.count('<input type="hidden" name="tz" value="Asia/Kolkata">') == 2  # project picker, filters
    assert "Daily request limits (RPD) reset at midnight Pacific time." in html


def test_the_japanese_pages_render(client_for, owner, team, keys):
    owner.language = "ja"
    owner.save()
    client = client_for(owner)
    with time_machine.travel(NOW, tick=False):
        usage = client.get(f"/usage/?project={team.project_id}&range=7d&tz=Asia/Tokyo")
        limits = client.get(f"/usage/limits/?project={team.project_id}&range=7d")
        export = client.get(f"/usage/export.csv?project={team.project_id}&range=7d&tz=Asia/Tokyo")

    assert (usage.status_code, limits.status_code, export.status_code) == (200, 200, 200)
    assert '<html lang="ja">' in usage.content.decode()
    assert '<html lang="ja">' in limits.content.decode()
    # Seven days up to 2 November in Tokyo (05:30 there), the first in Japanese.
    assert "2026年10月27日" in usage.content.decode()
    assert csv_blocks(export)[0][1][0] == "2026-10-27T00:00:00+09:00"


def test_query_count_does_not_grow_with_the_range(client_for, owner, team, keys):
    client = client_for(owner)
    counts = {}
    with time_machine.travel(NOW, tick=False):
        client.get(f"/usage/?project={team.project_id}")  # the session and the catalog are warm
        for choice in ("24h", "90d"):
            for path in PAGES:
                with CaptureQueriesContext(connection) as queries:
                    assert client.get(f"{path}?project={team.project_id}&range={choice}&tz={LA.key}").status_code == 200
                counts[(path, choice)] = len(queries)

    assert {path: counts[(path, "24h")] for path in PAGES} == {path: counts[(path, "90d")] for path in PAGES}


# Limits (R21, X6)


def limit_rows_of(html, model_id):
    section = html[html.index(f"<small>{model_id}</small>") :]
    return table_rows(section, "<table")


def test_limits_tab_names_each_limit_as_the_api_does(client_for, viewer, team, keys):
    with time_machine.travel(NOW, tick=False):
        html = client_for(viewer).get(f"/usage/limits/?project={team.project_id}&range=90d&tz=UTC").content.decode()
        limits = {m.model_id: m for m in limits_for_project(team, window_for("90d", UTC), now=NOW)}

    tier1 = {r.model_id: r for r in RateLimit.objects.filter(tier="tier_1")}
    tier2 = {r.model_id: r for r in RateLimit.objects.filter(tier="tier_2")}
    midnight = "at midnight Pacific time (11/02/2026 8 a.m. in your time zone)"  # 00:00 PST is 08:00 UTC

    def expected_rows(model, denied):
        found, now, then = limits[model], tier1[model], tier2[model]
        return [
            [
                "Requests per minute (RPM)",
                "GenerateRequestsPerMinutePerProjectPerModel-Tier1",
                f"{now.rpm:,}",
                f"{found.peak_rpm:,}",
                f"{found.live_rpm:,}",
                str(denied.get("rpm", 0)),
                "in 60 seconds",
                f"{then.rpm:,}",
            ],
            [
                "Input tokens per minute (TPM)",
                "GenerateContentInputTokensPerModelPerMinute-Tier1",
                f"{now.tpm:,}",
                f"{found.peak_tpm:,}",
                f"{found.live_tpm:,}",
                "0",
                "in 60 seconds",
                f"{then.tpm:,}",
            ],
            [
                "Requests per day (RPD)",
                "GenerateRequestsPerDayPerProjectPerModel-Tier1",
                f"{now.rpd:,}" if now.rpd else "No limit",
                f"{found.peak_rpd:,}",
                f"{found.live_rpd:,}" if now.rpd else "—",
                str(denied.get("rpd", 0)),
                midnight,
                f"{then.rpd:,}" if then.rpd else "No limit",
            ],
        ]

    # Denials in the range by quota id: Flash's RPM refused 3 + 2 requests, Pro's RPD 5.
    assert limit_rows_of(html, FLASH) == expected_rows(FLASH, {"rpm": 5})
    assert limit_rows_of(html, PRO) == expected_rows(PRO, {"rpd": 5})
    assert limits[FLASH].peak_rpm > 0  # the range holds usage
    assert html.count('<tr class="limit-hit">') == 2
    assert '<span class="quota-tier" data-state="tier_1">\n<span class="badge paid">Tier 1</span>\n</span>' in html
    assert f'<a href="/billing/projects/{team.project_id}/tier/">Tier progress and history</a>' in html


def test_limits_tab_of_a_free_project_lists_the_free_models(client_for, owner):
    project = make_project(owner, name="Free project")
    free = sorted(CatalogModel.objects.filter(active=True, free_tier_available=True).values_list("model_id", flat=True))

    html = client_for(owner).get(f"/usage/limits/?project={project.project_id}").content.decode()

    assert re.findall(r"<small>([a-z0-9.-]+)</small></h2>", html) == free
    assert f'<a class="tier-action" href="/billing/setup/?project={project.project_id}">Set up billing</a>' in html
    assert "The next tier is Tier 1" in html


# Entry points


def test_navigation_marks_the_dashboard_as_the_current_page(client_for, owner, team):
    html = client_for(owner).get("/usage/").content.decode()

    assert '<a href="/usage/" aria-current="page">Usage & limits</a>' in html


def test_keys_table_and_key_page_link_to_the_key_s_usage(client_for, viewer, team, key_of_team):
    url = f"/usage/?project={team.project_id}&amp;key={key_of_team.pk}"

    assert f'<a href="{url}">Usage</a>' in client_for(viewer).get("/api-keys/").content.decode()
    assert (
        f'<a href="{url}">Usage of this key</a>'
        in client_for(viewer).get(f"/api-keys/{key_of_team.pk}/").content.decode()
    )


@pytest.fixture
def key_of_team(team, owner):
    return make_key(team, name="Team key", created_by=owner)[0]


# Settings


def test_settings_save_a_time_zone(client_for, owner):
    response = client_for(owner).post("/settings/", {"full_name": "", "language": "en", "time_zone": "Asia/Kolkata"})

    assert response["Location"] == "/settings/"
    owner.refresh_from_db()
    assert owner.time_zone == "Asia/Kolkata"


def test_settings_refuse_an_unknown_time_zone_and_offer_the_browsers(client_for, owner):
    response = client_for(owner).post("/settings/", {"full_name": "", "language": "en", "time_zone": "Mars/Olympus"})

    assert response.status_code == 422
    owner.refresh_from_db()
    assert owner.time_zone == ""
    html = response.content.decode()
    assert '<option value="">Use my browser&#x27;s time zone</option>' in html
    assert '<option value="Asia/Kolkata">Asia/Kolkata</option>' in html
    assert 'value="localtime"' not in html


def test_each_chart_is_a_named_svg_with_its_numbers_beside_it(client_for, owner, team, keys):
    """X12, X13 and the CSP: server-drawn SVG named by its <title> and <desc>, a table of every value
    next to it, no script and no style attribute."""
    with time_machine.travel(NOW, tick=False):
        html = client_for(owner).get(f"/usage/?project={team.project_id}&range=7d&tz=UTC").content.decode()

    svgs = re.findall(
        r'<svg class="chart-svg [a-z]+" viewBox="0 0 720 240" role="img" aria-labelledby="([^"]+)">', html
    )
    assert svgs == [f"chart-{n}-title chart-{n}-desc" for n in ("requests", "tokens", "cost")]
    for name in ("requests", "tokens", "cost"):
        assert re.search(
            rf'<title id="chart-{name}-title">[^<]+</title>\s*<desc id="chart-{name}-desc">[^<]+</desc>', html
        )
        assert len(table_rows(html, f'id="chart-{name}"')) == 7 + (name == "cost")  # a row a day (+ the total)
    assert html.count('<details class="chart-data">') == 2  # the cost by model table is shown open
    assert " style=" not in html
    assert re.findall(r"<script[^>]*>", html) == [
        '<script src="/static/django_htmx/htmx-2.min.js" defer>',
        '<script src="/static/js/console.js" defer>',
    ]


@pytest.mark.parametrize("zone", ["UTC", "America/Los_Angeles", "Asia/Kolkata"])
@pytest.mark.parametrize("choice", ["1h", "24h", "90d"])
def test_one_read_by_bucket_and_key_equals_the_two_reads(team, keys, zone, choice, django_assert_num_queries):
    """The Usage tab reads both groupings in one statement (GROUPING SETS on PostgreSQL): the same sums, with or
    without filters."""
    window = window_for(choice, ZoneInfo(zone))
    alpha, _beta = keys
    for filters in ({}, {"models": [PRO]}, {"keys": [alpha.pk]}, {"models": [FLASH], "keys": [alpha.pk]}):
        with django_assert_num_queries(1):
            both = usage_by_bucket_and_key(team.pk, window, **filters)
        assert both == (usage_by_bucket(team.pk, window, **filters), usage_by_key(team.pk, window, **filters))
        assert all(type(getattr(sums, name)) is int for sums in both[1].values() for name in SUM_COLUMNS[:-1])
    assert both[0] and both[1]  # the last filters still select usage
