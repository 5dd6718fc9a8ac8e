"""Promotional codes under the two-person rule: who approved a code, when, and why. Codes created before this were
approved by their creator when they were created."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def approve_existing(apps, schema_editor):
    PromoCode = apps.get_model("billing", "PromoCode")
    PromoCode.objects.update(approved_at=models.F("created_at"), approved_by=models.F("created_by"))


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0011_staff_console"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="promocode",
            name="approval_note",
            field=models.TextField(blank=True, verbose_name="approval note"),
        ),
        migrations.AddField(
            model_name="promocode",
            name="approved_at",
            field=models.DateTimeField(blank=True, null=True, verbose_name="approved at"),
        ),
        migrations.AddField(
            model_name="promocode",
            name="approved_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.RunPython(approve_existing, migrations.RunPython.noop),
    ]
