"""TLS listeners that say why a client's handshake failed.

`loop.create_server(ssl=...)` drops a failed handshake without a word: asyncio and uvloop treat
`ssl.SSLError` as an OSError, log it only in debug mode, and the service's protocol never hears
of the connection. A phone whose firmware offers only TLS 1.0, or no suite the certificate's key
can serve, would just fail with nothing in the log.

So the listener builds the TLS protocol itself, exactly as `create_server(ssl=...)` does inside
(the loop's own `SSLProtocol` around the service's protocol), only with a waiter: the future
that create_server leaves out and that tells how the handshake ended. A failure is logged with
the client and OpenSSL's reason. (`loop.start_tls()` on an accepted plain connection would be
the public way, but uvloop delivers the first bytes to the plain protocol before a task could
call it, and the ClientHello is lost.)
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import logging
import ssl
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("proxyd.tls")

#: what an admin can do about the usual refusals (OpenSSL reason -> hint)
HINTS = {
    "UNSUPPORTED_PROTOCOL": "the client offers only TLS versions below 1.2",
    "NO_SHARED_CIPHER": "the client offers no ECDHE+AEAD suite for this certificate's key type (tls.key_type)",
    "NO_SUITABLE_SIGNATURE_ALGORITHM": "the client cannot verify this certificate's key type (tls.key_type)",
    "HTTP_REQUEST": "plain HTTP sent to a TLS port",
    "WRONG_VERSION_NUMBER": "not TLS, or a TLS version below 1.2",
    "TLSV1_ALERT_UNKNOWN_CA": "the client does not trust this certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the client does not trust this certificate",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the client does not accept this certificate",
}


async def create_tls_server(
    factory: Callable[[], asyncio.BaseProtocol], host: str, port: int, ctx: ssl.SSLContext, *,
    service: str, handshake_timeout: float | None = None, gate: Gate | None = None, **kwargs: Any,
) -> asyncio.Server:
    """`loop.create_server(factory, host, port, ssl=ctx, **kwargs)`, with failed handshakes logged.

    `handshake_timeout`: seconds a client has to complete its handshake (None: asyncio's 60 s).
    `gate`: asked on accept, before the handshake, whether this client may hold one more connection."""
    loop = asyncio.get_running_loop()
    tls_protocol = _protocol_class(loop)

    def accept() -> asyncio.BaseProtocol:
        waiter = loop.create_future()
        proto = tls_protocol(loop, factory(), ctx, waiter, server_side=True,
                             ssl_handshake_timeout=handshake_timeout)
        proto.gate = gate
        waiter.add_done_callback(lambda w: _report(w, proto, service))
        return proto

    return await loop.create_server(accept, host, port, **kwargs)


def _report(waiter: asyncio.Future[None], proto: Any, service: str) -> None:
    exc = None if waiter.cancelled() else waiter.exception()
    if exc is None:
        return
    client = (getattr(proto, "peer", None) or ("?",))[0]
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or type(exc).__name__
        log.warning("event=tls_handshake_failed service=%s client=%s reason=%s hint=%r detail=%r",
                    service, client, reason.lower(), HINTS.get(reason, "-"), str(exc))
    else:  # the client left, or said nothing until the handshake timeout
        log.info("event=tls_handshake_abandoned service=%s client=%s reason=%s", service, client, type(exc).__name__)


class Gate(Protocol):
    """Counts connections per client address (services/http/limits.py)."""

    def admit(self, address: str) -> bool: ...
    def release(self, address: str) -> None: ...


_CLASSES: dict[type, type] = {}


def _protocol_class(loop: asyncio.AbstractEventLoop) -> type:
    """The loop's own SSLProtocol (uvloop's is much cheaper), remembering the client's address."""
    base: type = asyncio.sslproto.SSLProtocol
    try:
        import uvloop

        if isinstance(loop, uvloop.Loop):
            base = uvloop.loop.SSLProtocol  # type: ignore[attr-defined]  # not in uvloop's stubs
    except ImportError:
        pass
    if base not in _CLASSES:

        class Remembering(base):
            peer: tuple[Any, ...] | None = None
            gate: Gate | None = None
            admitted = False

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.peer = transport.get_extra_info("peername")
                super().connection_made(transport)
                if self.gate is not None:
                    self.admitted = self.gate.admit(str((self.peer or ("",))[0]))
                    if not self.admitted:
                        transport.abort()  # type: ignore[attr-defined]  # a TCP transport

            def connection_lost(self, exc: Exception | None) -> None:
                if self.admitted:
                    self.admitted = False
                    self.gate.release(str((self.peer or ("",))[0]))  # type: ignore[union-attr]
                super().connection_lost(exc)

        _CLASSES[base] = Remembering
    return _CLASSES[base]
