"""`{% repeat_block "name" %}`: a block's content, rendered again further down the same page.

Django defines a block once per template. partials/dialog.html needs two blocks twice: the
title (the page's <title> and the dialog's heading) and the form's URL (action and data-hx-post).
"""

from django import template
from django.template.base import NodeList
from django.template.loader_tags import BlockNode

register = template.Library()


@register.simple_tag(takes_context=True)
def repeat_block(context, name: str) -> str:
    # An empty block of that name renders the most derived template's content for it, as a second
    # {% block name %}{% endblock %} would if Django allowed one (through the same block context).
    return BlockNode(name, NodeList()).render(context)
