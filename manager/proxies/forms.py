from __future__ import annotations

from django import forms
from django.db import models

from manager.proxies.models import Application, Device, Instance, Proxy


def _formfield(field: models.Field, **kwargs):  # type: ignore[no-untyped-def]
    if isinstance(field, models.URLField):
        kwargs.setdefault("assume_scheme", "https")  # what Django 6 does; said explicitly now
    return field.formfield(**kwargs)


PROXY_GROUPS = [
    ("Proxy", ["name", "fqdn", "aliases", "enabled", "bind"]),
    ("Services", ["sip_mode", "sip_udp_port", "sip_tls_port", "sip_rate_limit", "media_mode", "media_port_min",
                  "media_port_max",
                  "provisioning_mode", "provisioning_https_port", "provisioning_http_port",
                  "xmpp_enabled", "xmpp_port", "xmpp_direct_tls_port", "web_mode", "web_port",
                  "web_upstream_timeout"]),
    ("Redirection", ["redirect_url"]),
    ("Certificate", ["certificate_pem", "key_pem", "tls_key_type"]),
    ("Access", ["allow_sources"]),
    ("Network", ["network_mode", "network_interface", "network_address", "network_gateway", "network_table"]),
]


class ProxyForm(forms.ModelForm):
    key_pem = forms.CharField(label="Certificate Key", required=False, widget=forms.Textarea(attrs={"rows": 3}),
                              help_text="stored encrypted; leave blank to keep the current key")
    regenerate_provisioning_key = forms.BooleanField(
        required=False, label="Generate a new provisioning key",
        help_text="Every provisioning URL issued so far becomes invalid and must be given to the phones again!")

    class Meta:
        model = Proxy
        formfield_callback = _formfield
        fields = [f for _, group in PROXY_GROUPS for f in group if f != "key_pem"]
        widgets = {"certificate_pem": forms.Textarea(attrs={"rows": 3}),
                   "allow_sources": forms.Textarea(attrs={"rows": 2}), "aliases": forms.Textarea(attrs={"rows": 2})}

    # the proxy's secrets: set only by those allowed to change keys (proxies.change_proxy_keys)
    KEY_FIELDS = ("certificate_pem", "key_pem", "regenerate_provisioning_key")

    def __init__(self, *args, keys_allowed: bool = True, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["network_mode"].disabled = True  # fixed after creation (seed 003)
        if not keys_allowed:
            for name in self.KEY_FIELDS:  # disabled: a posted value is ignored, the stored one kept
                self.fields[name].disabled = True
                self.fields[name].help_text = "Only an admin can change this."

    def clean(self):  # type: ignore[no-untyped-def]
        data = super().clean()
        if data.get("key_pem"):
            self.instance.key_pem = data["key_pem"]
        if data.get("regenerate_provisioning_key"):
            from manager.proxies.crypto import new_provisioning_key

            self.instance.provisioning_key = new_provisioning_key()
        return data

    def groups(self):  # type: ignore[no-untyped-def]
        return [(title, [self[f] for f in names]) for title, names in PROXY_GROUPS]


class InstanceForm(forms.ModelForm):
    class Meta:
        model = Instance
        formfield_callback = _formfield
        fields = ["name", "web", "web_prefix_mode", "sip_transport", "sip_host", "sip_port", "sip_tls_fingerprint",
                  "sip_domains", "rtp_only", "media_sources", "xmpp", "xmpp_domains", "provisioning", "proxies"]
        widgets = {"sip_domains": forms.Textarea(attrs={"rows": 2}), "xmpp_domains": forms.Textarea(attrs={"rows": 2}),
                   "media_sources": forms.Textarea(attrs={"rows": 2})}


class DeviceForm(forms.ModelForm):
    class Meta:
        model = Device
        fields = ["mac", "label"]


class ApplicationForm(forms.ModelForm):
    class Meta:
        model = Application
        formfield_callback = _formfield
        fields = list(Application.FIELDS)
        labels = {"tls": "TLS on the server port", "verify_upstream": "Verify the upstream's certificate"}
