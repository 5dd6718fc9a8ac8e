"""The staff console's table of promotional codes (rows come annotated by billing.promotions.with_state)."""

import django_tables2 as tables
from django.utils.translation import gettext_lazy as _

from billing.models import PromoCode
from billing.promotions import PromoState
from studio.templatetags.money import usd


class PromoCodeTable(tables.Table):
    code = tables.Column(verbose_name=_("Code"), linkify=("staff:promotion", {"pk": tables.A("pk")}))
    description = tables.Column(verbose_name=_("Description"), orderable=False)
    amount = tables.Column(verbose_name=_("Credit"))
    redemptions = tables.Column(
        verbose_name=_("Redemptions (used / allowed)"), accessor="times_redeemed", order_by=("times_redeemed",)
    )
    redeem_by = tables.DateTimeColumn(verbose_name=_("Redeemable until"), format="SHORT_DATETIME_FORMAT")
    credit_valid_days = tables.Column(verbose_name=_("Credit valid (days)"))
    state = tables.Column(verbose_name=_("State"))
    created_at = tables.DateTimeColumn(verbose_name=_("Created"), format="SHORT_DATETIME_FORMAT")

    class Meta:
        model = PromoCode
        fields = (
            "code",
            "description",
            "amount",
            "redemptions",
            "redeem_by",
            "credit_valid_days",
            "state",
            "created_at",
        )
        empty_text = _("No promotional codes.")
        attrs = {"class": "table"}

    def render_amount(self, value) -> str:
        return usd(value)

    def render_redemptions(self, record) -> str:
        return f"{record.times_redeemed} / {record.max_redemptions}"

    def render_state(self, value) -> str:
        return PromoState(value).label
