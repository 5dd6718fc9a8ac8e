from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.shortcuts import redirect
from django.urls import include, path

from studio.forms import ResetPasswordForm
from studio.views import accounts, api_keys, health, projects
from usage.api import api as fleet_api


def home(request):
    return redirect("api-keys" if request.user.is_authenticated else "login")


urlpatterns = [
    path("", home, name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("api-keys/", api_keys.api_key_list, name="api-keys"),
    path("api-keys/create/", api_keys.api_key_create, name="api-key-create"),
    path("api-keys/<int:key_id>/", api_keys.api_key_detail, name="api-key-detail"),
    path("api-keys/<int:key_id>/rename/", api_keys.api_key_rename, name="api-key-rename"),
    path("api-keys/<int:key_id>/revoke/", api_keys.api_key_revoke, name="api-key-revoke"),
    path("projects/import/", projects.project_import, name="project-import"),
    path("settings/", accounts.settings_page, name="settings"),
    path("language/", accounts.set_language, name="set-language"),
    path("accounts/signup/", accounts.signup, name="signup"),
    path("accounts/signup/sent/", accounts.signup_sent, name="signup-sent"),
    path("accounts/signup/confirm/<str:token>/", accounts.signup_confirm, name="signup-confirm"),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password-reset/", accounts.password_reset, name="password_reset"),
    path("accounts/password-reset/sent/", auth_views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path(
        "accounts/reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(form_class=ResetPasswordForm),
        name="password_reset_confirm",
    ),
    path("accounts/reset/done/", auth_views.PasswordResetCompleteView.as_view(), name="password_reset_complete"),
    path("billing/", include("billing.urls")),
    path("usage/", include("usage.urls")),
    path("staff/", include("staff.urls")),
    path("api/v1/", fleet_api.urls),
    path("admin/", admin.site.urls),
]
