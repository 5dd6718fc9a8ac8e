"""The Quota tier cell's state enum for templates: `{% quota_states as QuotaState %}`.

The cell (studio/includes/quota_tier.html) compares `project.quota_state` with its members, never
with raw strings; it loads the enum itself, so every page that includes the cell gets it.
"""

from django import template

from studio.models import QuotaState

register = template.Library()


@register.simple_tag
def quota_states() -> type[QuotaState]:
    # Django's Choices set do_not_call_in_templates, so QuotaState.SET_UP_BILLING looks members up.
    return QuotaState
