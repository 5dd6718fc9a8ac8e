"""Seed the model catalog, prices, rate limits and spend limits (facts.md)."""

from django.db import migrations

from usage import catalog_data


def seed(apps, schema_editor):
    catalog_data.load(*(apps.get_model("usage", name) for name in ("CatalogModel", "Price", "RateLimit", "SpendLimit")))


class Migration(migrations.Migration):
    dependencies = [("usage", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
