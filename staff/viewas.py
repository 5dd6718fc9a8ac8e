"""View as customer (SPEC §10): a staff member sees a customer's console, rendered by the customer's own views,
read-only.

Starting and ending a viewing are staff.views.customers' (each audited); the session holds it. For as long as it
lasts, ViewAsMiddleware serves every customer-console request as the customer would see it:

- `request.user` is the customer, `request.staff_user` the staff member, `request.viewing_as` the customer (the
  banner in base.html). Staff pages, the admin, the fleet API, static files, sign-out and the language switch
  (the staff member's own preference, not the customer's) are left alone.
- Any method but GET, HEAD and OPTIONS is refused (403, a page saying so) before a view runs.
- GET and HEAD run inside a transaction that is always rolled back: the few GETs that write in normal use (the
  billing set-up wizard's start) write nothing, and on_commit hooks (outbox delivery) never fire. The session and
  messages are written after it, by their middleware.
- The staff member must still be active staff holding roles.VIEW_AS (and verified, where a second factor is
  required) on every request; if not, the viewing ends there and the request is their own again.
"""

from django.contrib import messages
from django.db import transaction
from django.http import HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails

from staff import roles
from staff.access import is_staff_member, needs_second_factor
from studio.models import ActorKind, AuditEvent, User

SESSION_KEY = "staff_viewing_as"
# Not the customer's console: these run as the signed-in staff member even during a viewing.
EXCLUDED_PREFIXES = ("/staff/", "/admin/", "/static/", "/api/", "/accounts/logout/", "/language/")
EXCLUDED_PATHS = frozenset({"/healthz", "/readyz"})
SESSIONLESS_PREFIXES = ("/api/", "/static/")
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Audit reasons (data, not shown to customers) of a viewing that ends by itself.
LOST_PERMISSION = gettext_noop("Ended automatically: the staff member may no longer view as a customer.")
NOT_VIEWABLE = gettext_noop("Ended automatically: the user is now staff, a superuser or deactivated.")


def may_view_as(request, staff) -> bool:
    return is_staff_member(staff) and staff.has_perm(roles.VIEW_AS) and not needs_second_factor(request)


def viewable(user) -> bool:
    """Staff pages are no customer's: nobody views as a staff member or a superuser."""
    return user.is_active and not user.is_staff and not user.is_superuser


def viewing_id(request) -> int | None:
    """The id of the customer this session views as, if any."""
    viewing = request.session.get(SESSION_KEY)
    return viewing.get("user_id") if isinstance(viewing, dict) else None


def start(request, customer, *, reason: str) -> None:
    """Begin viewing as `customer` (a viewing of someone else ends first), audited as "staff.view_as"."""
    if viewing_id(request) not in (None, customer.pk):
        end(request, reason=reason)
    AuditEvent.record(
        actor=request.user, actor_kind=ActorKind.STAFF, action="staff.view_as", obj=customer, reason=reason
    )
    request.session[SESSION_KEY] = {"user_id": customer.pk}


def end(request, *, reason: str = "") -> User | None:
    """End this session's viewing, audited as "staff.view_as_end"; returns the customer it was (None if none)."""
    user_id = viewing_id(request)
    request.session.pop(SESSION_KEY, None)
    customer = User.objects.filter(pk=user_id).first() if user_id is not None else None
    if customer is not None and request.user.is_authenticated:
        AuditEvent.record(
            actor=request.user, actor_kind=ActorKind.STAFF, action="staff.view_as_end", obj=customer, reason=reason
        )
    return customer


def refuse(request, customer) -> HttpResponse:
    """403 for a write. Without JS (a form posted): a page saying so. From htmx (a dialog's form): the page the
    staff member was on is loaded again, with the same words as a message, since htmx swaps no 4xx answer."""
    htmx = HtmxDetails(request)  # HtmxMiddleware comes later in the chain
    if not htmx:
        return render(request, "staff/view_as_refused.html", {"customer": customer}, status=403)
    messages.warning(request, _("This is a read-only view of the customer's console: nothing was changed."))
    current = htmx.current_url or ""
    if not url_has_allowed_host_and_scheme(current, allowed_hosts={request.get_host()}):
        current = reverse("api-keys")
    response = HttpResponseClientRedirect(current)
    response.status_code = 403
    return response


class ViewAsMiddleware:
    """After authentication and UserLanguageMiddleware (the staff member keeps their language) and after
    MessageMiddleware (so a viewing that ends can say so, and messages are stored outside the rolled-back block)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        # The probes and the fleet API never touch the session (no Vary: Cookie on their answers).
        if request.path in EXCLUDED_PATHS or request.path.startswith(SESSIONLESS_PREFIXES):
            return self.get_response(request)
        if SESSION_KEY not in request.session:
            return self.get_response(request)
        staff = request.user
        if not may_view_as(request, staff):
            return self.ended(request, reason=LOST_PERMISSION)
        if request.path.startswith(EXCLUDED_PREFIXES):
            return self.get_response(request)
        customer = User.objects.filter(pk=viewing_id(request)).first()
        if customer is None or not viewable(customer):
            return self.ended(request, reason=NOT_VIEWABLE)
        request.staff_user, request.user, request.viewing_as = staff, customer, customer
        if request.method not in READ_METHODS:
            return refuse(request, customer)
        with transaction.atomic():
            try:
                return self.get_response(request)
            finally:
                # Whatever the view wrote is undone, and with it every on_commit hook it registered.
                transaction.set_rollback(True)

    def ended(self, request, *, reason: str):
        """The viewing ends by itself; the request goes on as the signed-in user's own."""
        customer = end(request, reason=reason)
        if customer is not None and request.user.is_authenticated:
            message = _("Your read-only view of %(email)s's console has ended.") % {"email": customer.email}
            messages.info(request, message)
        return self.get_response(request)
