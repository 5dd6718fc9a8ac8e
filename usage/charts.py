"""The dashboard's charts, drawn on the server as SVG (SPEC §3.7, X12, X13).

No chart library: the page keeps its strict CSP (no script, no style attribute: colours are CSS
classes of static/css/console.css), works without JavaScript, and each chart carries its numbers
as a data table next to it (the SVG's text alternative for screen readers and for copying). Here
the geometry is computed; templates/usage/includes/chart.html draws it.

Numbers are formatted here, in the request's language, so that the chart's tooltips, its axis and
its table show the same strings as the rest of the page; each distinct value once per chart (a
tooltip and its table row show the same numbers). The parts repeated per bucket (a column of bars,
a point, a table row) are written by usage/templatetags/chart_parts.py in one pass each: as template
loops they cost most of a 90-day page's time.
"""

import math
from dataclasses import dataclass, field
from decimal import Decimal

from django.utils.formats import get_format, number_format

from studio.templatetags.money import usd

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 100, 12, 12, 28  # room for the value axis on the left, time labels below
PLOT_WIDTH, PLOT_HEIGHT = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
TICKS = 4  # horizontal grid lines above zero
TIME_LABELS = 6  # at most, so that long date labels do not overlap
POINTS_UP_TO = 31  # a line chart marks each point while the points are this few (one point is no line)


def count(value) -> str:
    """A count as the console shows it: grouped with the language's separator."""
    if type(value) is int and get_format("NUMBER_GROUPING") == 3:
        # What number_format gives an int grouped by threes, for a tenth of its cost: a page shows hundreds.
        return f"{value:,}".replace(",", get_format("THOUSAND_SEPARATOR"))
    return number_format(value, force_grouping=True, use_l10n=True)


@dataclass(frozen=True)
class Series:
    """One coloured quantity over the buckets. `color` is a palette class of console.css."""

    name: str
    color: str
    values: list


@dataclass(frozen=True)
class Column:
    """One bucket of a chart: the area that shows its tooltip, and its bar pieces (bottom up)."""

    x: str
    width: str
    tooltip: str
    bars: list[tuple[str, str, str, str, str]]  # (x, y, width, height, colour class)


@dataclass
class Chart:
    """A chart ready to draw: bars stacked per bucket, or one line per series."""

    slug: str
    title: str
    description: str
    kind: str  # "bars" or "lines"
    period: str  # the header of the table's first column ("Day", "Hour", "Minute")
    labels: list[str]  # each bucket, as the table shows it
    series: list[Series]
    money: bool = False
    total: bool = False  # the table adds totals and is shown open: the cost by model table (X5)
    width: int = WIDTH
    height: int = HEIGHT
    plot_top: int = TOP
    plot_height: int = PLOT_HEIGHT
    value_label_x: int = LEFT - 6
    time_label_y: int = HEIGHT - 8
    columns: list[Column] = field(default_factory=list)
    lines: list[tuple[str, str]] = field(default_factory=list)  # (colour class, "x,y x,y …")
    points: list[tuple[str, str, str]] = field(default_factory=list)  # (colour class, x, y)
    value_ticks: list[tuple[str, str]] = field(default_factory=list)  # (y, label)
    time_ticks: list[tuple[str, str]] = field(default_factory=list)  # (x, label)
    rows: list[tuple[str, list[str]]] = field(default_factory=list)  # the data table's body
    total_row: list[str] = field(default_factory=list)
    baseline: str = f"{TOP + PLOT_HEIGHT}"
    plot_left: int = LEFT
    plot_right: int = LEFT + PLOT_WIDTH
    formatted: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # value: its text

    def format(self, value) -> str:
        # Equal values format alike (Decimal("1.5") as Decimal("1.50"), 0 as Decimal(0)): one entry each.
        text = self.formatted.get(value)
        if text is None:
            text = self.formatted[value] = usd(value) if self.money else count(value)
        return text


def bar_chart(slug, title, description, *, period, labels, axis_labels, series, money=False, total=False) -> Chart:
    """Bars stacked per bucket, in the order of `series` from the bottom up."""
    chart = Chart(slug, title, description, "bars", period, labels, series, money=money, total=total)
    stacks = [sum((s.values[i] for s in series), Decimal(0) if money else 0) for i in range(len(labels))]
    top = _axis(chart, max(stacks, default=0), axis_labels)
    band = PLOT_WIDTH / max(len(labels), 1)
    for index, label in enumerate(labels):
        x, bottom, bars = LEFT + band * index, TOP + PLOT_HEIGHT, []
        for item in series:
            height = PLOT_HEIGHT * float(item.values[index]) / top
            if height > 0:
                bottom -= height
                bars.append((_n(x + band * 0.1), _n(bottom), _n(max(band * 0.8, 1)), _n(height), item.color))
        chart.columns.append(Column(_n(x), _n(band), _tooltip(chart, label, index), bars))
    _table(chart)
    return chart


def line_chart(slug, title, description, *, period, labels, axis_labels, series) -> Chart:
    """One line per series, a point per bucket (marked while there are few)."""
    chart = Chart(slug, title, description, "lines", period, labels, series)
    top = _axis(chart, max((max(s.values, default=0) for s in series), default=0), axis_labels)
    band = PLOT_WIDTH / max(len(labels), 1)
    for item in series:
        spots = [
            (_n(LEFT + band * (index + 0.5)), _n(TOP + PLOT_HEIGHT * (1 - float(value) / top)))
            for index, value in enumerate(item.values)
        ]
        chart.lines.append((item.color, " ".join(f"{x},{y}" for x, y in spots)))
        if len(spots) <= POINTS_UP_TO:
            chart.points += [(item.color, x, y) for x, y in spots]
    for index, label in enumerate(labels):
        chart.columns.append(Column(_n(LEFT + band * index), _n(band), _tooltip(chart, label, index), []))
    _table(chart)
    return chart


def _axis(chart: Chart, highest, axis_labels: list[str]):
    """Value ticks from zero to a round top above `highest`, and a few time labels. Returns the top."""
    step = _step(highest, money=chart.money)
    top = step * TICKS
    for tick in range(TICKS + 1):
        y = TOP + PLOT_HEIGHT * (1 - tick / TICKS)
        chart.value_ticks.append((_n(y), chart.format(step * tick)))
    band = PLOT_WIDTH / max(len(axis_labels), 1)
    every = math.ceil(len(axis_labels) / TIME_LABELS) or 1
    chart.time_ticks = [
        (_n(LEFT + band * (index + 0.5)), label) for index, label in enumerate(axis_labels) if index % every == 0
    ]
    return float(top)


def _step(highest, *, money: bool):
    """A round grid step (1, 2, 2.5 or 5 times a power of ten) that puts `highest` under the top
    grid line; whole numbers for counts, and at least a cent for money."""
    smallest = Decimal("0.01") if money else Decimal(1)
    if highest <= 0:
        return smallest
    raw = Decimal(highest) / TICKS
    power = Decimal(10) ** math.floor(math.log10(raw))
    step = next(
        factor * power
        for factor in (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10))
        if factor * power >= raw
    )
    if not money:
        step = Decimal(math.ceil(step))
    return max(step, smallest)


def _tooltip(chart: Chart, label: str, index: int) -> str:
    return f"{label}: " + ", ".join(f"{s.name} {chart.format(s.values[index])}" for s in chart.series)


def _table(chart: Chart) -> None:
    for index, label in enumerate(chart.labels):
        values = [s.values[index] for s in chart.series]
        if chart.total:
            values.append(sum(values, Decimal(0)))
        chart.rows.append((label, [chart.format(value) for value in values]))
    if chart.total:
        sums = [sum(s.values, Decimal(0)) for s in chart.series]
        chart.total_row = [chart.format(value) for value in [*sums, sum(sums, Decimal(0))]]


def _n(value: float) -> str:
    """A coordinate for an SVG attribute: one decimal, a dot, never localized."""
    return f"{value:.1f}"
