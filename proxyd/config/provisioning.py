"""`services.provisioning`: phone provisioning's modes, ports and URL key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxyd.config.reader import _fields, _Reader

PROVISIONING_MODES = ("encrypted", "https", "http_and_https", "off")


@dataclass(frozen=True)
class ProvisioningService:
    #: `encrypted` (`/p/<token>` only), `https` (`/p/<instance>/<mac>` over TLS), `http_and_https`, `off`
    mode: str = "encrypted"
    #: the provisioning TLS port
    https_port: int = 8884
    #: the plain HTTP port (mode http_and_https only)
    http_port: int = 8880
    #: base64 of 32 random bytes: the key of the encrypted device URLs (required in mode encrypted);
    #: changing it invalidates every URL made with the old one
    key: str | None = None


def _parse_provisioning(r: _Reader, raw: Any, p: str) -> ProvisioningService:
    v = r.obj(raw, p, _fields(ProvisioningService))
    prov = ProvisioningService(
        mode=r.field(v, p, ProvisioningService, "mode", lambda x, q: r.choice(x, q, PROVISIONING_MODES)),
        https_port=r.field(v, p, ProvisioningService, "https_port", r.port),
        http_port=r.field(v, p, ProvisioningService, "http_port", r.port),
        key=r.field(v, p, ProvisioningService, "key", lambda x, q: _prov_key(r, x, q)),
    )
    if prov.mode == "encrypted" and prov.key is None and not any(
        x.startswith(f"{p}.key:") for x in r.problems
    ):
        r.fail(f"{p}.key", "required when mode is encrypted (base64 of 32 random bytes)")
    return prov


def _prov_key(r: _Reader, v: Any, p: str) -> str | None:
    s = r.string(v, p, nullable=True)
    if s is None:
        return None
    import base64
    import binascii

    try:
        raw = base64.urlsafe_b64decode(s.encode()) if ("-" in s or "_" in s) else base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        r.fail(p, "expected base64")
        return None
    if len(raw) != 32:
        r.fail(p, f"expected 32 bytes of key material, got {len(raw)}")
        return None
    return s
