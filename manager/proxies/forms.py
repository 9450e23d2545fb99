from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model, password_validation
from django.db import models

from manager.proxies.models import Application, Device, Instance, Proxy
from manager.proxies.roles import ROLE_HELP, ROLES, assign, role_of


def _fits(value: object) -> bool:
    """A primary key the database can compare: a posted 10**20 made SQLite raise OverflowError (a 500)."""
    return not str(value).isdigit() or int(str(value)) < 2**63


class ModelChoiceField(forms.ModelChoiceField):
    def to_python(self, value):  # type: ignore[no-untyped-def]
        if value not in self.empty_values and not _fits(value):
            raise forms.ValidationError(self.error_messages["invalid_choice"], code="invalid_choice")
        return super().to_python(value)


class ModelMultipleChoiceField(forms.ModelMultipleChoiceField):
    def _check_values(self, value):  # type: ignore[no-untyped-def]
        for v in value or ():
            if not _fits(v):
                raise forms.ValidationError(self.error_messages["invalid_pk_value"], code="invalid_pk_value",
                                            params={"pk": str(v)[:20]})
        return super()._check_values(value)


def _formfield(field: models.Field, **kwargs):  # type: ignore[no-untyped-def]
    if isinstance(field, models.URLField):
        kwargs.setdefault("assume_scheme", "https")  # what Django 6 does; said explicitly now
    if isinstance(field, models.ManyToManyField):
        kwargs.setdefault("form_class", ModelMultipleChoiceField)
    elif isinstance(field, models.ForeignKey):
        kwargs.setdefault("form_class", ModelChoiceField)
    return field.formfield(**kwargs)


PROXY_GROUPS = [
    ("Proxy", ["name", "fqdn", "aliases", "enabled", "bind"]),
    ("Services", ["sip_mode", "sip_udp_port", "sip_tls_port", "sip_rate_limit", "media_mode", "media_port_min",
                  "media_port_max", "media_idle_timeout", "media_setup_timeout", "media_max_streams",
                  "media_max_streams_per_source", "media_max_streams_per_instance",
                  "provisioning_mode", "provisioning_https_port", "provisioning_http_port",
                  "xmpp_enabled", "xmpp_port", "xmpp_direct_tls_port", "web_mode", "web_port",
                  "web_upstream_timeout"]),
    ("Redirection", ["redirect_url"]),
    ("Certificate", ["tls_mode", "certificate_pem", "key_pem", "tls_key_type", "acme_directory", "acme_email",
                     "acme_names", "acme_challenge", "acme_http_port"]),
    ("Access", ["allow_sources"]),
    ("Network", ["network_mode", "network_interface", "network_address", "network_gateway", "network_table"]),
]


class SecretTextarea(forms.Textarea):
    """A textarea for a secret: never filled in, not even with what was posted to a form that is shown
    again for another field's error (as PasswordInput without render_value)."""

    def format_value(self, value):  # type: ignore[no-untyped-def]
        return None


class ProxyForm(forms.ModelForm):
    key_pem = forms.CharField(label="Certificate Key", required=False, widget=SecretTextarea(attrs={"rows": 3}),
                              help_text="stored encrypted; leave blank to keep the current key")

    class Meta:
        model = Proxy
        formfield_callback = _formfield
        fields = [f for _, group in PROXY_GROUPS for f in group if f != "key_pem"]
        widgets = {"certificate_pem": forms.Textarea(attrs={"rows": 3}),
                   "allow_sources": forms.Textarea(attrs={"rows": 2}), "aliases": forms.Textarea(attrs={"rows": 2}),
                   "acme_names": forms.Textarea(attrs={"rows": 2})}

    # the proxy's secrets: set only by those allowed to change keys (proxies.change_proxy_keys)
    KEY_FIELDS = ("certificate_pem", "key_pem")

    def __init__(self, *args, keys_allowed: bool = True, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["network_mode"].disabled = True  # fixed after creation (seed 003)
        if not keys_allowed:
            for name in self.KEY_FIELDS:  # disabled: a posted value is ignored, the stored one kept
                self.fields[name].disabled = True
                self.fields[name].help_text = "Only an admin can change this."

    def clean_certificate_pem(self) -> str:
        """PEM as the proxy writes it: browsers post a textarea with CRLF and the field strips the last
        newline, so every save changed the stored certificate (and the change log said so)."""
        pem = "\n".join(self.cleaned_data.get("certificate_pem", "").splitlines()).strip()
        return pem + "\n" if pem else ""

    def clean(self):  # type: ignore[no-untyped-def]
        data = super().clean()
        if data.get("key_pem"):
            self.instance.key_pem = data["key_pem"]
        return data

    def groups(self):  # type: ignore[no-untyped-def]
        return [(title, [self[f] for f in names]) for title, names in PROXY_GROUPS]


class InstanceForm(forms.ModelForm):
    class Meta:
        model = Instance
        formfield_callback = _formfield
        fields = ["name", "web", "web_prefix_mode", "sip_transport", "sip_host", "sip_port", "sip_tls_fingerprint",
                  "sip_domains", "rtp_only", "sip_offers_tcp", "media_sources", "xmpp", "xmpp_domains", "provisioning",
                  "proxies"]
        widgets = {"sip_domains": forms.Textarea(attrs={"rows": 2}), "xmpp_domains": forms.Textarea(attrs={"rows": 2}),
                   "media_sources": forms.Textarea(attrs={"rows": 2})}


class ParentForm(forms.ModelForm):
    """A form for an object of one parent (a device of an instance, an application of a proxy) that
    does not show the parent: Django leaves a unique-together rule that names a field not on the
    form unchecked, so a duplicate reached the database and was a 500. Here it is a form error."""

    parent_field = ""

    def _get_validation_exclusions(self):  # type: ignore[no-untyped-def]
        return super()._get_validation_exclusions() - {self.parent_field}


class DeviceForm(ParentForm):
    parent_field = "instance"

    class Meta:
        model = Device
        fields = ["mac", "label"]


class ApplicationForm(ParentForm):
    parent_field = "proxy"

    class Meta:
        model = Application
        formfield_callback = _formfield
        fields = list(Application.FIELDS)
        labels = {"tls": "TLS on the server port", "verify_upstream": "Verify the upstream's certificate"}


class UserForm(forms.ModelForm):
    """A manager account and its one role; the password is set here (create) or replaced (edit)."""

    role = forms.ChoiceField(choices=[(r, r) for r in ROLES], help_text=ROLE_HELP)
    password = forms.CharField(widget=forms.PasswordInput, required=False, strip=False,
                               help_text="at least 8 characters; when editing, leave blank to keep the password")

    class Meta:
        model = get_user_model()
        fields = ["username", "email", "is_active"]

    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["role"].initial = role_of(self.instance)
        else:
            self.fields["password"].required = True

    def clean_password(self) -> str:
        value = self.cleaned_data.get("password", "")
        if value:
            password_validation.validate_password(value, self.instance)
        return value

    def save(self, commit: bool = True):  # type: ignore[no-untyped-def]
        user = super().save(commit=False)
        if self.cleaned_data.get("password"):
            user.set_password(self.cleaned_data["password"])
        user.save()
        assign(user, self.cleaned_data["role"])
        return user
