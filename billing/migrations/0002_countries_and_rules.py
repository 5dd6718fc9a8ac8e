"""Seed data (R11, R12): every ISO 3166-1 country with its billing rules, and the payment-method
prepayment rule. Staff edit these in the admin afterwards."""

from decimal import Decimal

from django.db import migrations
from django_countries.data import COUNTRIES

# Where the platform does not offer the API at all (so neither billing nor a free tier).
UNAVAILABLE = {"BY", "CN", "CU", "IR", "KP", "RU", "SY"}
# Examples from the billing facts: new accounts here make a one-time prepayment.
PREPAYMENT_COUNTRIES = {"IN": Decimal("10.00"), "PK": Decimal("10.00")}


def seed(apps, schema_editor):
    Country = apps.get_model("billing", "Country")
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
    Rule = apps.get_model("billing", "PrepaymentMethodRule")
    Rule.objects.get_or_create(payment_method_kind="bank_account", defaults={"amount": Decimal("10.00")})


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
