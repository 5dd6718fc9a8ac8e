import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0007_billing_history_usage_lines"),
    ]

    operations = [
        migrations.CreateModel(
            name="CreditExpiry",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "amount",
                    models.DecimalField(decimal_places=6, max_digits=18, verbose_name="written off (USD)"),
                ),
                (
                    "processed_at",
                    models.DateTimeField(default=django.utils.timezone.now, verbose_name="processed at"),
                ),
                (
                    "credit",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.PROTECT, related_name="expiry", to="billing.credit"
                    ),
                ),
                (
                    "entry",
                    models.OneToOneField(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="billing.ledgerentry",
                    ),
                ),
            ],
            options={
                "verbose_name": "credit expiry",
                "verbose_name_plural": "credit expiries",
            },
        ),
        migrations.CreateModel(
            name="CreditReminder",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "days_before",
                    models.PositiveSmallIntegerField(
                        choices=[(14, "14 days before expiry"), (3, "3 days before expiry")],
                        verbose_name="days before expiry",
                    ),
                ),
                (
                    "remaining",
                    models.DecimalField(decimal_places=6, max_digits=18, verbose_name="remaining (USD)"),
                ),
                ("recipients", models.PositiveSmallIntegerField(verbose_name="recipients")),
                ("sent_at", models.DateTimeField(default=django.utils.timezone.now, verbose_name="sent at")),
                (
                    "credit",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="reminders", to="billing.credit"
                    ),
                ),
            ],
            options={
                "verbose_name": "credit expiry reminder",
                "verbose_name_plural": "credit expiry reminders",
                "constraints": [
                    models.UniqueConstraint(fields=("credit", "days_before"), name="one_reminder_per_credit_and_stage")
                ],
            },
        ),
    ]
