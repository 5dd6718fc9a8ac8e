"""Accounts, Cloud projects, memberships, API keys and the audit log."""

import hmac
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.db import models, transaction
from django.db.models import F, FilteredRelation, ProtectedError, Q
from django.db.models.signals import pre_delete
from django.dispatch import receiver
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from studio import keyformat

# last_used_at is written at most once per this interval, so a busy key costs no write per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def normalize_email(email: str) -> str:
    return email.strip().lower()


class UserManager(BaseUserManager):
    use_in_migrations = True

    def get_by_natural_key(self, username):
        return self.get(email=normalize_email(username))

    def create_user(self, email, password=None, **fields):
        user = self.model(email=normalize_email(email), **fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email, password=None, **fields):
        fields.update(is_staff=True, is_superuser=True)
        return self.create_user(email, password, **fields)


class User(AbstractBaseUser, PermissionsMixin):
    email = models.EmailField(_("email address"), unique=True)
    full_name = models.CharField(_("name"), max_length=150, blank=True)
    language = models.CharField(_("language"), max_length=8, choices=settings.LANGUAGES, default="en")
    # An IANA zone name (studio.zones) for the times the console shows; blank: the browser's zone.
    time_zone = models.CharField(_("time zone"), max_length=64, blank=True)
    is_staff = models.BooleanField(_("staff status"), default=False)
    is_active = models.BooleanField(_("active"), default=True)
    date_joined = models.DateTimeField(_("date joined"), default=timezone.now)
    terms_accepted_at = models.DateTimeField(_("terms accepted at"), null=True, blank=True)
    # The paid API key linked to the studio: studio usage through it is billed (guide: AI Studio).
    studio_api_key = models.ForeignKey(
        "studio.ApiKey",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="studio_users",
        verbose_name=_("API key linked to the studio"),
    )
    # Set once the default project and key exist; makes provisioning safe to repeat.
    defaults_provisioned_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS = []

    class Meta:
        verbose_name = _("user")
        verbose_name_plural = _("users")
        # The staff console's (SPEC §10); staff.roles gives them to the Support and Finance groups.
        permissions = [
            ("lookup_customer", _("Can look customers up in the staff console")),
            ("view_as_customer", _("Can open a read-only view of a customer's console")),
        ]

    def __str__(self):
        return self.email

    def link_studio_key(self, key, *, by) -> bool:
        """Link `key` to the studio (None unlinks): studio usage through it is billed to its project.

        Writes one audit event, studio_key.link or studio_key.unlink, with the key's id and prefix
        before and after (never its secret); saving the same key again changes and records nothing.
        The caller checks that the key is a paid one the user may use (SettingsForm).
        """
        with transaction.atomic():
            locked = User.objects.select_for_update().get(pk=self.pk)
            self.studio_api_key = key
            if locked.studio_api_key_id == (key.pk if key else None):
                return False
            before = locked.studio_api_key
            locked.studio_api_key = key
            locked.save(update_fields=["studio_api_key"])
            # The history that decides, for each studio event, whether it is billed (SPEC §9).
            now = timezone.now()
            StudioKeyLink.objects.filter(user=locked, unlinked_at__isnull=True).update(unlinked_at=now)
            if key is not None:
                StudioKeyLink.objects.create(user=locked, api_key=key, linked_at=now)
            AuditEvent.record(
                actor=by,
                action="studio_key.link" if key else "studio_key.unlink",
                obj=locked,
                before=_studio_key_state(before),
                after=_studio_key_state(key),
            )
            return True

    def update_settings(self, *, by, **fields) -> bool:
        """Save the settings page's fields (`SETTINGS_FIELDS`) with one audit event, user.settings, of what changed
        (before and after). Returns False, recording nothing, when nothing changed."""
        with transaction.atomic():
            locked = User.objects.select_for_update().get(pk=self.pk)
            changed = {name: value for name, value in fields.items() if getattr(locked, name) != value}
            for name, value in fields.items():
                setattr(self, name, value)
            if not changed:
                return False
            before = {name: getattr(locked, name) for name in changed}
            for name, value in changed.items():
                setattr(locked, name, value)
            locked.save(update_fields=list(changed))
            AuditEvent.record(actor=by, action="user.settings", obj=locked, before=before, after=changed)
            return True

    def set_password_audited(self, raw_password: str, *, action: str) -> None:
        """A new password (the reset link, or sign-up's confirmation), with an audit event that never holds it."""
        with transaction.atomic():
            self.set_password(raw_password)
            self.save(update_fields=["password"])
            AuditEvent.record(actor=self, action=action, obj=self)


SETTINGS_FIELDS = ("full_name", "language", "time_zone")


class StudioKeyLinkQuerySet(models.QuerySet):
    def linked_at(self, moment):
        """The links in force at `moment`."""
        return self.filter(Q(unlinked_at__isnull=True) | Q(unlinked_at__gt=moment), linked_at__lte=moment)


class StudioKeyLink(models.Model):
    """History of `User.studio_api_key`: from `linked_at` until `unlinked_at` (open: still linked),
    studio usage through `api_key` is billed. Written only by `User.link_studio_key`, so usage is
    billed by the link in force when it occurred, however late it is reported."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="studio_key_links")
    api_key = models.ForeignKey("studio.ApiKey", on_delete=models.CASCADE, related_name="studio_links")
    linked_at = models.DateTimeField(_("linked at"))
    unlinked_at = models.DateTimeField(_("unlinked at"), null=True, blank=True)

    objects = StudioKeyLinkQuerySet.as_manager()

    class Meta:
        verbose_name = _("studio key link")
        verbose_name_plural = _("studio key links")
        ordering = ["linked_at", "pk"]
        indexes = [models.Index(fields=["api_key", "linked_at"], name="studio_link_key_time")]
        constraints = [
            models.UniqueConstraint(
                fields=["user"], condition=Q(unlinked_at__isnull=True), name="one_open_studio_link_per_user"
            )
        ]

    def __str__(self):
        return f"{self.user} → {self.api_key_id} from {self.linked_at:%Y-%m-%d %H:%M}"


def _studio_key_state(key) -> dict:
    return {"key_id": key.pk if key else None, "key_prefix": key.prefix if key else None}


class Tier(models.TextChoices):
    FREE = "free", _("Free")
    TIER_1 = "tier_1", _("Tier 1")
    TIER_2 = "tier_2", _("Tier 2")
    TIER_3 = "tier_3", _("Tier 3")


class BillingState(models.TextChoices):
    """Where the project stands with billing; written only by the billing services."""

    NONE = "none", _("No billing account")
    PREPAYMENT_DUE = "prepayment_due", _("Prepayment due")
    ACTIVE = "active", _("Billing active")
    SUSPENDED = "suspended", _("Billing suspended")


def effective_tier(tier: str, billing_state: str) -> str:
    """The tier whose limits and prices apply: the project's tier while its billing is active,
    else the free tier. The one definition that admission, rating and the pages ask."""
    return tier if billing_state == BillingState.ACTIVE else Tier.FREE


class QuotaState(models.TextChoices):
    """What a project's Quota tier cell shows (`Project.quota_state`, one template:
    studio/includes/quota_tier.html): a billing state that asks for something, or the tier it is on."""

    SET_UP_BILLING = "set_up_billing", _("Set up billing")
    ACTION_REQUIRED = "action_required", _("Action required")
    BILLING_SUSPENDED = "billing_suspended", _("Billing suspended")
    # Active billing: the project's tier (values as Tier's).
    FREE = Tier.FREE.value, Tier.FREE.label
    TIER_1 = Tier.TIER_1.value, Tier.TIER_1.label
    TIER_2 = Tier.TIER_2.value, Tier.TIER_2.label
    TIER_3 = Tier.TIER_3.value, Tier.TIER_3.label


class ProjectQuerySet(models.QuerySet):
    def imported_by(self, user, *, roles=None):
        """Projects the user brought into the studio, optionally only those where they hold `roles`.

        One filter() call, so that the role and the import are checked on the same membership row.
        """
        conditions = {"memberships__user": user, "memberships__imported_at__isnull": False}
        if roles is not None:
            conditions["memberships__role__in"] = roles
        return self.filter(**conditions)

    def writable_by(self, user):
        """Projects the user imported and may change (Owner or Editor): keys, billing, tiers."""
        return self.imported_by(user, roles=WRITE_ROLES)

    def not_imported_by(self, user):
        return self.filter(memberships__user=user, memberships__imported_at__isnull=True)


def _new_project_number():
    return str(secrets.randbelow(9 * 10**11) + 10**11)


def _new_project_id():
    return f"gen-lang-client-{secrets.randbelow(10**10):010d}"


class Project(models.Model):
    """A Cloud project. The studio shows it once a member has imported it."""

    project_id = models.CharField(_("project ID"), max_length=30, unique=True, default=_new_project_id)
    number = models.CharField(_("project number"), max_length=12, unique=True, default=_new_project_number)
    name = models.CharField(_("name"), max_length=100)
    tier = models.CharField(_("quota tier"), max_length=10, choices=Tier.choices, default=Tier.FREE)
    billing_state = models.CharField(
        _("billing state"), max_length=16, choices=BillingState.choices, default=BillingState.NONE
    )
    # Set by tier evaluation when the project meets the next tier's criteria.
    upgrade_available = models.BooleanField(_("upgrade available"), default=False)
    # X4: paid requests stop when the Pacific month's spend would pass it (usage.spendcap); None: no cap. Written only
    # by `set_spend_cap`. `spend_cap_since` is when the cap was last set where there was none: admission's counter of
    # the month's spend is named by it, so a cap set again starts from the books, not from a count kept meanwhile.
    monthly_spend_cap = models.DecimalField(
        _("monthly spend cap (USD)"), max_digits=12, decimal_places=2, null=True, blank=True
    )
    spend_cap_since = models.DateTimeField(_("spend cap since"), null=True, blank=True)
    # Set when staff override the tier and say automatic evaluation must leave it (billing.tiers.override_tier).
    tier_locked = models.BooleanField(_("tier kept by staff"), default=False)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="projects")

    objects = ProjectQuerySet.as_manager()

    class Meta:
        verbose_name = _("project")
        verbose_name_plural = _("projects")
        permissions = [("override_tier", _("Can override a project's quota tier"))]
        constraints = [
            # A paid tier needs active billing; a project without it is on the free tier.
            models.CheckConstraint(
                condition=Q(tier="free") | Q(billing_state="active"), name="paid_tier_needs_active_billing"
            ),
            models.CheckConstraint(
                condition=Q(upgrade_available=False) | Q(tier__in=["tier_1", "tier_2"]),
                name="upgrade_only_below_top_paid_tier",
            ),
            models.CheckConstraint(
                condition=Q(monthly_spend_cap__isnull=True, spend_cap_since__isnull=True)
                | Q(monthly_spend_cap__gte=0, spend_cap_since__isnull=False),
                name="spend_cap_has_its_start",
            ),
        ]

    def __str__(self):
        return f"{self.name} ({self.project_id})"

    @property
    def is_paid(self) -> bool:
        return self.effective_tier != Tier.FREE

    @property
    def effective_tier(self) -> str:
        return effective_tier(self.tier, self.billing_state)

    @property
    def quota_state(self) -> QuotaState:
        """What the Quota tier cell shows: set up billing, action required, billing suspended or the tier."""
        if self.billing_state == BillingState.NONE:
            return QuotaState.SET_UP_BILLING
        if self.billing_state == BillingState.PREPAYMENT_DUE:
            return QuotaState.ACTION_REQUIRED
        if self.billing_state == BillingState.SUSPENDED:
            return QuotaState.BILLING_SUSPENDED
        return QuotaState(self.tier)

    def is_writable_by(self, user) -> bool:
        """Whether `user` imported this project and may change it (Owner or Editor): one query."""
        return Project.objects.writable_by(user).filter(pk=self.pk).exists()

    def set_spend_cap(self, amount, *, by) -> bool:
        """Set the monthly spend cap to `amount` (a Decimal in USD), or remove it (None). Admission applies it to the
        next request. Returns False if the cap already was `amount` (nothing changed, nothing recorded)."""
        with transaction.atomic():
            project = Project.objects.select_for_update().get(pk=self.pk)
            before = project.monthly_spend_cap
            if before == amount:
                return False
            project.monthly_spend_cap = amount
            if amount is None:
                project.spend_cap_since = None
            elif before is None:
                project.spend_cap_since = timezone.now()
            project.save(update_fields=["monthly_spend_cap", "spend_cap_since"])
            self.monthly_spend_cap, self.spend_cap_since = project.monthly_spend_cap, project.spend_cap_since
            AuditEvent.record(
                actor=by,
                action="project.spend_cap",
                obj=project,
                before={"monthly_spend_cap": None if before is None else str(before)},
                after={"monthly_spend_cap": None if amount is None else str(amount)},
            )
            return True


class Role(models.TextChoices):
    OWNER = "owner", _("Owner")
    EDITOR = "editor", _("Editor")
    VIEWER = "viewer", _("Viewer")


WRITE_ROLES = (Role.OWNER, Role.EDITOR)


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(_("role"), max_length=10, choices=Role.choices)
    # When this member brought the project into the studio; None = a Cloud project not imported.
    imported_at = models.DateTimeField(_("imported at"), null=True, blank=True)

    class Meta:
        verbose_name = _("membership")
        verbose_name_plural = _("memberships")
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="one_membership_per_user")]

    def __str__(self):
        return f"{self.user} — {self.project} ({self.role})"

    @property
    def can_write(self) -> bool:
        return self.role in WRITE_ROLES


class ApiKeyQuerySet(models.QuerySet):
    def active(self):
        return self.filter(revoked_at__isnull=True)

    def visible_to(self, user):
        """Active keys of projects the user imported, each annotated with the user's `role`."""
        return (
            self.active()
            .annotate(mine=FilteredRelation("project__memberships", condition=Q(project__memberships__user=user)))
            .filter(mine__isnull=False, mine__imported_at__isnull=False)
            .annotate(role=F("mine__role"))
            .select_related("project")
        )

    def authenticate(self, raw: str, *, related=("project",)):
        """The active key for a raw key (with `related` joined in), or None. One query at most.

        Malformed keys are refused before the database. last_used_at is refreshed at most once
        per LAST_USED_RESOLUTION.
        """
        if not keyformat.is_well_formed(raw):
            return None
        digest = keyformat.hash_key(raw)
        key = next(iter(self.active().select_related(*related).filter(secret_hash=digest)[:1]), None)
        if key is None or not hmac.compare_digest(key.secret_hash, digest):
            return None
        key.mark_used()
        return key


class ApiKey(models.Model):
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="api_keys")
    name = models.CharField(_("name"), max_length=100)
    prefix = models.CharField(_("key prefix"), max_length=keyformat.VISIBLE_PREFIX_LENGTH, db_index=True)
    last4 = models.CharField(_("last characters"), max_length=4)
    secret_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")
        indexes = [models.Index(fields=["project", "revoked_at"], name="apikey_project_active")]

    def __str__(self):
        return f"{self.name} ({self.masked})"

    @property
    def masked(self) -> str:
        return f"{self.prefix}…{self.last4}"

    @property
    def read_only(self) -> bool:
        """For a key read through `visible_to(user)`: the user is a Viewer of its project, so they may
        change neither the key nor the project's billing and tier (nor may anyone, without a role)."""
        return getattr(self, "role", None) not in WRITE_ROLES

    @property
    def role_label(self) -> str:
        """The user's role, as `visible_to(user)` annotates it, in words."""
        return Role(self.role).label

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @classmethod
    def issue(cls, *, project, name, created_by):
        """Create a key; returns (key, raw secret). The raw secret is never stored."""
        raw = keyformat.generate()
        key = cls.objects.create(
            project=project,
            name=name,
            prefix=keyformat.visible_prefix(raw),
            last4=keyformat.last_four(raw),
            secret_hash=keyformat.hash_key(raw),
            created_by=created_by,
        )
        AuditEvent.record(actor=created_by, action="api_key.create", obj=key, after={"name": name})
        return key, raw

    def rename(self, name: str, *, by):
        with transaction.atomic():
            key = ApiKey.objects.select_for_update().get(pk=self.pk)
            if key.name == name:
                return
            before = key.name
            key.name = self.name = name
            key.save(update_fields=["name"])
            AuditEvent.record(actor=by, action="api_key.rename", obj=key, before={"name": before}, after={"name": name})

    def revoke(self, *, by):
        """Revoke the key for good. Safe to call twice: the second call changes nothing."""
        with transaction.atomic():
            key = ApiKey.objects.select_for_update().get(pk=self.pk)
            if key.revoked_at is not None:
                self.revoked_at = key.revoked_at
                return False
            key.revoked_at = self.revoked_at = timezone.now()
            key.revoked_by = by
            key.save(update_fields=["revoked_at", "revoked_by"])
            AuditEvent.record(
                actor=by, action="api_key.revoke", obj=key, before={"revoked": False}, after={"revoked": True}
            )
            return True

    def mark_used(self, now=None):
        now = now or timezone.now()
        if self.last_used_at is not None and now - self.last_used_at < LAST_USED_RESOLUTION:
            return
        # Conditional update: concurrent requests for one key write at most once per minute.
        ApiKey.objects.filter(pk=self.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
        ).update(last_used_at=now)
        self.last_used_at = now


class ActorKind(models.TextChoices):
    USER = "user", _("User")
    STAFF = "staff", _("Staff")
    SYSTEM = "system", _("System")
    FLEET = "fleet", _("Serving fleet")


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise TypeError("audit events are append-only")

    def delete(self):
        raise TypeError("audit events are append-only")


class AuditEvent(models.Model):
    """Append-only record of a state change: who, what, on which object, before and after.

    No update or delete path in Python, and on PostgreSQL a trigger refuses both (as for the ledger).
    """

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor_kind = models.CharField(_("actor kind"), max_length=10, choices=ActorKind.choices)
    action = models.CharField(_("action"), max_length=64)
    object_type = models.CharField(_("object type"), max_length=64)
    object_id = models.CharField(_("object ID"), max_length=64)
    before = models.JSONField(_("before"), default=dict, blank=True)
    after = models.JSONField(_("after"), default=dict, blank=True)
    reason = models.TextField(_("reason"), blank=True)
    created_at = models.DateTimeField(_("time"), default=timezone.now, db_index=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        verbose_name = _("audit event")
        verbose_name_plural = _("audit events")
        indexes = [models.Index(fields=["object_type", "object_id"], name="audit_object")]

    def __str__(self):
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.action} {self.object_type}:{self.object_id}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise TypeError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("audit events are append-only")

    @classmethod
    def record(cls, *, actor, action, obj, before=None, after=None, reason="", actor_kind=None):
        event = cls.build(
            actor=actor, action=action, obj=obj, before=before, after=after, reason=reason, actor_kind=actor_kind
        )
        event.save()
        return event

    @classmethod
    def build(cls, *, actor, action, obj, before=None, after=None, reason="", actor_kind=None):
        """An unsaved event, for writers that insert many in one statement (`bulk_create`)."""
        if actor_kind is None:
            # Staff consoles pass ActorKind.STAFF; a staff member using the developer console is a user.
            actor_kind = ActorKind.SYSTEM if actor is None else ActorKind.USER
        return cls(
            actor=actor,
            actor_kind=actor_kind,
            action=action,
            object_type=obj._meta.label_lower,
            object_id=str(obj.pk),
            before=before or {},
            after=after or {},
            reason=reason,
        )


class EmailStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    SENT = "sent", _("Sent")
    FAILED = "failed", _("Failed")


class OutboundEmail(models.Model):
    """An e-mail in the outbox: written in the transaction of the change it tells about, delivered
    afterwards by `studio.outbox.deliver_due` (retries with backoff). Every e-mail leaves this way."""

    sender = models.CharField(pgettext_lazy("email", "from"), max_length=320)
    to = models.JSONField(pgettext_lazy("email", "to"), default=list)
    cc = models.JSONField(_("cc"), default=list, blank=True)
    bcc = models.JSONField(_("bcc"), default=list, blank=True)
    reply_to = models.JSONField(_("reply to"), default=list, blank=True)
    subject = models.TextField(_("subject"))
    body = models.TextField(_("body"), blank=True)
    content_subtype = models.CharField(max_length=20, default="plain")
    # [content, mimetype] pairs, e.g. an HTML version of the body.
    alternatives = models.JSONField(_("alternatives"), default=list, blank=True)
    # [filename, base64 content, mimetype] triples.
    attachments = models.JSONField(_("attachments"), default=list, blank=True)
    headers = models.JSONField(_("headers"), default=dict, blank=True)
    status = models.CharField(_("status"), max_length=10, choices=EmailStatus.choices, default=EmailStatus.PENDING)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(_("next attempt"), default=timezone.now)
    # A sender's lease: until then the message is being sent and nobody else takes it.
    claimed_until = models.DateTimeField(_("claimed until"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, db_index=True)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)

    class Meta:
        verbose_name = _("outbound e-mail")
        verbose_name_plural = _("outbound e-mails")
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["next_attempt_at"], condition=Q(status="pending"), name="outbox_due"),
        ]

    def __str__(self):
        return f"{', '.join(self.to)}: {self.subject}"

    @property
    def recipient_count(self) -> int:
        return len(self.to) + len(self.cc) + len(self.bcc)

    def resend(self, *, by) -> bool:
        """Staff: make the message pending and due now, with a fresh set of attempts.

        Returns False (and changes nothing) while a sender holds it: it is being sent right now.
        """
        with transaction.atomic():
            locked = OutboundEmail.objects.select_for_update().get(pk=self.pk)
            now = timezone.now()
            if locked.status == EmailStatus.PENDING and locked.claimed_until and locked.claimed_until > now:
                return False
            before = {"status": locked.status, "attempts": locked.attempts}
            locked.status, locked.attempts, locked.next_attempt_at, locked.claimed_until = (
                EmailStatus.PENDING,
                0,
                now,
                None,
            )
            locked.save(update_fields=["status", "attempts", "next_attempt_at", "claimed_until"])
            AuditEvent.record(
                actor=by,
                actor_kind=ActorKind.STAFF,
                action="outbound_email.resend",
                obj=locked,
                before=before,
                after={"status": EmailStatus.PENDING, "attempts": 0},
            )
        self.status, self.attempts, self.next_attempt_at, self.claimed_until = (
            locked.status,
            locked.attempts,
            locked.next_attempt_at,
            None,
        )
        return True


@receiver(pre_delete, sender=User)
def _keep_users_who_acted(sender, instance, **kwargs):
    """People who changed anything are deactivated (`is_active`), never deleted: their audit rows keep naming them
    (X10). Deleting one would set those rows' actor to NULL, which the audit table's trigger refuses on PostgreSQL;
    this refuses it on every database, before anything is deleted."""
    if AuditEvent.objects.filter(actor=instance).exists():
        raise ProtectedError("users named by audit events are deactivated, not deleted", {instance})
