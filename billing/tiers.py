"""Tier criteria (R17), the upgrade (re-checked under lock), progress (X1) and history.

The tier function is pure (`tier_for`) so that it can be tested on its own: monotonic in spend
and in age, whatever the rules say.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import Min, Q, Sum
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from billing import emails, ledger
from billing.models import (
    AccountStatus,
    BillingAccount,
    BillingPeriod,
    EntryKind,
    LedgerEntry,
    PaymentStatus,
    Prepayment,
    ProjectBilling,
    TierChange,
    TierRule,
)
from studio.models import ActorKind, AuditEvent, BillingState, Project, Tier, effective_tier

ORDER = [Tier.FREE, Tier.TIER_1, Tier.TIER_2, Tier.TIER_3]
SPEND_WINDOW = timedelta(days=30)  # the spending rate that projects when a tier unlocks


def rank(tier: str) -> int:
    return ORDER.index(tier)


def tier_for(total_spend: Decimal, days_since_first_payment: int | None, rules) -> str:
    """The highest paid tier whose every criterion is met; Tier 1 at least (billing in order)."""
    best = Tier.TIER_1
    for rule in rules:
        met = (
            total_spend > rule.min_total_spend
            and days_since_first_payment is not None
            and days_since_first_payment >= rule.min_days_since_first_payment
        )
        if met and rank(rule.tier) > rank(best):
            best = rule.tier
    return best


def eligible_tier(account: BillingAccount, *, now=None) -> str:
    """The tier a project linked to `account` qualifies for now.

    "First successful payment": money that reached us from the account, the prepayment
    included. "Total spend": all usage charged to the account, whoever paid it (credits too).
    """
    now = now or timezone.now()
    if account.status != AccountStatus.ACTIVE or account.prepayment_outstanding:
        return Tier.FREE
    standing = standings([account], now=now)[account.pk]
    first = standing.first_payment_at
    return tier_for(standing.total_spend, (now - first).days if first else None, TierRule.objects.all())


def set_project_tier(
    project: Project,
    tier: str,
    billing_state: str,
    *,
    by=None,
    reason: str,
    linked_to: BillingAccount | None = None,
    from_states: tuple[str, ...] | None = None,
    actor_kind: str | None = None,
    override: bool = False,
) -> bool:
    """The one writer of a project's tier: locks, records history and audit. True if it changed.

    Callers that decided from rows read earlier pass what they assumed, re-checked under the
    project's lock: `linked_to` (the project must still be billed to that account) and
    `from_states` (its billing state must still be one of these). If not, nothing changes.
    `reason` is stored in English (mark it with gettext_noop) and translated when shown.

    A tier kept by staff (`Project.tier_locked`, `override_tier`) wins whenever billing is active:
    evaluation, reinstatement or a relink asking for another tier get the kept one instead, so that
    a lock survives a suspension (which must make the project free: paid usage stops). Only
    `override_tier` (`override=True`) sets a locked project's tier.
    """
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project.pk)
        if locked.tier_locked and not override and billing_state == BillingState.ACTIVE:
            tier = kept_tier(locked) or locked.tier
        before = (locked.tier, locked.billing_state)
        if before == (tier, billing_state):
            return False
        if linked_to is not None and not ProjectBilling.objects.filter(project=locked, account=linked_to).exists():
            return False
        if from_states is not None and locked.billing_state not in from_states:
            return False
        locked.tier, locked.billing_state = tier, billing_state
        if tier in (Tier.FREE, Tier.TIER_3):
            locked.upgrade_available = False
        locked.save(update_fields=["tier", "billing_state", "upgrade_available"])
        note_billing_period(locked)
        if before[0] != tier:
            TierChange.objects.create(project=locked, from_tier=before[0], to_tier=tier, reason=reason, actor=by)
        AuditEvent.record(
            actor=by,
            actor_kind=actor_kind,
            action="project.tier",
            obj=locked,
            before={"tier": before[0], "billing_state": before[1]},
            after={"tier": tier, "billing_state": billing_state},
            reason=reason,
        )
    project.tier, project.billing_state, project.upgrade_available = tier, billing_state, locked.upgrade_available
    return True


def kept_tier(project: Project) -> str | None:
    """The tier staff last set with a lock (`override_tier`'s audit event), None if none was."""
    event = (
        AuditEvent.objects.filter(object_type=project._meta.label_lower, object_id=str(project.pk))
        .filter(action="project.tier_override", after__tier_locked=True)
        .order_by("-created_at", "-pk")
        .first()
    )
    return event.after["tier"] if event else None


def override_tier(project: Project, tier: str, *, by, reason: str, lock: bool) -> bool:
    """Staff (R25) put `project` on `tier`, with a reason. `lock`: automatic evaluation (and the owner's upgrade)
    may not change it later, and it comes back after a suspension or a move to another billing account; without it,
    evaluation may raise it again. A paid tier needs active billing (the database's rule): BillingError otherwise.

    Effects: the tier through `set_project_tier` (history, audit "project.tier"), `tier_locked`, and audit
    "project.tier_override" (before/after of both, the staff reason). True if anything changed."""
    from billing.services import BillingError  # services imports this module

    reason = (reason or "").strip()
    if not reason:
        raise BillingError(_("Give a reason for the change."))
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project.pk)
        if tier != Tier.FREE and locked.billing_state != BillingState.ACTIVE:
            raise BillingError(
                _("A paid tier needs active billing, and this project's billing is: %(state)s.")
                % {"state": locked.get_billing_state_display()}
            )
        before = {"tier": locked.tier, "tier_locked": locked.tier_locked}
        changed = set_project_tier(
            locked,
            tier,
            locked.billing_state,
            by=by,
            reason=gettext_noop("Changed by Support"),
            actor_kind=ActorKind.STAFF,
            override=True,
        )
        update = ["tier_locked"] + (["upgrade_available"] if lock and locked.upgrade_available else [])
        locked.tier_locked = lock
        if lock:
            locked.upgrade_available = False
        locked.save(update_fields=update)
        after = {"tier": tier, "tier_locked": lock}
        AuditEvent.record(
            actor=by,
            actor_kind=ActorKind.STAFF,
            action="project.tier_override",
            obj=locked,
            before=before,
            after=after,
            reason=reason,
        )
    project.tier, project.billing_state = locked.tier, locked.billing_state
    project.tier_locked, project.upgrade_available = locked.tier_locked, locked.upgrade_available
    return changed or before != after


def note_billing_period(project: Project, *, at=None) -> BillingPeriod | None:
    """Append to the project's billing history when who pays for its usage, or at what tier, has
    changed (SPEC §9: usage is billed by the state when it occurred). The caller holds the
    project's lock (set_project_tier, link_project), so rows of one project are written in order."""
    tier = effective_tier(*Project.objects.values_list("tier", "billing_state").get(pk=project.pk))
    link = ProjectBilling.objects.filter(project=project).select_related("account").first()
    paying = link.account if tier != Tier.FREE and link is not None else None
    last = BillingPeriod.objects.filter(project=project).order_by("-starts_at", "-pk").first()
    if last is None and paying is None:
        return None  # never billed: no history needed
    if last is not None and (last.account_id, last.tier) == (paying.pk if paying else None, tier):
        return None
    return BillingPeriod.objects.create(project=project, starts_at=at or timezone.now(), account=paying, tier=tier)


def refresh_upgrade_flags(account: BillingAccount, *, now=None, eligible: str | None = None) -> None:
    """Show **Upgrade** on exactly the projects of `account` that qualify for a higher tier.

    `eligible` saves recomputing the account's tier when the caller has it.
    """
    eligible = eligible or eligible_tier(account, now=now)
    paid = Project.objects.filter(billing__account=account, billing_state=BillingState.ACTIVE).exclude(tier=Tier.FREE)
    below = ORDER[1 : rank(eligible)]
    paid.filter(tier__in=below, tier_locked=False, upgrade_available=False).update(upgrade_available=True)
    # A tier kept by staff is not the owner's to raise.
    paid.filter(Q(tier_locked=True) | ~Q(tier__in=below), upgrade_available=True).update(upgrade_available=False)


def upgrade(project: Project, *, by, now=None) -> bool:
    """R17: re-check the criteria under lock and move the project up one tier at once.

    Returns False (and changes nothing) when the project does not qualify; the caller shows
    `progress()` to say which criterion is unmet. Safe to call twice: the second call finds the
    project already upgraded and does not upgrade it again unless it qualifies for yet another tier.
    """
    with transaction.atomic():
        link = ProjectBilling.objects.select_for_update().select_related("account").filter(project=project).first()
        if link is None:
            return False
        locked = Project.objects.select_for_update().get(pk=project.pk)
        eligible = eligible_tier(link.account, now=now)
        if locked.tier_locked or locked.billing_state != BillingState.ACTIVE or rank(eligible) <= rank(locked.tier):
            return False
        next_tier = ORDER[rank(locked.tier) + 1]
        set_project_tier(locked, next_tier, BillingState.ACTIVE, by=by, reason=gettext_noop("Upgrade requested"))
        project.tier = next_tier
        refresh_upgrade_flags(link.account, now=now)
        project.refresh_from_db(fields=["upgrade_available"])
    return True


@dataclass(frozen=True)
class Criterion:
    label: str
    current: str
    required: str
    met: bool
    met_on: datetime | None  # when it is (or is expected to be) met


@dataclass(frozen=True)
class Progress:
    tier: str
    next_tier: str | None
    criteria: list[Criterion]
    unlocks_on: datetime | None  # None: no estimate (no spending yet) or already met

    @property
    def next_tier_label(self) -> str:
        return Tier(self.next_tier).label if self.next_tier else ""


@dataclass(frozen=True)
class Standing:
    """What the tier criteria read from a billing account."""

    total_spend: Decimal
    first_payment_at: datetime | None
    daily_spend: Decimal  # average over the last SPEND_WINDOW


def standings(accounts, *, now=None, balances=None) -> dict[int, Standing]:
    """Standing of several accounts in a fixed number of queries, by account pk.

    `balances` (from ledger.balances_for_accounts) saves a query when the caller has them.
    """
    now = now or timezone.now()
    balances = balances or ledger.balances_for_accounts(accounts, at=now)
    prepaid = dict(
        Prepayment.objects.filter(account__in=accounts, status=PaymentStatus.SUCCEEDED)
        .values_list("account_id")
        .annotate(first=Min("settled_at"))
    )
    entries = LedgerEntry.objects.filter(account__in=accounts).values_list("account_id").order_by()
    paid = dict(entries.filter(kind=EntryKind.PAYMENT).annotate(first=Min("created_at")))
    recent = dict(
        entries.filter(kind=EntryKind.USAGE_CHARGE, created_at__gte=now - SPEND_WINDOW).annotate(total=Sum("amount"))
    )
    result = {}
    for account in accounts:
        firsts = [d for d in (prepaid.get(account.pk), paid.get(account.pk)) if d is not None]
        result[account.pk] = Standing(
            total_spend=balances[account.pk].total_spend,
            first_payment_at=min(firsts) if firsts else None,
            daily_spend=Decimal(recent.get(account.pk) or 0) / SPEND_WINDOW.days,
        )
    return result


def progress(project: Project, *, now=None, standing: Standing | None = None, rules=None) -> Progress:
    """X1: each criterion of the next tier with its current value and when it will be met."""
    now = now or timezone.now()
    if project.tier in (Tier.FREE, Tier.TIER_3) or project.billing_state != BillingState.ACTIVE:
        return Progress(project.tier, None, [], None)
    next_tier = ORDER[rank(project.tier) + 1]
    rules = list(TierRule.objects.all()) if rules is None else rules
    rule = next((r for r in rules if r.tier == next_tier), None)
    if rule is None:
        return Progress(project.tier, None, [], None)
    if standing is None:
        account = BillingAccount.objects.get(project_links__project=project)
        standing = standings([account], now=now)[account.pk]
    spend, first = standing.total_spend, standing.first_payment_at
    days = (now - first).days if first else 0
    if spend > rule.min_total_spend:
        spend_on = now
    elif standing.daily_spend > 0:
        spend_on = now + timedelta(days=float((rule.min_total_spend - spend) / standing.daily_spend) + 1)
    else:
        spend_on = None
    days_on = first + timedelta(days=rule.min_days_since_first_payment) if first else None
    criteria = [
        Criterion(
            _("Total spend on the billing account"),
            f"USD {spend:.2f}",
            _("more than USD %(amount)s") % {"amount": f"{rule.min_total_spend:.2f}"},
            spend > rule.min_total_spend,
            spend_on,
        ),
        Criterion(
            _("Days since the first successful payment"),
            str(days) if first else _("no payment yet"),
            _("at least %(days)d") % {"days": rule.min_days_since_first_payment},
            first is not None and days >= rule.min_days_since_first_payment,
            days_on,
        ),
    ]
    dates = [c.met_on for c in criteria]
    unlocks_on = None if any(d is None for d in dates) or all(c.met for c in criteria) else max(dates)
    return Progress(project.tier, next_tier, criteria, unlocks_on)


def evaluate_all(*, now=None, progress=None):
    """X1: upgrade every project that qualifies (cron-able, idempotent). Yields upgraded projects.

    Each upgrade and the e-mail to the project's owners (an outbox row) commit together.
    `progress(done, total)` is called after each billing account.
    """
    now = now or timezone.now()
    accounts = list(
        BillingAccount.objects.filter(
            status=AccountStatus.ACTIVE, project_links__project__billing_state=BillingState.ACTIVE
        ).distinct()
    )
    for done, account in enumerate(accounts, start=1):
        eligible = eligible_tier(account, now=now)  # once per account, whatever its number of projects
        below = ORDER[1 : rank(eligible)]
        # A tier kept by staff is skipped (set_project_tier re-checks it under the project's lock).
        for project in Project.objects.filter(
            billing__account=account, billing_state=BillingState.ACTIVE, tier__in=below, tier_locked=False
        ):
            with transaction.atomic():
                upgraded = set_project_tier(
                    project,
                    eligible,
                    BillingState.ACTIVE,
                    reason=gettext_noop("Automatic tier evaluation"),
                    linked_to=account,
                    from_states=(BillingState.ACTIVE,),
                )
                if upgraded:
                    emails.tier_upgraded(project)
            if upgraded:
                yield project
        refresh_upgrade_flags(account, eligible=eligible)
        if progress is not None:
            progress(done, len(accounts))
