"""`services.xmpp`: the XMPP passthrough's listeners."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxyd.config.reader import _fields, _Reader


@dataclass(frozen=True)
class XmppService:
    #: pass XMPP through to the instances' servers
    enabled: bool = True
    #: the client port (STARTTLS streams, routed by the stream header's `to`)
    port: int = 5222
    #: the XEP-0368 Direct TLS port (routed by SNI)
    direct_tls_port: int = 5223


def _parse_xmpp(r: _Reader, raw: Any, p: str) -> XmppService:
    x = r.obj(raw, p, _fields(XmppService))
    return XmppService(
        enabled=r.field(x, p, XmppService, "enabled", r.boolean),
        port=r.field(x, p, XmppService, "port", r.port),
        direct_tls_port=r.field(x, p, XmppService, "direct_tls_port", r.port),
    )
