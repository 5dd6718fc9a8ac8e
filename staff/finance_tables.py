"""The Finance queues' tables (staff.views.finance). Columns give the headers; each table's template renders
its rows in one loop (templates/staff/finance/*_table.html), as studio.tables.ApiKeyTable does."""

import django_tables2 as tables
from django.utils.translation import gettext_lazy as _


class _Queue(tables.Table):
    class Meta:
        attrs = {"class": "table"}
        orderable = False


class RefundTable(_Queue):
    account = tables.Column(verbose_name=_("Account"))
    amount = tables.Column(verbose_name=_("Amount"))
    requested = tables.Column(verbose_name=_("Requested by"), accessor="requested_at")
    reason = tables.Column(verbose_name=_("Reason"))
    first_approval = tables.Column(verbose_name=_("First approval"), accessor="first_approved_at")
    status = tables.Column(verbose_name=_("Status"))
    actions = tables.Column(verbose_name=_("Decision"), accessor="pk")

    class Meta(_Queue.Meta):
        template_name = "staff/finance/refunds_table.html"
        empty_text = _("No refund request matches.")


class TransferTable(_Queue):
    account = tables.Column(verbose_name=_("Account"))
    country = tables.Column(verbose_name=_("Country"), accessor="account__country")
    amount = tables.Column(verbose_name=_("Amount"))
    reference = tables.Column(verbose_name=_("Reference"), accessor="processor_reference")
    created_at = tables.Column(verbose_name=_("Started"))
    created_by = tables.Column(verbose_name=_("Started by"))
    actions = tables.Column(verbose_name=_("Decision"), accessor="pk")

    class Meta(_Queue.Meta):
        template_name = "staff/finance/transfers_table.html"
        empty_text = _("No bank transfer is waiting.")


class PastDueTable(_Queue):
    account = tables.Column(verbose_name=_("Account"))
    amount_due = tables.Column(verbose_name=_("Amount due"))
    oldest = tables.Column(verbose_name=_("Oldest failed statement"))
    retries = tables.Column(verbose_name=_("Retries made"))
    next_retry_at = tables.Column(verbose_name=_("Next retry"))
    status = tables.Column(verbose_name=_("Account status"))
    actions = tables.Column(verbose_name=_("Decision"), accessor="account__pk")

    class Meta(_Queue.Meta):
        template_name = "staff/finance/past_due_table.html"
        empty_text = _("No account is past due.")


class GoodwillTable(_Queue):
    account = tables.Column(verbose_name=_("Account"))
    amount = tables.Column(verbose_name=_("Amount"))
    reason_code = tables.Column(verbose_name=_("Reason code"))
    note = tables.Column(verbose_name=_("Note"))
    credit_expires_at = tables.Column(verbose_name=_("Credit expires"))
    requested = tables.Column(verbose_name=_("Requested by"), accessor="requested_at")
    status = tables.Column(verbose_name=_("Status"))
    actions = tables.Column(verbose_name=_("Decision"), accessor="pk")

    class Meta(_Queue.Meta):
        template_name = "staff/finance/goodwill_table.html"
        empty_text = _("No goodwill credit matches.")
