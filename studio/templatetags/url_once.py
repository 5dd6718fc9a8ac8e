"""`{% url_once "name" as var %}`: `{% url %}` for a URL without arguments, reversed once per page.

For a template repeated on every row of a table (the Quota tier cell on up to 100 rows): each
`reverse()` costs about as much as the rest of the cell (bench/README.md), and a URL without
arguments is the same on every row of one render.
"""

from django import template
from django.urls import reverse

register = template.Library()

_MEMO = object()  # the key of this page's reversed URLs in the render context


@register.simple_tag(takes_context=True)
def url_once(context, viewname: str) -> str:
    # dicts[0] lives for the whole render of the outermost template, includes and partials too
    # (the include tag caches its templates there the same way).
    memo = context.render_context.dicts[0].setdefault(_MEMO, {})
    if viewname not in memo:
        memo[viewname] = reverse(viewname)
    return memo[viewname]
