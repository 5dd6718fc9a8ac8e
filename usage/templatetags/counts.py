"""`{{ value|count }}`: a count (requests, tokens) as the console shows it, grouped in the
language's way ("1,234,567"); the dashboard's charts format theirs with the same function."""

from django import template

from usage.charts import count as format_count

register = template.Library()


@register.filter(is_safe=False)
def count(value) -> str:
    """None shows nothing, as template filters do."""
    return "" if value is None else format_count(value)
