"""Seed the default tier criteria (R17)."""

from django.db import migrations

from billing import reference_data


def seed(apps, schema_editor):
    reference_data.load_tier_rules(apps.get_model("billing", "TierRule"))


class Migration(migrations.Migration):
    dependencies = [("billing", "0004_prepayments_refunds_tiers")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
