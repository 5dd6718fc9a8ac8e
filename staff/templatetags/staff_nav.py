from django import template
from django.conf import settings

from staff.nav import navigation

register = template.Library()


@register.inclusion_tag("staff/includes/nav.html", takes_context=True)
def staff_nav(context):
    return {"items": navigation(context["request"])}


@register.simple_tag
def staff_two_factor_required() -> bool:
    """Whether staff must pass the second factor (off in the demo, which says so on every staff page)."""
    return settings.STAFF_REQUIRE_2FA
