"""The quota increase queue's table (staff.views.quotas). Columns give the headers; the template renders the rows in
one loop (templates/staff/quotas/requests_table.html), as studio.tables.ApiKeyTable does."""

import django_tables2 as tables
from django.utils.translation import gettext_lazy as _


class QuotaRequestTable(tables.Table):
    project = tables.Column(verbose_name=_("Project"))
    model = tables.Column(verbose_name=_("Model"))
    metric = tables.Column(verbose_name=_("Limit"))
    current = tables.Column(verbose_name=_("Current"), accessor="current_limit")
    requested = tables.Column(verbose_name=_("Requested"), accessor="requested_value")
    requester = tables.Column(verbose_name=_("Requester"), accessor="requested_by")
    reason = tables.Column(verbose_name=_("Reason"))
    age = tables.Column(verbose_name=_("Age"), accessor="requested_at")
    status = tables.Column(verbose_name=_("Status"))
    actions = tables.Column(verbose_name=_("Decision"), accessor="pk")

    class Meta:
        attrs = {"class": "table"}
        orderable = False
        template_name = "staff/quotas/requests_table.html"
        empty_text = _("No quota increase request matches.")
