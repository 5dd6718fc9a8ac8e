"""Seed every ISO 3166-1 country with its billing rules, and the payment-method prepayment rule."""

from django.db import migrations

from billing import reference_data


def seed(apps, schema_editor):
    reference_data.load(apps.get_model("billing", "Country"), apps.get_model("billing", "PrepaymentMethodRule"))


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
