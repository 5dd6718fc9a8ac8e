"""The billing set-up wizard's state, kept on the server so that back, refresh and a second tab
never lose input or create a second account."""

import uuid

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from billing.models.accounts import BillingAccount, PaymentMethod
from billing.models.countries import Country
from studio.models import AuditEvent


class SetupFlow(models.TextChoices):
    NEW = "new", _("New billing account")
    EXISTING = "existing", _("Existing billing account")


class SetupSession(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    project = models.ForeignKey("studio.Project", on_delete=models.CASCADE, null=True, related_name="+")
    api_key = models.ForeignKey("studio.ApiKey", on_delete=models.SET_NULL, null=True, related_name="+")
    flow = models.CharField(max_length=10, choices=SetupFlow.choices)
    country = models.ForeignKey(Country, on_delete=models.PROTECT, null=True, related_name="+")
    terms_accepted = models.BooleanField(default=False)
    selected_account = models.ForeignKey(BillingAccount, on_delete=models.SET_NULL, null=True, related_name="+")
    payment_method = models.ForeignKey(PaymentMethod, on_delete=models.SET_NULL, null=True, related_name="+")
    result = models.ForeignKey(BillingAccount, on_delete=models.PROTECT, null=True, related_name="+")
    welcome_credit_granted = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True)

    class Meta:
        verbose_name = _("billing set-up")
        verbose_name_plural = _("billing set-ups")
        # One open set-up per person: a second tab resumes it instead of starting another.
        constraints = [
            models.UniqueConstraint(
                fields=["user"], condition=Q(finished_at__isnull=True), name="one_open_setup_per_user"
            )
        ]

    def __str__(self):
        return f"{self.user} {self.flow} {self.created_at:%Y-%m-%d %H:%M}"

    @property
    def is_finished(self) -> bool:
        return self.finished_at is not None

    @property
    def steps(self) -> list[tuple[str, str]]:
        """The stepper: the details step only where the flow goes there (a new account)."""
        steps = [("project", _("Project and key")), ("account", _("Billing account"))]
        if self.flow == SetupFlow.NEW:
            steps.append(("details", _("Account details")))
        return steps

    # Each step's choice, saved at once (the wizard's state lives here, not in the browser).

    def choose_project(self, project, api_key) -> None:
        self.project, self.api_key = project, api_key
        after = {"project": project.project_id, "api_key": api_key.pk if api_key else None}
        self._save(["project", "api_key"], "setup.project", **after)

    def choose_country(self, country: Country) -> None:
        """A new billing user's country, with the terms accepted on the same step."""
        self.country, self.terms_accepted, self.flow = country, True, SetupFlow.NEW
        self._save(["country", "terms_accepted", "flow"], "setup.country", country=country.pk, terms_accepted=True)

    def choose_existing_account(self, account: BillingAccount) -> None:
        self.selected_account, self.flow = account, SetupFlow.EXISTING
        self._save(["selected_account", "flow"], "setup.account", account=account.account_id)

    def choose_new_account(self, country: Country) -> None:
        """An existing billing user adds an account: they accepted the terms with their first one,
        and the new account is in `country` (their payments profile's, R9)."""
        self.selected_account, self.flow, self.country, self.terms_accepted = None, SetupFlow.NEW, country, True
        self._save(["selected_account", "flow", "country", "terms_accepted"], "setup.new_account", country=country.pk)

    def choose_payment_method(self, method: PaymentMethod | None) -> None:
        self.payment_method = method
        self._save(["payment_method"], "setup.payment_method", payment_method=method.pk if method else None)

    def _save(self, fields: list[str], action: str, **after) -> None:
        """Save a step's choice with its audit event (the person's own, as every step is theirs)."""
        with transaction.atomic():
            self.save(update_fields=fields)
            AuditEvent.record(actor=self.user, action=action, obj=self, after=after)
