"""The audit log for staff (SPEC §10 "Audit"): every recorded change, filtered by customer, object, actor and
action, newest first, 50 a page. Pages are counted without counting the table (a COUNT(*) of every event on
every page would grow with the log): one row more than a page tells whether there is a next one."""

from dataclasses import dataclass

from django import forms
from django.apps import apps
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_GET

from staff import history, roles
from staff.access import staff_view
from studio.models import AuditEvent, User, normalize_email
from studio.views.rendering import render_page

PER_PAGE = 50


class AuditFilterForm(forms.Form):
    # Hints are part of the labels: partials/field.html shows no help text for aria-describedby to point at.
    customer = forms.CharField(label=_("Customer (e-mail or user ID)"), required=False, max_length=254)
    object_type = forms.CharField(label=_("Object type (e.g. billing.billingaccount)"), required=False, max_length=64)
    object_id = forms.CharField(label=_("Object ID"), required=False, max_length=64)
    actor = forms.CharField(label=_("Actor (e-mail)"), required=False, max_length=254)
    action = forms.CharField(label=_("Action (starts with)"), required=False, max_length=64)

    def clean_customer(self) -> User | None:
        value = self.cleaned_data["customer"].strip()
        if not value:
            return None
        user = _find_user(value, by_id=value.isdigit())
        if user is None:
            raise forms.ValidationError(_("No user has this e-mail address or ID."))
        return user

    def clean_object_type(self) -> str:
        value = self.cleaned_data["object_type"].strip().lower()
        if value:
            try:
                apps.get_model(value)
            except (LookupError, ValueError):
                raise forms.ValidationError(_("Not a known object type: write it as app.model.")) from None
        return value

    def clean_actor(self) -> User | None:
        value = self.cleaned_data["actor"].strip()
        if not value:
            return None
        user = _find_user(value, by_id=False)
        if user is None:
            raise forms.ValidationError(_("No user has this e-mail address."))
        return user

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("object_id", "").strip() and not cleaned.get("object_type") and "object_type" not in self.errors:
            self.add_error("object_type", _("Give the object's type with its ID."))
        return cleaned

    def condition(self) -> Q:
        """The filters as one condition (call after is_valid())."""
        data, condition = self.cleaned_data, Q()
        if data["customer"] is not None:
            condition &= history.customer_filter(data["customer"])
        if data["object_type"]:
            condition &= Q(object_type=data["object_type"])
        if object_id := data["object_id"].strip():
            condition &= Q(object_id=object_id)
        if data["actor"] is not None:
            condition &= Q(actor=data["actor"])
        if action := data["action"].strip():
            condition &= Q(action__startswith=action)
        return condition


def _find_user(value: str, *, by_id: bool) -> User | None:
    if by_id:
        return User.objects.filter(pk=int(value)).first()
    return User.objects.filter(email__iexact=normalize_email(value)).first()


@dataclass(frozen=True)
class Page:
    """One page of events, numbered from 1, without the total."""

    events: list
    number: int
    has_next: bool

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def previous_page_number(self) -> int:
        return self.number - 1

    @property
    def next_page_number(self) -> int:
        return self.number + 1

    @classmethod
    def of(cls, events: QuerySet, raw_number: str | None) -> "Page":
        """Page `raw_number` of `events` (1 for anything but a number from 1 to 999,999: a larger offset would
        overflow the database's): PER_PAGE + 1 rows fetched."""
        valid = raw_number and raw_number.isascii() and raw_number.isdigit() and 0 < int(raw_number) < 1_000_000
        number = int(raw_number) if valid else 1
        start = (number - 1) * PER_PAGE
        rows = list(events[start : start + PER_PAGE + 1])
        return cls(events=rows[:PER_PAGE], number=number, has_next=len(rows) > PER_PAGE)


@staff_view(roles.VIEW_AUDIT)
@require_GET
def audit_log(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET)
    page = None
    if form.is_valid():
        events = AuditEvent.objects.filter(form.condition()).select_related("actor").order_by("-created_at", "-pk")
        page = Page.of(events, request.GET.get("page"))
    return render_page(request, "staff/audit.html", {"form": form, "page": page}, status=422 if form.errors else 200)


urlpatterns = [path("audit/", audit_log, name="audit")]
