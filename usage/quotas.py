"""Quota increases (SPEC §10): an Owner or Editor asks for a higher RPM, TPM or RPD on one model; Support approves
(possibly a lower figure) or declines, with a reason. An approved figure becomes the project's QuotaOverride of that
model, which admission applies from the next request (usage.admission.limits_for). The requester is e-mailed either
way, in their language, through the outbox (a row in the decision's transaction).

Each function runs in a transaction, locks what it re-checks and writes an audit event. A decided request stays
decided: a second decision (a double click, two Support members at once) changes nothing and returns False.
"""

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from studio.models import ActorKind, AuditEvent, Project, Tier, effective_tier
from usage.admission import override_of, raised
from usage.catalog import get_catalog
from usage.models import QuotaIncreaseRequest, QuotaMetric, QuotaOverride, QuotaRequestStatus

METRICS = [m.value for m in QuotaMetric]


class QuotaError(Exception):
    """A quota request or decision that cannot be made; the message is translated and safe to show. `field` names
    the form field it is about ("" for the form as a whole)."""

    def __init__(self, message: str, *, field: str = ""):
        super().__init__(message)
        self.message, self.field = message, field


def usable_models(project, *, catalog=None) -> list:
    """The active models the project's effective tier can use and has rate limits for, by model id."""
    catalog = catalog or get_catalog()
    tier = effective_tier(project.tier, project.billing_state)
    return sorted(
        (
            m
            for m in catalog.models.values()
            if m.active and (tier != Tier.FREE or m.free_tier_available) and (tier, m.model_id) in catalog.rate_limits
        ),
        key=lambda m: m.model_id,
    )


def limit_in_force(project, model_id: str, metric: str, *, catalog=None, overrides=None) -> int | None:
    """The figure admission applies now to `metric` of `model_id`: the tier's, raised by the project's override
    where that is higher (None: no such limit, or the tier cannot use the model)."""
    catalog = catalog or get_catalog()
    rate = catalog.rate_limits.get((effective_tier(project.tier, project.billing_state), model_id))
    if rate is None:
        return None
    override = override_of(project, model_id, overrides)
    return raised(getattr(rate, metric), override[METRICS.index(metric)] if override else None)


def figures_in_force(project, models) -> list[tuple]:
    """[(model, rpm, tpm, rpd)] in force now for each of `models` (one query: the project's overrides)."""
    overrides = {o.model_id: o for o in QuotaOverride.objects.filter(project_id=project.pk)}
    return [
        (m, *(limit_in_force(project, m.model_id, metric, overrides=overrides) for metric in METRICS)) for m in models
    ]


def request_increase(project: Project, *, model_id: str, metric: str, value: int, reason: str, by):
    """Ask for `metric` of `model_id` to be raised to `value`. The caller checked that `by` may change the project
    (an Owner or Editor: usage.access). Raises QuotaError when the tier cannot use the model, the limit does not
    exist, `value` is not above the figure in force, the reason is empty, or a request for the same limit is still
    open. Effects: a pending QuotaIncreaseRequest, audit "quota_request.create"."""
    reason = (reason or "").strip()
    if metric not in METRICS:
        raise QuotaError(_("Choose RPM, TPM or RPD."), field="metric")
    if not reason:
        raise QuotaError(_("Say why this project needs a higher limit."), field="reason")
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project.pk)  # the tier and override read below hold
        if locked.effective_tier == Tier.FREE:
            raise QuotaError(_("Free-tier limits are not raised: set up billing for a paid tier's higher limits."))
        if model_id not in {m.model_id for m in usable_models(locked)}:
            raise QuotaError(_("This project's tier cannot use that model."), field="model")
        current = limit_in_force(locked, model_id, metric)
        if current is None:
            raise QuotaError(_("That limit does not apply to this model at this project's tier."), field="metric")
        if value <= current:
            message = _("Ask for more than the current limit, %(limit)s.") % {"limit": f"{current:,}"}
            raise QuotaError(message, field="value")
        try:
            with transaction.atomic():
                request = QuotaIncreaseRequest.objects.create(
                    project=locked,
                    model_id=model_id,
                    metric=metric,
                    current_limit=current,
                    requested_value=value,
                    reason=reason,
                    requested_by=by,
                )
        except IntegrityError:
            raise QuotaError(_("A request for this limit is already waiting for review.")) from None
        AuditEvent.record(
            actor=by,
            action="quota_request.create",
            obj=request,
            after={"model": model_id, "metric": metric, "current": current, "requested": value},
            reason=reason,
        )
    return request


def _decide(request: QuotaIncreaseRequest, *, reason: str, by, value: int | None = None) -> bool:
    """Approve (with `value`) or decline (None) under the project's and the request's locks. False: already decided."""
    reason = (reason or "").strip()
    if not reason:
        raise QuotaError(_("Give a reason for the decision."), field="reason")
    with transaction.atomic():
        project = Project.objects.select_for_update().filter(pk=request.project_id).first()  # one overrides writer
        locked = QuotaIncreaseRequest.objects.select_for_update().get(pk=request.pk)
        if locked.status != QuotaRequestStatus.PENDING:
            _copy_decision(locked, request)
            return False
        if value is not None:
            if not 0 < value <= locked.requested_value:
                message = _("Approve a figure from 1 to the %(requested)s asked for.")
                raise QuotaError(message % {"requested": f"{locked.requested_value:,}"}, field="value")
            # Below what admission applies now (the tier's figure, or a higher override) would lower nothing.
            in_force = limit_in_force(project, locked.model_id, locked.metric)
            if in_force is not None and value <= in_force:
                message = _("This project already has %(limit)s here: approve more than that, or decline.")
                raise QuotaError(message % {"limit": f"{in_force:,}"}, field="value")
            _set_override(locked, value, reason=reason, by=by)
        locked.status = QuotaRequestStatus.DECLINED if value is None else QuotaRequestStatus.APPROVED
        locked.approved_value = value
        locked.decided_by, locked.decided_at, locked.decision_reason = by, timezone.now(), reason
        locked.save(update_fields=["status", "approved_value", "decided_by", "decided_at", "decision_reason"])
        after = {"status": locked.status, **({"approved_value": value} if value is not None else {})}
        AuditEvent.record(
            actor=by,
            actor_kind=ActorKind.STAFF,
            action="quota_request.approve" if value is not None else "quota_request.decline",
            obj=locked,
            before={"status": QuotaRequestStatus.PENDING},
            after=after,
            reason=reason,
        )
        _send_decision(locked)
    _copy_decision(locked, request)
    return True


def _copy_decision(source: QuotaIncreaseRequest, target: QuotaIncreaseRequest) -> None:
    for name in ("status", "approved_value", "decided_by_id", "decided_at", "decision_reason"):
        setattr(target, name, getattr(source, name))


def _set_override(request: QuotaIncreaseRequest, value: int, *, reason: str, by) -> QuotaOverride:
    override, _created = QuotaOverride.objects.get_or_create(project_id=request.project_id, model_id=request.model_id)
    before = {m: getattr(override, m) for m in METRICS}
    setattr(override, request.metric, value)
    override.updated_at, override.updated_by = timezone.now(), by
    override.save(update_fields=[request.metric, "updated_at", "updated_by"])
    AuditEvent.record(
        actor=by,
        actor_kind=ActorKind.STAFF,
        action="quota_override.set",
        obj=override,
        before=before,
        after={m: getattr(override, m) for m in METRICS},
        reason=reason,
    )
    return override


def approve(request: QuotaIncreaseRequest, *, value: int, reason: str, by) -> bool:
    """Approve `request` at `value` (the figure in force now < value ≤ the figure asked for): the project's override
    of the model is set to it (created if need be), which admission applies from the next request. Effects: the
    request approved, audit "quota_request.approve" and "quota_override.set" (before/after), an e-mail to the
    requester. False (and nothing changes) if it was already decided; `request` then shows that decision. Raises
    QuotaError (on the field "value") for a value outside those bounds."""
    return _decide(request, reason=reason, by=by, value=value)


def decline(request: QuotaIncreaseRequest, *, reason: str, by) -> bool:
    """Decline `request` with a reason. Effects: the request declined, audit "quota_request.decline", an e-mail to
    the requester. False (and nothing changes) if it was already decided."""
    return _decide(request, reason=reason, by=by)


def _send_decision(request: QuotaIncreaseRequest) -> None:
    """The requester learns the decision in their language (an outbox row in the decision's transaction)."""
    user = request.requested_by
    template = "quota_approved" if request.status == QuotaRequestStatus.APPROVED else "quota_declined"
    limits_url = f"{settings.SITE_URL}{reverse('usage:limits')}?project={request.project.project_id}"
    context = {"request": request, "project": request.project, "user": user, "url": limits_url}
    with translation.override(user.language or settings.LANGUAGE_CODE):
        context["model_name"] = get_catalog().models[request.model_id].display_name
        context["metric"] = QuotaMetric(request.metric).label
        subject = render_to_string(f"usage/email/{template}_subject.txt", context).strip()
        body = render_to_string(f"usage/email/{template}.txt", context)
    send_mail(subject, body, None, [user.email])
