"""`tls`: the certificate of every TLS listener (self-signed, uploaded or ACME)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from proxyd.config.reader import _fields, _Reader
from proxyd.config.values import _is_ip

EMAIL_RE = re.compile(r"^[^@\s<>,;]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")

#: key types for the self-signed certificate (the first is the default); many deployed phone
#: firmwares provision and register over RSA only
TLS_KEY_TYPES = ("ecdsa-p256", "rsa-2048", "rsa-3072")
TLS_MODES = ("self-signed", "uploaded", "acme")
ACME_CHALLENGES = ("http-01", "tls-alpn-01", "dns-01")


@dataclass(frozen=True)
class TlsConfig:
    #: the certificate chain (PEM) of every TLS listener; null with `key_pem` null: a self-signed
    #: certificate for `proxy.fqdn`, made once into the state dir
    certificate_pem: str | None = None
    #: the private key (PEM) matching `certificate_pem`; give both or neither
    key_pem: str | None = None
    #: the self-signed certificate's key, `ecdsa-p256`, `rsa-2048` or `rsa-3072` (many phone firmwares
    #: need RSA); used when no pair is configured; a change makes a new one, new handshakes get it at once
    key_type: str = TLS_KEY_TYPES[0]
    #: `self-signed` (made once for `proxy.fqdn`), `uploaded` (`certificate_pem` + `key_pem`), or
    #: `acme` (issued and renewed by proxyd from `acme_directory`; the key never leaves the proxy);
    #: omitted with a pair given: `uploaded`
    mode: str = TLS_MODES[0]
    #: mode acme: the CA's ACME directory URL (RFC 8555 section 7.1.1)
    acme_directory: str | None = None
    #: mode acme: the account's contact e-mail (the CA writes to it before a certificate expires)
    acme_email: str | None = None
    #: mode acme: further DNS names the certificate covers besides `proxy.fqdn`
    acme_names: tuple[str, ...] = ()
    #: mode acme: the plain-HTTP port the HTTP-01 challenge is answered on, only while an order is
    #: in flight (CAs validate on 80; only /.well-known/acme-challenge/ is answered there)
    acme_http_port: int = 80
    #: mode acme: a CA bundle file (PEM) that verifies the directory's HTTPS; null: the system's
    acme_ca_bundle: str | None = None
    #: mode acme: how the CA checks that the proxy owns the names: `http-01` (a token on
    #: `acme_http_port`), `tls-alpn-01` (RFC 8737, on the HTTPS port `services.web.port`) or
    #: `dns-01` (a TXT record the manager sets through the proxy's DNS account: managed proxies only)
    acme_challenge: str = ACME_CHALLENGES[0]


def _parse_tls(r: _Reader, raw: Any) -> TlsConfig | None:
    if raw is None:
        return TlsConfig()
    d = r.obj(raw, "tls", _fields(TlsConfig))
    cert = r.field(d, "tls", TlsConfig, "certificate_pem", lambda v, p: r.string(v, p, nullable=True))
    key = r.field(d, "tls", TlsConfig, "key_pem", lambda v, p: r.string(v, p, nullable=True))
    kind = r.field(d, "tls", TlsConfig, "key_type", lambda v, p: r.choice(v, p, TLS_KEY_TYPES))
    if isinstance(d, dict) and "mode" not in d and cert is not None:
        d = {**d, "mode": "uploaded"}  # v1 configs said `uploaded` by giving the pair
    mode = r.field(d, "tls", TlsConfig, "mode", lambda v, p: r.choice(v, p, TLS_MODES))
    directory = r.field(d, "tls", TlsConfig, "acme_directory",
                        lambda v, p: r.url(v, p, schemes=("https",), nullable=True))
    email = r.field(d, "tls", TlsConfig, "acme_email", lambda v, p: r.string(v, p, nullable=True))
    names = r.field(d, "tls", TlsConfig, "acme_names", lambda v, p: r.str_list(v, p, r.dns_name))
    http_port = r.field(d, "tls", TlsConfig, "acme_http_port", r.port)
    bundle = r.field(d, "tls", TlsConfig, "acme_ca_bundle", lambda v, p: r.string(v, p, nullable=True))
    challenge = r.field(d, "tls", TlsConfig, "acme_challenge", lambda v, p: r.choice(v, p, ACME_CHALLENGES))
    if kind is None or mode is None or challenge is None:
        return None
    if (cert is None) != (key is None):
        r.fail("tls", "certificate_pem and key_pem go together: give both or neither")
        return None
    if mode == "uploaded" and cert is None:
        r.fail("tls.certificate_pem", "mode uploaded needs certificate_pem and key_pem")
        return None
    if mode != "uploaded" and cert is not None:
        r.fail("tls.mode", f"mode {mode} makes its own certificate: give no certificate_pem/key_pem")
        return None
    if mode == "acme" and directory is None:
        if isinstance(d, dict) and d.get("acme_directory") is None:  # a given but refused URL has its own error
            r.fail("tls.acme_directory", "mode acme needs the CA's directory URL")
        return None
    if email is not None and not EMAIL_RE.match(email):
        r.fail("tls.acme_email", f"expected an e-mail address, got {email!r}")
        return None
    if any(_is_ip(n) for n in names):
        r.fail("tls.acme_names", "ACME certificates are for DNS names, not IP addresses")
        return None
    if cert is not None and key is not None:
        from proxyd.tls import check_pair  # cryptography import only when a cert is given

        problem = check_pair(cert, key)
        if problem:
            r.fail("tls.certificate_pem", problem)
            return None
    return TlsConfig(cert, key, kind, mode, directory, email, tuple(names or ()), http_port or 80, bundle, challenge)
