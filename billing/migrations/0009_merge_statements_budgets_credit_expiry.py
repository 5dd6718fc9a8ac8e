"""Statements, budgets and credit expiry were built side by side; this joins their migrations."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0008_budgets"),
        ("billing", "0008_credit_expiry"),
        ("billing", "0008_statements"),
    ]

    operations = []
