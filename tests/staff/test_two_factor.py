"""The staff second factor (SPEC §10): TOTP with django-otp, recovery codes, the admin gate, the demo notice."""

from datetime import UTC, datetime

import pytest
from django.urls import reverse
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.oath import totp
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from staff import two_factor
from studio.models import ActorKind, AuditEvent
from tests.concurrency import at_once
from tests.factories import PASSWORD

NOTICE = "Two-factor sign-in is off in this demo. Production requires it for the staff console and the admin."
START = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def required(settings):
    settings.STAFF_REQUIRE_2FA = True


@pytest.fixture
def clock(time_machine):
    time_machine.move_to(START, tick=False)
    return time_machine


def code_for(device: TOTPDevice) -> str:
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits, drift=device.drift):06d}"


def enrolled(user) -> tuple[TOTPDevice, list[str]]:
    """`user` with a confirmed authenticator and recovery codes, as the set-up page leaves them."""
    device = two_factor.pending_device(user)
    return two_factor.enrol(user, code_for(device))


def mark_verified(client, device) -> None:
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()


def audit_rows():
    return [
        (e.actor.email, e.actor_kind, e.action, e.object_type, e.object_id, e.before, e.after)
        for e in AuditEvent.objects.filter(action__startswith="staff.two_factor").order_by("pk")
    ]


def field_errors(response) -> list[str]:
    return [str(error) for error in response.context["form"].errors.get("code", [])]


# --- who may open the pages ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["staff:two-factor", "staff:two-factor-setup", "staff:two-factor-recovery"])
@pytest.mark.parametrize("method", ["get", "post"])
def test_two_factor_pages_are_404_to_anyone_but_staff(client, customer, required, name, method):
    url = reverse(name)
    assert getattr(client, method)(url, {"code": "123456"}).status_code == 404
    client.force_login(customer)
    assert getattr(client, method)(url, {"code": "123456"}).status_code == 404
    assert TOTPDevice.objects.count() == 0


def test_inactive_staff_get_404(client, support, required):
    support.is_active = False
    support.save(update_fields=["is_active"])
    client.force_login(support)  # force_login skips the backend's active check
    assert client.get(reverse("staff:two-factor")).status_code == 404


# --- the gate -----------------------------------------------------------------------------------


def test_staff_home_sends_unverified_staff_to_two_factor_then_to_setup(client, support, required):
    client.force_login(support)

    first = client.get(reverse("staff:home"))
    second = client.get(first.url)

    assert first.status_code == 302 and first.url == "/staff/2fa/?next=%2Fstaff%2F"
    assert second.status_code == 302 and second.url == "/staff/2fa/setup/?next=%2Fstaff%2F"


def test_pages_before_the_second_factor_show_no_staff_navigation(client, finance, required, clock):
    enrolled(finance)
    client.force_login(finance)

    page = client.get(reverse("staff:two-factor")).content.decode()

    assert "Enter the 6-digit code" in page
    assert "Refund requests" not in page and 'class="sidenav"' not in page


def test_without_the_requirement_staff_pages_show_the_notice_and_do_not_redirect(client, support, settings):
    settings.STAFF_REQUIRE_2FA = False
    client.force_login(support)

    response = client.get(reverse("staff:home"))

    assert response.status_code == 200
    assert response.content.decode().count(NOTICE) == 1


def test_with_the_requirement_the_notice_is_gone(client, support, required, clock):
    device, _codes = enrolled(support)
    client.force_login(support)
    mark_verified(client, device)

    response = client.get(reverse("staff:home"))

    assert response.status_code == 200
    assert NOTICE not in response.content.decode()


# --- enrolment ----------------------------------------------------------------------------------


def test_setup_shows_a_qr_code_and_the_key_and_is_never_cached(client, support, required, clock):
    client.force_login(support)

    response = client.get(reverse("staff:two-factor-setup"))
    again = client.get(reverse("staff:two-factor-setup"))

    device = TOTPDevice.objects.get(user=support)
    page = response.content.decode()
    assert response.status_code == 200 and device.confirmed is False
    assert '<img class="two-factor-qr" src="data:image/svg+xml;base64,' in page
    assert 'alt="QR code for your authenticator app.' in page
    assert two_factor.secret_for_display(device) in page
    assert "no-store" in response["Cache-Control"]
    # Reloading shows the same device, so a code from the first scan still confirms it.
    assert again.context["secret"] == response.context["secret"]
    assert TOTPDevice.objects.filter(user=support).count() == 1
    assert "style=" not in page


def test_qr_code_holds_the_otpauth_url(support, clock):
    import base64

    device = two_factor.pending_device(support)

    svg = base64.b64decode(two_factor.qr_data_uri(device).removeprefix("data:image/svg+xml;base64,")).decode()

    assert svg.startswith("<svg") and "style=" not in svg
    assert device.config_url.startswith("otpauth://totp/Studio%20Console%3Asupport%40staff.example?secret=")


def test_enrol_with_a_real_code_confirms_the_device_and_shows_ten_recovery_codes_once(client, support, required, clock):
    client.force_login(support)
    client.get(reverse("staff:two-factor-setup"))
    device = TOTPDevice.objects.get(user=support)

    response = client.post(reverse("staff:two-factor-setup"), {"code": code_for(device), "next": "/staff/"})

    device.refresh_from_db()
    codes = response.context["codes"]
    stored = sorted(StaticToken.objects.filter(device__user=support).values_list("token", flat=True))
    assert response.status_code == 200 and device.confirmed is True
    assert len(codes) == 10 and sorted(codes) == stored and len(set(codes)) == 10
    assert all(f"<code>{code}</code>" in response.content.decode() for code in codes)
    assert "no-store" in response["Cache-Control"]
    assert response.context["next_url"] == "/staff/"
    # The session passed the second factor: the console opens.
    assert client.get(reverse("staff:home")).status_code == 200
    # Never shown again: the two-factor page only counts them.
    page = client.get(reverse("staff:two-factor")).content.decode()
    assert "You have 10 unused recovery codes." in page and not any(code in page for code in codes)
    assert audit_rows() == [
        (
            "support@staff.example",
            ActorKind.STAFF,
            "staff.two_factor.enrol",
            "studio.user",
            str(support.pk),
            {"authenticators": []},
            {"authenticator": device.pk, "recovery_codes": 10},
        )
    ]
    assert device.key not in str(AuditEvent.objects.values_list("before", "after", "reason").get())


def test_enrol_with_a_wrong_code_is_422_and_changes_nothing(client, support, required, clock):
    client.force_login(support)
    client.get(reverse("staff:two-factor-setup"))
    device = TOTPDevice.objects.get(user=support)
    wrong = f"{(int(code_for(device)) + 500_000) % 1_000_000:06d}"

    response = client.post(reverse("staff:two-factor-setup"), {"code": wrong})

    device.refresh_from_db()
    assert response.status_code == 422
    assert field_errors(response) == ["That code is not right. Check that your phone's clock is correct and try again."]
    assert device.confirmed is False and StaticDevice.objects.count() == 0
    assert client.get(reverse("staff:home")).status_code == 302
    assert audit_rows() == []


def test_enrol_rejects_a_malformed_code_without_counting_a_failure(client, support, required, clock):
    client.force_login(support)
    client.get(reverse("staff:two-factor-setup"))

    response = client.post(reverse("staff:two-factor-setup"), {"code": "12345"})

    assert response.status_code == 422
    assert field_errors(response) == ["Enter the 6-digit code your authenticator app shows."]
    assert TOTPDevice.objects.get(user=support).throttling_failure_count == 0


def test_staff_with_an_authenticator_cannot_re_enrol_unverified(client, support, required, clock):
    device, _codes = enrolled(support)
    client.force_login(support)

    get = client.get(reverse("staff:two-factor-setup"))
    post = client.post(reverse("staff:two-factor-setup"), {"code": code_for(device)})

    assert get.status_code == 302 and get.url == "/staff/2fa/?next=%2Fstaff%2F"
    assert post.status_code == 302 and post.url == "/staff/2fa/?next=%2Fstaff%2F"
    assert list(TOTPDevice.objects.filter(user=support).values_list("pk", "confirmed")) == [(device.pk, True)]


def test_re_enrolment_from_a_verified_session_replaces_the_device_and_the_codes(client, support, required, clock):
    old_device, old_codes = enrolled(support)
    client.force_login(support)
    mark_verified(client, old_device)

    page = client.get(reverse("staff:two-factor-setup"))
    new_device = TOTPDevice.objects.get(user=support, confirmed=False)
    response = client.post(reverse("staff:two-factor-setup"), {"code": code_for(new_device)})

    assert "You are replacing your authenticator." in page.content.decode()
    assert response.status_code == 200
    assert list(TOTPDevice.objects.filter(user=support).values_list("pk", "confirmed")) == [(new_device.pk, True)]
    assert set(response.context["codes"]).isdisjoint(old_codes)
    assert two_factor.verify(support, old_codes[0]).device is None
    # The session stays verified, now by the new device.
    assert client.get(reverse("staff:home")).status_code == 200
    assert [row[2:] for row in audit_rows()] == [
        ("staff.two_factor.enrol", "studio.user", str(support.pk), {"authenticators": []}, _after(old_device)),
        (
            "staff.two_factor.enrol",
            "studio.user",
            str(support.pk),
            {"authenticators": [old_device.pk]},
            _after(new_device),
        ),
    ]


def _after(device):
    return {"authenticator": device.pk, "recovery_codes": 10}


# --- verification -------------------------------------------------------------------------------


def test_verify_with_the_app_code_passes_and_follows_next(client, support, required, clock):
    device, _codes = enrolled(support)
    clock.shift(30)  # the enrolment used this step's code; each code works once
    client.force_login(support)
    key_before = client.session.session_key

    response = client.post(reverse("staff:two-factor"), {"code": code_for(device), "next": "/staff/audit/?actor=x"})

    assert response.status_code == 302 and response.url == "/staff/audit/?actor=x"
    assert client.session[DEVICE_ID_SESSION_KEY] == device.persistent_id
    assert client.session.session_key != key_before
    assert client.get(reverse("staff:home")).status_code == 200
    assert audit_rows()[-1] == (
        "support@staff.example",
        ActorKind.STAFF,
        "staff.two_factor.verify",
        "studio.user",
        str(support.pk),
        {},
        {"method": "authenticator"},
    )


def test_an_app_code_works_once(client, support, required, clock):
    device, _codes = enrolled(support)
    clock.shift(30)
    code = code_for(device)
    assert two_factor.verify(support, code).device == device

    clock.shift(2)
    assert two_factor.verify(support, code).device is None


def test_wrong_code_is_422_and_leaves_the_session_unverified(client, support, required, clock):
    device, _codes = enrolled(support)
    clock.shift(30)
    client.force_login(support)
    wrong = f"{(int(code_for(device)) + 500_000) % 1_000_000:06d}"

    response = client.post(reverse("staff:two-factor"), {"code": wrong})

    device.refresh_from_db()
    assert response.status_code == 422
    assert field_errors(response) == ["That code is not right. Check that your phone's clock is correct and try again."]
    assert DEVICE_ID_SESSION_KEY not in client.session
    assert client.get(reverse("staff:home")).status_code == 302
    assert device.throttling_failure_count == 1
    assert [row[2] for row in audit_rows()] == ["staff.two_factor.enrol"]


def test_a_malformed_code_is_a_field_error(client, support, required, clock):
    enrolled(support)
    client.force_login(support)

    response = client.post(reverse("staff:two-factor"), {"code": "abc"})

    assert response.status_code == 422
    assert field_errors(response) == [
        "Enter the 6-digit code from your authenticator app, or one of your recovery codes."
    ]


def test_after_wrong_codes_even_the_right_code_waits_for_the_back_off(client, support, required, clock):
    device, _codes = enrolled(support)
    clock.shift(30)
    client.force_login(support)
    wrong = f"{(int(code_for(device)) + 500_000) % 1_000_000:06d}"
    client.post(reverse("staff:two-factor"), {"code": wrong})
    client.post(reverse("staff:two-factor"), {"code": wrong, "next": "/staff/"})  # within 1 s: refused unseen
    clock.shift(1)
    client.post(reverse("staff:two-factor"), {"code": wrong})  # the 2nd failure: now 2 s

    throttled = client.post(reverse("staff:two-factor"), {"code": code_for(device)})
    clock.shift(2)
    passed = client.post(reverse("staff:two-factor"), {"code": code_for(device)})

    assert throttled.status_code == 429
    assert field_errors(throttled) == ["Too many wrong codes. Try again in 2 seconds."]
    assert passed.status_code == 302
    device.refresh_from_db()
    assert device.throttling_failure_count == 0


def test_recovery_codes_work_once_each(client, support, required, clock):
    _device, codes = enrolled(support)
    client.force_login(support)

    first = client.post(reverse("staff:two-factor"), {"code": codes[0].upper()[:4] + "-" + codes[0][4:]})
    client.logout()
    client.force_login(support)
    clock.shift(5)
    reused = client.post(reverse("staff:two-factor"), {"code": codes[0]})
    clock.shift(5)
    other = client.post(reverse("staff:two-factor"), {"code": codes[1]})

    assert first.status_code == 302 and first.url == "/staff/"
    assert reused.status_code == 422
    assert other.status_code == 302
    assert sorted(StaticToken.objects.values_list("token", flat=True)) == sorted(codes[2:])
    assert [row[6] for row in audit_rows()[1:]] == [{"method": "recovery_code"}, {"method": "recovery_code"}]


def test_verified_staff_see_the_state_of_their_second_factor(client, support, required, clock):
    device, _codes = enrolled(support)
    client.force_login(support)
    mark_verified(client, device)

    page = client.get(reverse("staff:two-factor")).content.decode()

    assert "This session has passed two-factor sign-in." in page
    assert "You have 10 unused recovery codes." in page
    assert 'href="/staff/2fa/setup/"' in page and 'action="/staff/2fa/recovery-codes/"' in page


@pytest.mark.parametrize(
    "next_url",
    [
        "https://evil.example/staff/",
        "//evil.example/staff/",
        "/\\evil.example/",
        "/api-keys/",
        "javascript:alert(1)",
        "",
    ],
)
def test_next_outside_the_staff_console_and_admin_is_ignored(client, support, required, clock, next_url):
    _device, codes = enrolled(support)
    client.force_login(support)

    response = client.post(reverse("staff:two-factor"), {"code": codes[0], "next": next_url})

    assert response.status_code == 302 and response.url == "/staff/"


# --- new recovery codes -------------------------------------------------------------------------


def test_new_recovery_codes_need_a_verified_session(client, support, required, clock):
    _device, codes = enrolled(support)
    client.force_login(support)

    response = client.post(reverse("staff:two-factor-recovery"))

    assert response.status_code == 302 and response.url == "/staff/2fa/?next=%2Fstaff%2F2fa%2F"
    assert sorted(StaticToken.objects.values_list("token", flat=True)) == sorted(codes)


def test_new_recovery_codes_replace_the_old_ones(client, support, required, clock):
    device, old = enrolled(support)
    client.force_login(support)
    mark_verified(client, device)

    response = client.post(reverse("staff:two-factor-recovery"))

    new = response.context["codes"]
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    assert sorted(StaticToken.objects.values_list("token", flat=True)) == sorted(new)
    assert set(new).isdisjoint(old) and len(new) == 10
    assert two_factor.verify(support, old[0]).device is None
    assert audit_rows()[-1][2:] == (
        "staff.two_factor.recovery_codes",
        "studio.user",
        str(support.pk),
        {"recovery_codes": 10},
        {"recovery_codes": 10},
    )


# --- the admin ----------------------------------------------------------------------------------


def test_admin_sends_unverified_staff_to_two_factor_and_admits_verified(client, superuser, required, clock):
    device, _codes = enrolled(superuser)
    client.force_login(superuser)

    index = client.get("/admin/")
    changelist = client.get("/admin/studio/user/?q=root")
    mark_verified(client, device)
    admitted = client.get("/admin/")

    assert index.status_code == 302 and index.url == "/staff/2fa/?next=%2Fadmin%2F"
    assert changelist.status_code == 302 and changelist.url == "/staff/2fa/?next=%2Fadmin%2Fstudio%2Fuser%2F%3Fq%3Droot"
    assert admitted.status_code == 200 and "Site administration" in admitted.content.decode()


def test_admin_sign_in_still_works_and_then_the_gate_applies(client, superuser, required, clock):
    enrolled(superuser)

    login_page = client.get("/admin/login/?next=/admin/")
    signed_in = client.post("/admin/login/?next=/admin/", {"username": superuser.email, "password": PASSWORD})
    gated = client.get("/admin/")

    assert login_page.status_code == 200
    assert signed_in.status_code == 302 and signed_in.url == "/admin/"
    assert gated.status_code == 302 and gated.url == "/staff/2fa/?next=%2Fadmin%2F"


def test_admin_gate_leaves_non_staff_to_the_admin(client, customer, required):
    client.force_login(customer)

    response = client.get("/admin/")

    assert response.status_code == 302 and response.url == "/admin/login/?next=/admin/"


def test_admin_is_open_to_unverified_staff_when_not_required(client, superuser, settings):
    settings.STAFF_REQUIRE_2FA = False
    client.force_login(superuser)

    assert client.get("/admin/").status_code == 200


def test_admin_lists_the_otp_devices_for_a_superuser_to_delete(client, superuser, support, required, clock):
    device, _codes = enrolled(superuser)
    enrolled(support)
    client.force_login(superuser)
    mark_verified(client, device)

    totp_list = client.get("/admin/otp_totp/totpdevice/")
    static_list = client.get("/admin/otp_static/staticdevice/")

    assert totp_list.status_code == 200 and static_list.status_code == 200
    assert "support@staff.example" in totp_list.content.decode()


# --- at once (PostgreSQL) -----------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_one_recovery_code_used_twice_at_once_signs_in_once(support, clock):
    _device, codes = enrolled(support)

    results, errors = at_once(lambda _: two_factor.verify(support, codes[0]).device is not None, 4)

    assert errors == []
    assert sorted(results) == [False, False, False, True]
    assert sorted(StaticToken.objects.values_list("token", flat=True)) == sorted(codes[1:])


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_one_app_code_used_twice_at_once_signs_in_once(support, clock):
    device, _codes = enrolled(support)
    clock.shift(30)
    code = code_for(device)

    results, errors = at_once(lambda _: two_factor.verify(support, code).device is not None, 4)

    assert errors == []
    assert sorted(results) == [False, False, False, True]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_enrolment_confirmed_twice_at_once_makes_one_set_of_codes(support, clock):
    device = two_factor.pending_device(support)
    code = code_for(device)

    results, errors = at_once(lambda _: two_factor.enrol(support, code) is not None, 3)

    assert errors == []
    assert sorted(results) == [False, False, True]
    assert TOTPDevice.objects.filter(user=support, confirmed=True).count() == 1
    assert StaticToken.objects.filter(device__user=support).count() == 10
    assert AuditEvent.objects.filter(action="staff.two_factor.enrol").count() == 1
