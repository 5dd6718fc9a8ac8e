import django_tables2 as tables
from django.utils.translation import gettext_lazy as _

from studio.models import ApiKey


class ApiKeyTable(tables.Table):
    """The keys table. Columns give the headers and sorting; the rows are rendered in one loop
    by its template (`studio/api_keys_table.html`), which includes the cell templates.

    Rendering cell by cell through django-tables2 cost ~3x the whole page (700 cell renders,
    each with a fresh context); see bench/README.md.
    """

    key = tables.Column(verbose_name=_("Key"), accessor="prefix", orderable=False)
    name = tables.Column(verbose_name=_("Name"))
    project = tables.Column(verbose_name=_("Project"), order_by=("project__name", "project__project_id"))
    created_at = tables.Column(verbose_name=_("Created on"))
    quota_tier = tables.Column(verbose_name=_("Quota tier"), accessor="project__tier", order_by=("project__tier",))
    plan = tables.Column(verbose_name=_("Plan"), accessor="project__tier", orderable=False)
    actions = tables.Column(verbose_name=_("Actions"), accessor="pk", orderable=False)

    class Meta:
        model = ApiKey
        fields = ("key", "name", "project", "created_at", "quota_tier", "plan", "actions")
        template_name = "studio/api_keys_table.html"
        empty_text = _("No API keys yet. Create one to call the API.")
        attrs = {"class": "table"}
        orderable = True
