"""`{% key_rows table %}`: the keys table's rows (studio/api_keys_table.html), written in one pass.

Up to 100 rows of seven cells: through the template engine that was some 4,000 node renders a page, most of
the keys page's time (bench/README.md, issue 14). The markup is the same as the template's was, byte for byte
(a test holds it to a template rendering of the same rows); values are escaped as autoescape would. The Quota
tier cell stays the one template it is everywhere (studio/includes/quota_tier.html), rendered once per project
and role on the page: rows of one project share it.
"""

from django import template
from django.template.defaultfilters import date as date_filter
from django.urls import reverse
from django.utils.html import conditional_escape
from django.utils.safestring import mark_safe
from django.utils.timezone import template_localtime
from django.utils.translation import gettext

register = template.Library()

COPY_ICON = (
    '<svg viewBox="0 0 24 24" width="16" height="16" aria-hidden="true" focusable="false"><path fill="currentColor" '
    'd="M16 1H4a2 2 0 0 0-2 2v14h2V3h12V1zm3 4H8a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h11a2 2 0 0 0 2-2V7a2 2 0 0 0-2-2zm0 '
    '16H8V7h11v14z"/></svg>'
)
QUOTA_CELL = "studio/includes/quota_tier.html"


@register.simple_tag(takes_context=True)
def key_rows(context, rows) -> str:
    e = conditional_escape
    copy_label, free, paid = e(gettext("Copy key prefix")), e(gettext("Free")), e(gettext("Paid"))
    rename, revoke, view_only, usage = (
        e(gettext("Rename")),
        e(gettext("Revoke")),
        e(gettext("View only")),
        e(gettext("Usage")),
    )
    keys_url, usage_url = e(reverse("api-keys")), e(reverse("usage:dashboard"))
    cell_template = context.template.engine.get_template(QUOTA_CELL)
    cells: dict[tuple[int, bool], str] = {}
    out = []
    for index, row in enumerate(rows):
        record = row.record
        project = record.project
        pk = "%d" % record.pk  # noqa: UP031 (as stringformat:"d": unlocalized, an id in a URL)
        read_only = record.read_only
        cell = cells.get((project.pk, read_only))
        if cell is None:
            with context.push(project=project, read_only=read_only):
                cell = cells[(project.pk, read_only)] = cell_template.render(context)
        prefix = e(record.prefix)
        if read_only:
            actions = f'<span class="muted">{view_only}</span>'
        else:
            actions = (
                f'<a href="{keys_url}{pk}/rename/" data-hx-get="{keys_url}{pk}/rename/" data-hx-target="#modal">'
                f'{rename}</a> <a class="danger" href="{keys_url}{pk}/revoke/" data-hx-get="{keys_url}{pk}/revoke/" '
                f'data-hx-target="#modal">{revoke}</a>'
            )
        created = e(date_filter(template_localtime(record.created_at), "SHORT_DATE_FORMAT"))
        out.append(
            f'\n  <tr class="{"odd" if index % 2 else "even"}">\n'
            f'    <td><span class="key-cell"><code id="key-{pk}">{prefix}…{e(record.last4)}</code>'
            f'<button type="button" class="icon-button copy" data-copy="{prefix}" title="{copy_label}" '
            f'aria-label="{copy_label}">{COPY_ICON}</button></span></td>\n'
            f'    <td><a href="{keys_url}{pk}/">{e(record.name)}</a></td>\n'
            f'    <td><span class="project-cell">{e(project.name)}<small>{e(project.project_id)}</small></span></td>\n'
            f"    <td>{created}</td>\n"
            f"    <td>{cell}</td>\n"
            f"    <td>{paid if project.is_paid else free}\n</td>\n"
            f'    <td><span class="row-actions"><a href="{usage_url}?project={e(project.project_id)}&amp;key={pk}">'
            f"{usage}</a> {actions}</span></td>\n"
            f"  </tr>\n"
        )
    return mark_safe("".join(out))  # noqa: S308 (every value above is escaped)
