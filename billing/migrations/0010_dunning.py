"""Dunning (SPEC §9): retries by number, who paid from the statement page, why an account is suspended."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def staff_suspensions(apps, schema_editor):
    # Accounts suspended before dunning existed were suspended by staff: a payment must not lift that.
    BillingAccount = apps.get_model("billing", "BillingAccount")
    BillingAccount.objects.filter(status="suspended").update(suspension_reason="staff")


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0009_merge_statements_budgets_credit_expiry"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="billingaccount",
            name="suspension_reason",
            field=models.CharField(
                blank=True,
                choices=[("past_due", "Past-due statement"), ("staff", "Suspended by our billing team")],
                default="",
                max_length=10,
                verbose_name="suspension reason",
            ),
        ),
        migrations.AddField(
            model_name="statement",
            name="first_failed_at",
            field=models.DateTimeField(blank=True, null=True, verbose_name="first failed at"),
        ),
        migrations.AddField(
            model_name="statement",
            name="suspended_at",
            field=models.DateTimeField(blank=True, null=True, verbose_name="account suspended at"),
        ),
        migrations.AddField(
            model_name="statementpayment",
            name="created_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddField(
            model_name="statementpayment",
            name="retry",
            field=models.PositiveSmallIntegerField(blank=True, null=True, verbose_name="retry"),
        ),
        migrations.AddConstraint(
            model_name="statementpayment",
            constraint=models.UniqueConstraint(fields=("statement", "retry"), name="one_statement_payment_per_retry"),
        ),
        migrations.AddConstraint(
            model_name="statementpayment",
            constraint=models.UniqueConstraint(
                condition=models.Q(("status__in", ["processing", "unknown"])),
                fields=("statement",),
                name="one_open_statement_payment",
            ),
        ),
        migrations.RunPython(staff_suspensions, migrations.RunPython.noop),
    ]
