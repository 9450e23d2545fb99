"""Forms of the proxy page's operator panels: backup, restore, DNS record."""

from __future__ import annotations

import base64

from django import forms

from manager.proxies.forms import _formfield
from manager.proxies.models import DnsRecord
from proxyd.backup import MIN_PASSPHRASE


class BackupForm(forms.Form):
    passphrase = forms.CharField(widget=forms.PasswordInput, min_length=MIN_PASSPHRASE, max_length=1024, strip=False,
                                 help_text="Needed to restore; it is not stored anywhere.")
    passphrase2 = forms.CharField(label="Repeat passphrase", widget=forms.PasswordInput, strip=False, max_length=1024)

    def clean(self):  # type: ignore[no-untyped-def]
        data = super().clean()
        if data.get("passphrase") and data.get("passphrase") != data.get("passphrase2"):
            self.add_error("passphrase2", "The passphrases differ.")
        return data


class RestoreForm(forms.Form):
    """Step one of a restore from a file: the upload. The passphrase is asked on the confirmation page."""

    file = forms.FileField(label="Backup file")


class DnsRecordForm(forms.ModelForm):
    credentials = forms.CharField(
        label="Credentials", required=False, strip=True, widget=forms.PasswordInput(render_value=False),
        help_text="RFC 2136: the TSIG secret (base64). Cloudflare: an API token scoped to the zone (DNS:Edit). "
                  "Stored encrypted, never shown again; leave blank to keep the stored one.")

    class Meta:
        model = DnsRecord
        formfield_callback = _formfield
        fields = ["name", "zone", "provider", "server", "port", "key_name", "algorithm", "api_url"]

    def __init__(self, *args, account_allowed: bool = True, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.account_allowed = account_allowed
        if not account_allowed:  # where the credentials go is the DNS account's: admins only
            for name in (*DnsRecord.ACCOUNT_FIELDS, "credentials"):
                self.fields[name].disabled = True
            self.fields["credentials"].help_text = "Stored encrypted; only an admin can change the DNS account."

    def clean(self):  # type: ignore[no-untyped-def]
        data = super().clean()
        if not self.account_allowed:
            if not self.instance.credentials_enc:
                self.add_error(None, "A new DNS record needs the DNS account's credentials: only an admin "
                                     "can set them.")
            return data
        if data.get("credentials") and data.get("provider") == "rfc2136":
            try:
                base64.b64decode(data["credentials"], validate=True)
            except ValueError:
                self.add_error("credentials", "A TSIG secret is base64, as in BIND's key statement.")
                return data
        if data.get("credentials"):
            self.instance.credentials = data["credentials"]
        elif not self.instance.credentials_enc:
            self.add_error("credentials", "Required.")
        return data
