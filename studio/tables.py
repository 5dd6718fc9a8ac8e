import django_tables2 as tables
from django.utils.translation import gettext_lazy as _

from studio.models import ApiKey


class ApiKeyTable(tables.Table):
    key = tables.TemplateColumn(
        template_name="studio/cells/key.html", verbose_name=_("Key"), order_by=("prefix",), orderable=False
    )
    name = tables.TemplateColumn(template_name="studio/cells/name.html", verbose_name=_("Name"))
    project = tables.TemplateColumn(
        template_name="studio/cells/project.html",
        verbose_name=_("Project"),
        order_by=("project__name", "project__project_id"),
    )
    created_at = tables.DateColumn(verbose_name=_("Created on"), format="SHORT_DATE_FORMAT")
    quota_tier = tables.TemplateColumn(
        template_name="studio/cells/quota_tier.html",
        verbose_name=_("Quota tier"),
        order_by=("project__tier",),
        accessor="project__tier",
    )
    plan = tables.TemplateColumn(
        template_name="studio/cells/plan.html", verbose_name=_("Plan"), orderable=False, accessor="project__tier"
    )
    actions = tables.TemplateColumn(
        template_name="studio/cells/actions.html", verbose_name=_("Actions"), orderable=False, accessor="pk"
    )

    class Meta:
        model = ApiKey
        fields = ("key", "name", "project", "created_at", "quota_tier", "plan", "actions")
        empty_text = _("No API keys yet. Create one to call the API.")
        attrs = {"class": "table"}
        orderable = True
