"""Reference data seeded by migration 0002 (R11, R12); staff edit it in the admin afterwards.

`load` takes the model classes so that the migration can pass its historical models.
"""

from decimal import Decimal

from django_countries.data import COUNTRIES

# Where the platform does not offer the API at all (so neither billing nor a free tier).
UNAVAILABLE = {"BY", "CN", "CU", "IR", "KP", "RU", "SY"}
# Examples from the billing facts: new accounts here make a one-time prepayment.
PREPAYMENT_COUNTRIES = {"IN": Decimal("10.00"), "PK": Decimal("10.00")}
# Paying by bank account makes a one-time prepayment due.
PREPAYMENT_METHOD_KINDS = {"bank_account": Decimal("10.00")}


def load(Country, PrepaymentMethodRule):
    """Insert what is missing; never overwrite what staff changed."""
    Country.objects.bulk_create(
        [
            Country(
                code=code,
                billing_supported=code not in UNAVAILABLE,
                free_tier_available=code not in UNAVAILABLE,
                prepayment_required=code in PREPAYMENT_COUNTRIES,
                prepayment_amount=PREPAYMENT_COUNTRIES.get(code),
            )
            for code in COUNTRIES
        ],
        ignore_conflicts=True,
    )
    for kind, amount in PREPAYMENT_METHOD_KINDS.items():
        PrepaymentMethodRule.objects.get_or_create(payment_method_kind=kind, defaults={"amount": amount})


# R17 defaults (facts.md): Tier 2 and Tier 3 by total spend and days since the first payment.
TIER_RULES = {"tier_2": (Decimal("250.00"), 30), "tier_3": (Decimal("1000.00"), 30)}


def load_tier_rules(TierRule):
    for tier, (spend, days) in TIER_RULES.items():
        TierRule.objects.get_or_create(
            tier=tier, defaults={"min_total_spend": spend, "min_days_since_first_payment": days}
        )
