"""The dashboard's SVG charts (usage.charts): geometry, axes and the data table beside each chart."""

from decimal import Decimal as D

import pytest
from django.utils import translation
from django.utils.formats import number_format

from usage.charts import PLOT_HEIGHT, TOP, Series, bar_chart, count, line_chart

BASE = TOP + PLOT_HEIGHT  # the zero line's y


def test_bars_stack_from_the_zero_line_in_series_order():
    chart = bar_chart(
        "requests",
        "Requests",
        "Stacked bars.",
        period="Day",
        labels=["1 Nov", "2 Nov"],
        axis_labels=["1", "2"],
        series=[Series("Succeeded", "c-ok", [3, 0]), Series("Denied", "c-denied", [1, 2])],
    )

    assert [label for _, label in chart.value_ticks] == ["0", "1", "2", "3", "4"]  # a round top above 4
    first, second = chart.columns
    assert [(y, height, color) for _, y, _, height, color in first.bars] == [
        (f"{BASE - 150:.1f}", "150.0", "c-ok"),  # 3 of 4
        (f"{BASE - 200:.1f}", "50.0", "c-denied"),  # then 1 of 4 on top
    ]
    assert [(height, color) for _, _, _, height, color in second.bars] == [("100.0", "c-denied")]  # no empty piece
    assert first.tooltip == "1 Nov: Succeeded 3, Denied 1"
    assert chart.rows == [("1 Nov", ["3", "1"]), ("2 Nov", ["0", "2"])]
    assert chart.total_row == []


def test_money_charts_format_with_usd_and_total_each_period():
    chart = bar_chart(
        "cost",
        "Cost by model",
        "Stacked bars.",
        period="Day",
        labels=["1 Nov", "2 Nov"],
        axis_labels=["1", "2"],
        series=[Series("Flash", "c-model0", [D("0.013"), D(0)]), Series("Pro", "c-model1", [D("1234.5"), D("0.004")])],
        money=True,
        total=True,
    )

    assert [label for _, label in chart.value_ticks] == [
        "USD 0.00",
        "USD 500.00",
        "USD 1,000.00",
        "USD 1,500.00",
        "USD 2,000.00",
    ]
    assert chart.rows == [
        ("1 Nov", ["USD 0.01", "USD 1,234.50", "USD 1,234.51"]),
        ("2 Nov", ["USD 0.00", "USD 0.00", "USD 0.00"]),
    ]
    assert chart.total_row == ["USD 0.01", "USD 1,234.50", "USD 1,234.52"]  # each rounded from the exact sum


def test_small_amounts_keep_a_cent_grid_and_nothing_is_drawn_for_nothing():
    tiny = bar_chart(
        "cost",
        "Cost",
        "d",
        period="Day",
        labels=["a"],
        axis_labels=["a"],
        series=[Series("F", "c-model0", [D("0.013")])],
        money=True,
    )
    empty = bar_chart(
        "requests",
        "Requests",
        "d",
        period="Hour",
        labels=["a", "b"],
        axis_labels=["a", "b"],
        series=[Series("S", "c-ok", [0, 0])],
    )

    assert [label for _, label in tiny.value_ticks] == ["USD 0.00", "USD 0.01", "USD 0.02", "USD 0.03", "USD 0.04"]
    assert [label for _, label in empty.value_ticks] == ["0", "1", "2", "3", "4"]
    assert [column.bars for column in empty.columns] == [[], []]


def test_lines_have_a_point_per_period_and_a_few_time_labels():
    values = list(range(0, 90 * 1000, 1000))
    chart = line_chart(
        "tokens",
        "Tokens",
        "Lines.",
        period="Day",
        labels=[f"day {n}" for n in range(90)],
        axis_labels=[f"d{n}" for n in range(90)],
        series=[Series("Input tokens", "c-input", values)],
    )

    color, points = chart.lines[0]
    assert color == "c-input"
    assert len(points.split()) == 90
    assert points.split()[0].endswith(f",{BASE:.1f}")  # zero sits on the zero line
    assert chart.points == []  # 90 points are not marked one by one
    assert [label for _, label in chart.time_ticks] == ["d0", "d15", "d30", "d45", "d60", "d75"]
    assert chart.value_ticks[-1][1] == "100,000"


@pytest.mark.parametrize("language", ["en", "ja", "de", "fr"])
def test_counts_are_grouped_as_number_format_groups_them(language):
    values = [0, 7, -7, 999, 1000, -1000, 123456, 1234567, -98765432, 10**15 + 1, D("1234567"), 1234.5]
    with translation.override(language):
        assert [count(v) for v in values] == [number_format(v, force_grouping=True, use_l10n=True) for v in values]
