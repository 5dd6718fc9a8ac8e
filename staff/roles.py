"""The two staff groups and what each may do (SPEC §10). A superuser may do everything.

Permissions live on the models they are about (e.g. `billing.decide_refund` on RefundRequest); this
module is the one list of which group holds which. `ensure_groups` makes the database say the same.
"""

from django.contrib.auth.models import Group, Permission

SUPPORT, FINANCE = "Support", "Finance"

LOOKUP = "studio.lookup_customer"
VIEW_AS = "studio.view_as_customer"
OVERRIDE_TIER = "studio.override_tier"
DECIDE_QUOTA = "usage.decide_quota_increase"
VIEW_AUDIT = "studio.view_auditevent"
DECIDE_REFUND = "billing.decide_refund"
DECIDE_TRANSFER = "billing.decide_bank_transfer"
GRANT_GOODWILL = "billing.grant_goodwill"
SUSPEND = "billing.suspend_account"
MANAGE_PROMOTIONS = "billing.add_promocode"

GROUPS = {
    SUPPORT: [LOOKUP, VIEW_AS, OVERRIDE_TIER, DECIDE_QUOTA, VIEW_AUDIT],
    FINANCE: [LOOKUP, VIEW_AUDIT, DECIDE_REFUND, DECIDE_TRANSFER, GRANT_GOODWILL, SUSPEND, MANAGE_PROMOTIONS],
}


def ensure_groups() -> None:
    """Create the groups and set their permissions to exactly GROUPS (safe to run any number of times)."""
    for name, perms in GROUPS.items():
        group, _created = Group.objects.get_or_create(name=name)
        wanted = []
        for perm in perms:
            app_label, codename = perm.split(".")
            wanted.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
        group.permissions.set(wanted)


def on_post_migrate(sender, **kwargs):
    # contrib.auth creates permissions on post_migrate of each app (studio, billing, usage come before staff in
    # INSTALLED_APPS); a partial migrate (e.g. to an early migration) may not have them yet.
    if Permission.objects.filter(codename="decide_refund").exists():
        ensure_groups()
