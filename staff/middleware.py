"""The admin's second-factor gate (SPEC §10): with STAFF_REQUIRE_2FA, staff reach /admin/ only verified.

The admin's own sign-in and sign-out pages stay open, so its login form still works; every other admin
URL sends a staff member whose session has not passed the second factor to staff:two-factor, which
comes back here afterwards. Anyone else goes on to the admin, which turns them away as it always does.
"""

from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from staff.access import is_staff_member, needs_second_factor


class AdminSecondFactorMiddleware:
    """Place after django_otp.middleware.OTPMiddleware (it needs request.user.is_verified)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self._must_verify(request):
            query = urlencode({"next": request.get_full_path()})
            return redirect(f"{reverse('staff:two-factor')}?{query}")
        return self.get_response(request)

    @staticmethod
    def _must_verify(request: HttpRequest) -> bool:
        if not request.path.startswith(reverse("admin:index")):
            return False
        if request.path in (reverse("admin:login"), reverse("admin:logout")):
            return False
        return is_staff_member(request.user) and needs_second_factor(request)
