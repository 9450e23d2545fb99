"""`services.sip`: the SIP relay's phone-facing listeners."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxyd.config.reader import _fields, _Reader


@dataclass(frozen=True)
class SipService:
    #: `tls` (phones connect over TLS on `tls_port`), `udp` (UDP and TCP on `udp_port`), `off`
    mode: str = "tls"
    #: the phone-facing UDP and TCP port in mode udp
    udp_port: int = 5060
    #: the phone-facing TLS port in mode tls
    tls_port: int = 5061
    #: requests per second one source may send before it is blocked for a while (pike); 0: no limit
    rate_limit: int = 300
    #: the address the backend side binds to (the UDP socket and TCP/TLS listeners the PBXs talk to)
    #: and names in its Via, Record-Route and Path towards them; null: the bind address
    backend_bind_address: str | None = None


def _parse_sip(r: _Reader, raw: Any, p: str) -> SipService:
    s = r.obj(raw, p, _fields(SipService))
    return SipService(
        mode=r.field(s, p, SipService, "mode", lambda v, q: r.choice(v, q, ("tls", "udp", "off"))),
        udp_port=r.field(s, p, SipService, "udp_port", r.port),
        tls_port=r.field(s, p, SipService, "tls_port", r.port),
        rate_limit=r.field(s, p, SipService, "rate_limit", lambda v, q: r.integer(v, q, 0, 1_000_000)),
        backend_bind_address=r.field(s, p, SipService, "backend_bind_address", lambda v, q: r.ip(v, q, nullable=True)),
    )
