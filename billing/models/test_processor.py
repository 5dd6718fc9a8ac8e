"""The built-in test processor's own records (what a real processor keeps on its side)."""

from django.db import models
from django.utils import timezone


class TestProcessorToken(models.Model):
    __test__ = False  # not a pytest test class
    token = models.CharField(max_length=40, primary_key=True)
    behaviour = models.CharField(max_length=20)

    class Meta:
        verbose_name = "test processor card"

    def __str__(self):
        return f"{self.token} ({self.behaviour})"


class TestProcessorCharge(models.Model):
    __test__ = False
    idempotency_key = models.CharField(max_length=100, unique=True)
    token = models.CharField(max_length=40, blank=True)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    status = models.CharField(max_length=10)  # succeeded, failed, pending
    failure_code = models.CharField(max_length=30, blank=True)
    reference = models.CharField(max_length=40, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "test processor charge"

    def __str__(self):
        return f"{self.reference} {self.amount} {self.status}"
