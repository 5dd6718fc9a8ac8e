"""Write-through of what quota:check reads (usage.admission_store): every change of a key, a project, its billing
link or account, its quota overrides or the catalog names what it changed, from the models' signals.

Connected in UsageConfig.ready. The lower floors (studio, billing) know nothing of admission: usage listens to them.
A save that names its `update_fields` is passed over when none of them is read by admission (a project's name, a
key's last use)."""

from django.db.models.signals import post_delete, post_save

from billing.models import BillingAccount, ProjectBilling
from studio.models import ApiKey, Project
from usage import admission_store
from usage.models import CatalogModel, QuotaOverride, RateLimit, SpendLimit

PROJECT_FIELDS = frozenset({"project_id", "tier", "billing_state", "monthly_spend_cap", "spend_cap_since"})
KEY_FIELDS = frozenset({"project", "project_id", "secret_hash", "revoked_at"})
ACCOUNT_FIELDS = frozenset({"status"})


def _reads(update_fields, fields) -> bool:
    return update_fields is None or not fields.isdisjoint(update_fields)


def key_saved(sender, instance, update_fields=None, **kwargs):
    if _reads(update_fields, KEY_FIELDS):
        admission_store.keys_changed([instance])


def key_deleted(sender, instance, **kwargs):
    admission_store.key_deleted(instance.secret_hash)


def project_saved(sender, instance, update_fields=None, **kwargs):
    if _reads(update_fields, PROJECT_FIELDS):
        admission_store.projects_changed([instance.pk])


def project_deleted(sender, instance, **kwargs):
    admission_store.projects_changed([instance.pk])


def link_changed(sender, instance, **kwargs):
    admission_store.projects_changed([instance.project_id])


def account_saved(sender, instance, created=False, update_fields=None, **kwargs):
    # A new account pays for no project yet: its links write the projects' records.
    if not created and _reads(update_fields, ACCOUNT_FIELDS):
        admission_store.accounts_changed([instance.pk])


def catalog_changed(sender, **kwargs):
    admission_store.catalog_changed()


def connect() -> None:
    post_save.connect(key_saved, sender=ApiKey, dispatch_uid="admission.key_saved")
    post_delete.connect(key_deleted, sender=ApiKey, dispatch_uid="admission.key_deleted")
    post_save.connect(project_saved, sender=Project, dispatch_uid="admission.project_saved")
    post_delete.connect(project_deleted, sender=Project, dispatch_uid="admission.project_deleted")
    for signal in (post_save, post_delete):
        signal.connect(link_changed, sender=ProjectBilling, dispatch_uid=f"admission.link.{id(signal)}")
        signal.connect(link_changed, sender=QuotaOverride, dispatch_uid=f"admission.override.{id(signal)}")
        for model in (CatalogModel, RateLimit, SpendLimit):
            uid = f"admission.catalog.{model.__name__}.{id(signal)}"
            signal.connect(catalog_changed, sender=model, dispatch_uid=uid)
    post_save.connect(account_saved, sender=BillingAccount, dispatch_uid="admission.account_saved")
