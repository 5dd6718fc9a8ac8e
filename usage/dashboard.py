"""What the Usage & Limits dashboard shows (R20, R21, X5, X6), assembled once for the page and for
its CSV export, so that both show the same numbers.

Usage is read from the rollups (usage.queries: a constant number of statements whatever the
range), in the reader's time zone. Denials by quota are counted per project and model: a key
filter does not apply to them (quotas are per project), which the page says.
"""

import csv
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from django.utils.formats import date_format
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from studio.models import ApiKey
from usage.charts import Chart, Series, bar_chart, line_chart
from usage.forms import key_label
from usage.models import CatalogModel
from usage.queries import ModelLimits, Sums, Window, denials_by_bucket, usage_by_bucket_and_key
from usage.spendcap import QUOTA_ID as SPEND_CAP_QUOTA_ID

CENTS = Decimal("0.01")
MODEL_COLORS = 8  # palette classes c-model0 … c-model7 in console.css, reused past eight models


@dataclass
class Bucket:
    """One minute, hour or day of the range: its usage (all chosen models) and the denials."""

    start: datetime  # in the reader's zone
    label: str  # as the tables show it
    axis_label: str  # as the chart's time axis shows it
    sums: Sums
    denied: int
    cost_by_model: dict[str, Decimal]


@dataclass
class KeyUsage:
    key: ApiKey
    label: str
    sums: Sums


@dataclass
class UsageReport:
    window: Window
    buckets: list[Bucket]
    models: list[CatalogModel]  # the models with usage in the range: the cost table's columns
    totals: Sums
    denied: int
    keys: list[KeyUsage]

    @property
    def first_label(self) -> str:
        return self.buckets[0].label

    @property
    def last_label(self) -> str:
        return self.buckets[-1].label

    @property
    def key_totals(self) -> Sums:
        """The per-key table's total row (the totals, when every key with usage is a row)."""
        total = Sums()
        for row in self.keys:
            total.add(row.sums)
        return total

    @property
    def is_empty(self) -> bool:
        return not (self.totals.requests or self.totals.cost or self.denied)

    @property
    def period(self) -> str:
        """The bucket's name, the header of the tables' first column."""
        return {"minute": _("Minute"), "hour": _("Hour"), "day": _("Day")}[self.window.bucket]


def usage_report(project, window: Window, *, catalog: list[CatalogModel], keys: list[ApiKey], model=None, key=None):
    """The project's usage in `window`, optionally of one model (id) and one key (an ApiKey of the
    project). Two statements: usage per bucket and model and per key (one read), and denials per bucket."""
    models = [model] if model else None
    key_ids = [key.pk] if key else None
    by_bucket, by_key = usage_by_bucket_and_key(project.pk, window, models=models, keys=key_ids)
    denials = denials_by_bucket(project.pk, window, models=models)

    used = {model_id for _index, model_id in by_bucket}
    denied_at = defaultdict(int)
    for (index, _model, _quota), denied in denials.items():
        denied_at[index] += denied
    buckets = []
    for index, start in enumerate(window.bucket_starts):
        sums, costs = Sums(), {}
        for model_id in used:
            if found := by_bucket.get((index, model_id)):
                sums.add(found)
                costs[model_id] = Decimal(found.cost)
        label, axis_label = _label(start, window.bucket), _axis_label(start, window)
        buckets.append(Bucket(start, label, axis_label, sums, denied_at[index], costs))
    totals = Sums()
    for bucket in buckets:
        totals.add(bucket.sums)
    shown = [k for k in keys if (key is None or k.pk == key.pk) and (k.pk in by_key or not k.is_revoked)]
    return UsageReport(
        window=window,
        buckets=buckets,
        models=[m for m in catalog if m.model_id in used],
        totals=totals,
        denied=sum(bucket.denied for bucket in buckets),
        keys=[KeyUsage(k, key_label(k), by_key.get(k.pk, Sums())) for k in shown],
    )


def _label(start: datetime, bucket: str) -> str:
    """A bucket as a table row names it; times carry the zone's abbreviation, so that the hour a
    DST change repeats appears as two distinct rows (01:00 PDT, 01:00 PST)."""
    if bucket == "day":
        return date_format(start, "DATE_FORMAT")
    time = f"{date_format(start, 'H:i')} {start.tzname()}"
    return time if bucket == "minute" else f"{date_format(start, 'SHORT_DATE_FORMAT')} {time}"


def _axis_label(start: datetime, window: Window) -> str:
    return date_format(start, "MONTH_DAY_FORMAT" if window.bucket == "day" else "H:i")


def report_charts(report: UsageReport) -> list[Chart]:
    """Requests by outcome, tokens, and cost by model, over the range's buckets."""
    buckets = report.buckets
    labels, axis = [b.label for b in buckets], [b.axis_label for b in buckets]
    common = {"period": report.period, "labels": labels, "axis_labels": axis}
    requests = bar_chart(
        "requests",
        _("Requests"),
        _(
            "Stacked bars, one per period: requests that succeeded, client errors (4xx), server errors "
            "(5xx) and requests denied by a quota. The table has every value."
        ),
        series=[
            Series(_("Succeeded"), "c-ok", [b.sums.succeeded for b in buckets]),
            Series(_("Client errors (4xx)"), "c-4xx", [b.sums.client_errors for b in buckets]),
            Series(_("Server errors (5xx)"), "c-5xx", [b.sums.server_errors for b in buckets]),
            Series(_("Denied by quota"), "c-denied", [b.denied for b in buckets]),
        ],
        **common,
    )
    tokens = line_chart(
        "tokens",
        _("Tokens"),
        _(
            "Lines, one point per period: input tokens, output tokens and cached tokens (the part of "
            "the input read from the cache). The table has every value."
        ),
        series=[
            Series(_("Input tokens"), "c-input", [b.sums.input_tokens for b in buckets]),
            Series(_("Output tokens"), "c-output", [b.sums.output_tokens for b in buckets]),
            Series(_("Cached tokens"), "c-cached", [b.sums.cached_tokens for b in buckets]),
        ],
        **common,
    )
    cost = bar_chart(
        "cost",
        _("Cost by model"),
        _("Stacked bars, one per period: the cost of each model's usage. The table has every value."),
        series=[
            Series(m.display_name, f"c-model{n % MODEL_COLORS}", [b.cost_by_model.get(m.model_id, 0) for b in buckets])
            for n, m in enumerate(report.models)
        ],
        money=True,
        total=True,
        **common,
    )
    return [requests, tokens, cost]


def cents(amount) -> Decimal:
    """An amount as the page shows it (the `usd` filter's rule: half-up to the cent)."""
    return Decimal(amount).quantize(CENTS, rounding=ROUND_HALF_UP)


def write_csv(report: UsageReport, out, *, zone: ZoneInfo) -> None:
    """The report as CSV into `out` (a file-like object): what the page shows, with the same
    numbers (costs in USD to the cent): one row per period with the requests, tokens and cost by
    model, then a total row; after an empty row, the per-key table. Periods start at ISO 8601
    times in the reader's zone."""
    writer = csv.writer(out)
    writer.writerow(
        [
            _("Start (%(zone)s)") % {"zone": zone.key},
            _("Requests"),
            _("Succeeded"),
            _("Client errors (4xx)"),
            _("Server errors (5xx)"),
            _("Denied by quota"),
            _("Input tokens"),
            _("Output tokens"),
            _("Cached tokens"),
            _("Cost (USD)"),
            *[_("Cost (USD): %(model)s") % {"model": m.display_name} for m in report.models],
        ]
    )
    for bucket in report.buckets:
        by_model = [cents(bucket.cost_by_model.get(m.model_id, 0)) for m in report.models]
        writer.writerow([bucket.start.isoformat(), *_usage_cells(bucket.sums, bucket.denied), *by_model])
    model_totals = [
        cents(sum((b.cost_by_model.get(m.model_id, 0) for b in report.buckets), Decimal(0))) for m in report.models
    ]
    writer.writerow([_("Total"), *_usage_cells(report.totals, report.denied), *model_totals])
    writer.writerow([])
    writer.writerow(
        [
            _("API key"),
            _("Requests"),
            _("Errors"),
            _("Input tokens"),
            _("Output tokens"),
            _("Cached tokens"),
            _("Cost (USD)"),
        ]
    )
    for row in report.keys:
        writer.writerow([row.label, *_key_cells(row.sums)])
    writer.writerow([_("Total"), *_key_cells(report.key_totals)])


def _usage_cells(sums: Sums, denied: int) -> list:
    return [
        sums.requests,
        sums.succeeded,
        sums.client_errors,
        sums.server_errors,
        denied,
        sums.input_tokens,
        sums.output_tokens,
        sums.cached_tokens,
        cents(sums.cost),
    ]


def _key_cells(sums: Sums) -> list:
    return [sums.requests, sums.errors, sums.input_tokens, sums.output_tokens, sums.cached_tokens, cents(sums.cost)]


@dataclass(frozen=True)
class LimitRow:
    """One limit of a model, as the Limits tab shows it: named as the API names it (X6)."""

    name: str
    quota_id: str
    limit: int | None  # None: no limit
    peak: int
    live: int
    denied: int
    resets: str
    next_limit: int | None
    raised: bool = False  # the project's quota override raises it above the tier's figure


def limit_rows(limits: ModelLimits, *, now: datetime, zone: ZoneInfo) -> list[LimitRow]:
    """RPM, TPM and RPD of one model at the project's tier, with usage and denials."""
    ids, denials = limits.quota_ids, limits.denials
    seconds = limits.rpm_resets_in
    minute = ngettext("in %(seconds)d second", "in %(seconds)d seconds", seconds) % {"seconds": seconds}
    midnight = (now + timedelta(seconds=limits.rpd_resets_in)).astimezone(zone)
    day = _("at midnight Pacific time (%(time)s in your time zone)") % {
        "time": date_format(midnight, "SHORT_DATETIME_FORMAT")
    }
    return [
        LimitRow(
            _("Requests per minute (RPM)"),
            ids["rpm"],
            limits.rpm,
            limits.peak_rpm,
            limits.live_rpm,
            denials.get(ids["rpm"], 0),
            minute,
            limits.next_rpm,
            "rpm" in limits.raised,
        ),
        LimitRow(
            _("Input tokens per minute (TPM)"),
            ids["tpm"],
            limits.tpm,
            limits.peak_tpm,
            limits.live_tpm,
            denials.get(ids["tpm"], 0),
            minute,
            limits.next_tpm,
            "tpm" in limits.raised,
        ),
        LimitRow(
            _("Requests per day (RPD)"),
            ids["rpd"],
            limits.rpd,
            limits.peak_rpd,
            limits.live_rpd,
            denials.get(ids["rpd"], 0),
            day,
            limits.next_rpd,
            "rpd" in limits.raised,
        ),
    ]


def other_denials(limits: ModelLimits) -> list[tuple[str, int]]:
    """Denials in the range under quota ids that are not this tier's RPM/TPM/RPD (an earlier tier's
    limits, the spend limit), by quota id; not the monthly spend cap, which has a row of its own."""
    current = {limits.quota_ids[name] for name in ("rpm", "tpm", "rpd")} | {SPEND_CAP_QUOTA_ID}
    return sorted((quota_id, n) for quota_id, n in limits.denials.items() if quota_id not in current and n)
