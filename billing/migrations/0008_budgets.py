import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

import billing.models.budgets


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0007_billing_history_usage_lines"),
        ("studio", "0006_user_time_zone"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Budget",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("amount", models.DecimalField(decimal_places=2, max_digits=12, verbose_name="monthly amount (USD)")),
                (
                    "thresholds",
                    models.JSONField(
                        default=billing.models.budgets.default_thresholds, verbose_name="alert thresholds"
                    ),
                ),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now, verbose_name="created at")),
                ("updated_at", models.DateTimeField(auto_now=True, verbose_name="updated at")),
                (
                    "account",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="budgets", to="billing.billingaccount"
                    ),
                ),
                (
                    "created_by",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="+", to=settings.AUTH_USER_MODEL
                    ),
                ),
                (
                    "project",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="studio.project",
                        verbose_name="project",
                    ),
                ),
            ],
            options={"verbose_name": "budget", "verbose_name_plural": "budgets"},
        ),
        migrations.CreateModel(
            name="BudgetAlert",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("month", models.DateField(verbose_name="month")),
                ("percent", models.PositiveSmallIntegerField(verbose_name="percent")),
                (
                    "basis",
                    models.CharField(
                        choices=[("actual", "actual spend"), ("forecast", "forecast spend")],
                        max_length=10,
                        verbose_name="of",
                    ),
                ),
                ("amount", models.DecimalField(decimal_places=2, max_digits=12, verbose_name="budget (USD)")),
                ("spend", models.DecimalField(decimal_places=6, max_digits=18, verbose_name="spend (USD)")),
                ("forecast", models.DecimalField(decimal_places=6, max_digits=18, verbose_name="forecast (USD)")),
                ("sent_at", models.DateTimeField(default=django.utils.timezone.now, verbose_name="sent at")),
                (
                    "budget",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="alerts", to="billing.budget"
                    ),
                ),
            ],
            options={"verbose_name": "budget alert", "verbose_name_plural": "budget alerts"},
        ),
        migrations.AddConstraint(
            model_name="budget",
            constraint=models.CheckConstraint(condition=models.Q(("amount__gt", 0)), name="budget_amount_positive"),
        ),
        migrations.AddConstraint(
            model_name="budget",
            constraint=models.UniqueConstraint(
                condition=models.Q(("project__isnull", True)),
                fields=("account",),
                name="one_account_budget_per_account",
            ),
        ),
        migrations.AddConstraint(
            model_name="budget",
            constraint=models.UniqueConstraint(
                condition=models.Q(("project__isnull", False)),
                fields=("account", "project"),
                name="one_budget_per_project",
            ),
        ),
        migrations.AddConstraint(
            model_name="budgetalert",
            constraint=models.UniqueConstraint(
                fields=("budget", "month", "percent", "basis"), name="one_alert_per_threshold_per_month"
            ),
        ),
    ]
