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

While an ACME order waits for TLS-ALPN-01 (RFC 8737), `alpn_challenges` (name -> context with the
challenge certificate) is not empty, and the listener reads each ClientHello before TLS starts
(proxyd/tls_hello.py): a hello naming such a name and offering only-for-validation `acme-tls/1`
gets the challenge context, every other client the listener's. The SNI callback cannot make
that choice: it does not see the ALPN offer, and OpenSSL picks the certificate before ALPN.
The bytes read are handed to the TLS protocol unchanged; outside an order no hello is read.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import logging
import ssl
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

from proxyd.tls_hello import NotHello, peek_hello

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
    service: str, handshake_timeout: float | None = None, gate: Gate | None = None,
    alpn_challenges: Mapping[str, ssl.SSLContext] | None = None, **kwargs: Any,
) -> asyncio.Server:
    """`loop.create_server(factory, host, port, ssl=ctx, **kwargs)`, with failed handshakes logged.

    `handshake_timeout`: seconds a client has to complete its handshake (None: asyncio's 60 s).
    `gate`: asked on accept, before the handshake, whether this client may hold one more connection.
    `alpn_challenges`: the live TLS-ALPN-01 contexts by server name (see the module docstring)."""
    loop = asyncio.get_running_loop()
    tls_protocol = _protocol_class(loop)

    def tls(app: asyncio.BaseProtocol, context: ssl.SSLContext) -> Any:
        waiter = loop.create_future()
        proto = tls_protocol(loop, app, context, waiter, server_side=True, ssl_handshake_timeout=handshake_timeout)
        proto.gate = gate
        waiter.add_done_callback(lambda w: _report(w, proto, service))
        return proto

    def choose(hello: bytes) -> Any:
        try:
            seen = peek_hello(hello)
        except NotHello:
            seen = None  # OpenSSL refuses it with its usual reason
        challenge = alpn_challenges.get(seen.server_name or "") if seen and alpn_challenges else None
        if challenge is not None and seen is not None and ACME_TLS_1 in seen.alpn:
            log.info("event=acme_tls_alpn_validation service=%s name=%s", service, seen.server_name)
            return tls(asyncio.Protocol(), challenge)  # the validator only looks at the certificate
        return tls(factory(), ctx)

    def accept() -> asyncio.BaseProtocol:
        if alpn_challenges:
            return _HelloFirst(choose, gate, handshake_timeout or 60.0)
        return tls(factory(), ctx)

    return await loop.create_server(accept, host, port, **kwargs)


ACME_TLS_1 = "acme-tls/1"


class _HelloFirst(asyncio.Protocol):
    """Reads a connection's ClientHello (bounded in size and time), then hands the connection and
    the bytes read to the TLS protocol `choose(hello)` makes."""

    def __init__(self, choose: Callable[[bytes], Any], gate: Gate | None, timeout: float):
        self.choose, self.gate, self.timeout = choose, gate, timeout
        self.buf = b""
        self.admitted = False
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t = cast(asyncio.Transport, transport)  # TCP (uvloop's is no asyncio.Transport subclass)
        self.peer = str((t.get_extra_info("peername") or ("",))[0])
        if self.gate is not None:
            self.admitted = self.gate.admit(self.peer)
            if not self.admitted:
                t.abort()
                return
        self.timer = asyncio.get_running_loop().call_later(self.timeout, t.abort)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        try:
            if peek_hello(self.buf) is None:
                return
        except NotHello:
            pass
        self._hand_over()

    def _hand_over(self) -> None:
        assert self.transport is not None
        if self.timer is not None:
            self.timer.cancel()
        proto = self.choose(self.buf)
        proto.admitted = self.admitted  # counted once, released by the TLS protocol from now on
        self.admitted = False
        self.transport.set_protocol(proto)
        proto.connection_made(self.transport)
        data = memoryview(self.buf)
        while data:
            room = proto.get_buffer(len(data))
            n = min(len(room), len(data))
            room[:n] = data[:n]
            proto.buffer_updated(n)
            data = data[n:]

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.admitted and self.gate is not None:
            self.gate.release(self.peer)
            self.admitted = False


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
                if self.gate is not None and not self.admitted:  # admitted: by _HelloFirst already
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
