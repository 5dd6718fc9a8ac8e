"""The parts of a dashboard chart (usage.charts.Chart) that repeat per bucket, written in one pass.

As template loops, 90 days of columns, bars and table cells were some 6,000 variable nodes per page:
most of the Usage page's time. Each tag writes what templates/usage/includes/chart.html and
chart_table.html would, byte for byte, escaping text as autoescaping does (`html.escape` is what
`django.utils.html.escape` calls). Coordinates (`usage.charts._n`) and palette classes are the
chart's own ASCII, not text.
"""

from html import escape

from django import template
from django.utils.safestring import SafeString, mark_safe

register = template.Library()


@register.simple_tag
def chart_columns(chart) -> SafeString:
    """Each bucket's <g>: its tooltip, the area that shows it, and its bars from the bottom up."""
    top, height = chart.plot_top, chart.plot_height
    return mark_safe(  # noqa: S308 - the tooltip is escaped; the rest is the chart's own numbers and classes
        "".join(
            f'<g class="column"><title>{escape(column.tooltip)}</title><rect class="hit" x="{column.x}" y="{top}" '
            f'width="{column.width}" height="{height}"/>'
            + "".join(f'<rect class="{c}" x="{x}" y="{y}" width="{w}" height="{h}"/>' for x, y, w, h, c in column.bars)
            + "</g>\n    "
            for column in chart.columns
        )
    )


@register.simple_tag
def chart_points(chart) -> SafeString:
    """The marked points of a line chart (while there are few)."""
    return mark_safe(  # noqa: S308 - the chart's own numbers and classes
        "".join(f'<circle class="{color}" cx="{x}" cy="{y}" r="3"/>' for color, x, y in chart.points)
    )


@register.simple_tag
def chart_rows(chart) -> SafeString:
    """The data table's body rows: the period, then its values as the chart formatted them."""
    return mark_safe(  # noqa: S308 - labels and values are escaped
        "".join(
            f'<tr><th scope="row">{escape(label)}</th>'
            + "".join(f'<td class="num">{escape(value)}</td>' for value in values)
            + "</tr>\n  "
            for label, values in chart.rows
        )
    )
