"""Who may use the staff console: one decorator per view, checked on the server for every method.

Anyone who is not staff, or is staff without the view's permission, gets 404 (as another user's key
does): the staff console does not admit it exists. Staff who must pass a second factor and have not
in this session are sent to do so (staff.views.security).
"""

from functools import wraps
from urllib.parse import urlencode

from django.conf import settings
from django.http import Http404
from django.shortcuts import redirect
from django.urls import reverse


def is_staff_member(user) -> bool:
    return bool(user.is_authenticated and user.is_active and user.is_staff)


def needs_second_factor(request) -> bool:
    """With STAFF_REQUIRE_2FA (production), a staff member's session must be verified by django-otp."""
    return settings.STAFF_REQUIRE_2FA and not request.user.is_verified()


def staff_view(*perms: str):
    """Decorate a staff console view: 404 unless the user is active staff holding every one of `perms`."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not is_staff_member(request.user) or not request.user.has_perms(perms):
                raise Http404
            if needs_second_factor(request):
                return redirect(f"{reverse('staff:two-factor')}?{urlencode({'next': request.get_full_path()})}")
            return view(request, *args, **kwargs)

        wrapped.staff_permissions = perms  # read by the permission-matrix test
        return wrapped

    return decorator
