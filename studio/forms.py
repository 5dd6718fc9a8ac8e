from django import forms
from django.conf import settings
from django.contrib.auth.forms import SetPasswordForm
from django.db import transaction
from django.utils.translation import gettext_lazy as _

from studio.models import SETTINGS_FIELDS, WRITE_ROLES, ApiKey, Project, Tier, User, normalize_email
from studio.zones import zone_names

NEW_PROJECT = "new"


class SignUpForm(forms.Form):
    """Step one of sign-up: the address to confirm, and the terms. The password comes after the link."""

    email = forms.EmailField(label=_("Email"), max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "email"}))
    accept_terms = forms.BooleanField(
        label=_("I accept the Terms of Service"),
        error_messages={"required": _("You must accept the Terms of Service to create an account.")},
    )

    def clean_email(self):
        return normalize_email(self.cleaned_data["email"])


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(label=_("Key name"), max_length=100, initial=_("Gemini API key"))
    project = forms.ChoiceField(label=_("Project"))
    new_project_name = forms.CharField(label=_("New project name"), max_length=100, required=False)

    def __init__(self, *args, projects, **kwargs):
        super().__init__(*args, **kwargs)
        self.projects = {p.project_id: p for p in projects}
        choices = [(p.project_id, f"{p.name} ({p.project_id})") for p in projects]
        self.fields["project"].choices = [*choices, (NEW_PROJECT, _("Create a new project"))]
        if choices:
            self.fields["project"].initial = choices[0][0]
        else:
            self.fields["project"].initial = NEW_PROJECT

    def clean(self):
        cleaned = super().clean()
        choice = cleaned.get("project")
        if choice == NEW_PROJECT:
            if not cleaned.get("new_project_name", "").strip():
                self.add_error("new_project_name", _("Enter a name for the new project."))
            cleaned["project"] = None
        elif choice is not None:
            cleaned["project"] = self.projects[choice]
        return cleaned


class RenameApiKeyForm(forms.Form):
    name = forms.CharField(label=_("Key name"), max_length=100)


class ImportProjectsForm(forms.Form):
    projects = forms.MultipleChoiceField(
        label=_("Projects"),
        widget=forms.CheckboxSelectMultiple,
        error_messages={
            "required": _("Select at least one project to import."),
            "invalid_choice": _("Some of the selected projects can no longer be imported. Refresh and try again."),
        },
    )

    def __init__(self, *args, projects: list[Project], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["projects"].choices = [(p.project_id, f"{p.name} ({p.project_id})") for p in projects]


class SettingsForm(forms.ModelForm):
    time_zone = forms.ChoiceField(label=_("Time zone"), required=False)

    class Meta:
        model = User
        fields = ["full_name", "language", "time_zone", "studio_api_key"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Blank: the usage dashboard follows the zone the browser reports (a cookie console.js sets).
        browser = [("", _("Use my browser's time zone"))]
        self.fields["time_zone"].choices = browser + [(name, name) for name in zone_names()]
        # Only a paid key can be linked: studio usage through it is billed to its project.
        paid = (
            ApiKey.objects.visible_to(self.instance)
            .filter(mine__role__in=WRITE_ROLES)
            .exclude(project__tier=Tier.FREE)
            .order_by("name")
        )
        field = self.fields["studio_api_key"]
        field.queryset = paid
        field.label_from_instance = lambda key: f"{key.name} ({key.masked}) · {key.project.name}"
        field.empty_label = _("None: studio usage stays free")
        field.required = False

    def save(self):
        """Name, language and time zone, and the studio key through User.link_studio_key (audited), in
        one transaction."""
        user = self.instance
        with transaction.atomic():
            user.update_settings(by=user, **{name: self.cleaned_data[name] for name in SETTINGS_FIELDS})
            user.link_studio_key(self.cleaned_data["studio_api_key"], by=user)
        return user


class ResetPasswordForm(SetPasswordForm):
    """The password-reset link's form: the new password is saved with an audit event (user.password_reset)."""

    def save(self, commit=True):
        self.user.set_password_audited(self.cleaned_data["new_password1"], action="user.password_reset")
        return self.user


class LanguageForm(forms.Form):
    language = forms.ChoiceField(choices=settings.LANGUAGES)
