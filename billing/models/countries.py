from django.db import models
from django.utils.translation import gettext_lazy as _
from django_countries import countries


class CountryQuerySet(models.QuerySet):
    def billable(self):
        return self.filter(billing_supported=True)


class Country(models.Model):
    """Billing rules for one ISO 3166-1 country (R11). Names come translated from django-countries."""

    code = models.CharField(_("code"), max_length=2, primary_key=True)
    billing_supported = models.BooleanField(_("billing supported"), default=True)
    free_tier_available = models.BooleanField(_("free tier available"), default=True)
    prepayment_required = models.BooleanField(_("prepayment required"), default=False)
    # None: the default minimum (settings.PREPAYMENT_DEFAULT_AMOUNT).
    prepayment_amount = models.DecimalField(
        _("prepayment amount (USD)"), max_digits=10, decimal_places=2, null=True, blank=True
    )

    objects = CountryQuerySet.as_manager()

    class Meta:
        verbose_name = _("country")
        verbose_name_plural = _("countries")
        ordering = ["code"]

    def __str__(self):
        return f"{self.flag} {self.name}"

    @property
    def name(self) -> str:
        return countries.name(self.code) or self.code

    @property
    def flag(self) -> str:
        """The flag emoji: the code's letters as regional indicator symbols."""
        return "".join(chr(0x1F1E6 + ord(letter) - ord("A")) for letter in self.code.upper())
