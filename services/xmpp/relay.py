"""One XMPP client connection: peek a bounded prefix, route it, then relay bytes untouched.

The client side is an asyncio Protocol. Until routed it buffers at most the peek limit (the
stream header on 5222, the ClientHello on 5223) and nothing else; once the backend is
connected the buffer is replayed and dropped, and every later chunk is written straight
through. Backpressure: when one transport's write buffer is full, reading from the other side
pauses until it drains. TLS is never terminated here: after the prefix we see only ciphertext.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

from services.xmpp.client_hello import Hello, peek_client_hello
from services.xmpp.proxy_protocol import v2_header
from services.xmpp.routes import Route, RouteTable
from services.xmpp.stream_header import NEED_MORE, Header, Refusal, peek_stream_header


class Owner(Protocol):
    """What a session needs of the service that accepted it (`service.XmppService`): written out
    here so that the per-connection code does not import the service that imports it."""

    @property
    def ctx(self) -> Any: ...
    @property
    def routes(self) -> RouteTable: ...

    def session_started(self, session: Session, route: Route) -> None: ...
    def session_ended(self, session: Session, route: Route) -> None: ...
    def refused(self, reason: str, session: Session, fields: dict[str, Any]) -> None: ...
    def count_bytes(self, session: Session, direction: str, data: bytes) -> None: ...


class Listener(Protocol):
    """The listening socket a session came in on (`service.Listener`)."""

    @property
    def service(self) -> Owner: ...
    @property
    def kind(self) -> str: ...
    @property
    def sessions(self) -> set[Session]: ...

PEEK_TIMEOUT = 5.0
CONNECT_TIMEOUT = 10.0
STREAMS_NS = "urn:ietf:params:xml:ns:xmpp-streams"


def host_unknown_reply(header: Header) -> bytes:
    """Our side of a stream that is refused at once: header, <host-unknown/>, close."""
    ns = header.default_ns if header.default_ns in ("jabber:client", "jabber:server") else "jabber:client"
    return (
        "<?xml version='1.0'?>"
        f"<stream:stream xmlns='{ns}' xmlns:stream='http://etherx.jabber.org/streams'"
        f" id='{secrets.token_hex(8)}' version='1.0'>"
        f"<stream:error><host-unknown xmlns='{STREAMS_NS}'/></stream:error></stream:stream>"
    ).encode()


class Session(asyncio.Protocol):
    """The client half; owns the upstream half once routed."""

    def __init__(self, listener: Listener):
        self.listener = listener
        self.client: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.route: Route | None = None
        self.buf = b""
        self.peer: tuple[str, int] = ("", 0)
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.eof_client = self.eof_backend = False
        self.opened = time.monotonic()  # for the session's end event: duration and bytes each way
        self.bytes_up = self.bytes_down = 0

    # -------------------------------------------------------------- client side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses
        peer = self.client.get_extra_info("peername") or ("", 0)
        self.peer = (str(peer[0]), int(peer[1]))
        self.listener.sessions.add(self)
        if not self.listener.service.ctx.access.allowed(self.peer[0], "xmpp"):
            self.refuse("source_not_allowed")
            return
        self._timer = asyncio.get_running_loop().call_later(PEEK_TIMEOUT, self.refuse, "timeout")

    def data_received(self, data: bytes) -> None:
        if self.upstream is not None:
            self.upstream.write(data)
            self.listener.service.count_bytes(self, "client_to_backend", data)
            return
        if self._task is not None or self._closed:
            return  # reading is paused while connecting; a stray chunk after refusal is dropped
        self.buf += data
        if self.listener.kind == "starttls":
            self._peeked_header(peek_stream_header(self.buf))
        else:
            self._peeked_hello(peek_client_hello(self.buf))

    def _peeked_header(self, result: object) -> None:
        if result is NEED_MORE:
            return
        if isinstance(result, Refusal):
            self.refuse(result.reason)
            return
        assert isinstance(result, Header)
        route = self.listener.service.routes.by_domain(result.to)
        if route is None:
            assert self.client is not None
            self.client.write(host_unknown_reply(result))
            self.refuse("unknown_domain", domain=result.to)
            return
        self._connect(route)

    def _peeked_hello(self, result: object) -> None:
        if result is NEED_MORE:
            return
        if isinstance(result, Refusal):
            self.refuse(result.reason)
            return
        assert isinstance(result, Hello)
        routes = self.listener.service.routes
        route = routes.by_domain(result.sni) if result.sni else routes.default
        if route is None:
            self.refuse("unknown_domain" if result.sni else "no_sni", domain=result.sni)
            return
        self._connect(route)

    def _connect(self, route: Route) -> None:
        assert self.client is not None
        if self._timer is not None:
            self._timer.cancel()
        self.route = route
        self.client.pause_reading()
        self._task = asyncio.get_running_loop().create_task(self._open_upstream(route))

    async def _open_upstream(self, route: Route) -> None:
        loop = asyncio.get_running_loop()
        host, port = (route.host, route.port) if self.listener.kind == "starttls" else (
            route.direct_host, route.direct_port)
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: _Upstream(self), host, port), CONNECT_TIMEOUT)
        except (TimeoutError, OSError) as exc:
            self.refuse("backend_unreachable", instance=route.instance, error=type(exc).__name__)
            return
        if self._closed or self.client is None:
            transport.close()
            return
        self.upstream = transport
        if route.proxy_protocol:
            sock = self.client.get_extra_info("sockname") or ("0.0.0.0", 0)
            transport.write(v2_header(self.peer, (str(sock[0]), int(sock[1]))))
        self.listener.service.session_started(self, route)
        transport.write(self.buf)
        self.listener.service.count_bytes(self, "client_to_backend", self.buf)
        self.buf = b""
        self.client.resume_reading()

    def refuse(self, reason: str, **fields: Any) -> None:
        self.listener.service.refused(reason, self, fields)
        self.close()

    def eof_received(self) -> bool:
        """Half-close: pass the client's FIN on; close once both sides are done."""
        self.eof_client = True
        if self.upstream is None or self.eof_backend or not self.upstream.can_write_eof():
            self.close()  # write buffers are flushed before the sockets close
            return False
        self.upstream.write_eof()
        return True

    def backend_eof(self) -> bool:
        self.eof_backend = True
        if self.client is None or self.eof_client or not self.client.can_write_eof():
            self.close()
            return False
        self.client.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        for t in (self.client, self.upstream):
            if t is not None:
                t.close()
        self.listener.sessions.discard(self)
        if self.upstream is not None and self.route is not None:
            self.listener.service.session_ended(self, self.route)

    def abort(self) -> None:
        for t in (self.client, self.upstream):
            if t is not None:
                t.abort()
        self.close()

    # -------------------------------------------------------------- backpressure
    def pause_writing(self) -> None:  # the client cannot take more: stop reading the backend
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and not self._closed:
            self.upstream.resume_reading()


class _Upstream(asyncio.Protocol):
    """The backend half: everything goes back to the client untouched."""

    def __init__(self, session: Session):
        self.session = session
        self.transport: asyncio.Transport | None = None
        self.count: Callable[[Session, str, bytes], None] = session.listener.service.count_bytes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        client = self.session.client
        if client is not None and not self.session._closed:
            client.write(data)
            self.count(self.session, "backend_to_client", data)

    def eof_received(self) -> bool:
        return self.session.backend_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.close()

    def pause_writing(self) -> None:  # the backend cannot take more: stop reading the client
        if self.session.client is not None:
            self.session.client.pause_reading()

    def resume_writing(self) -> None:
        if self.session.client is not None and not self.session._closed:
            self.session.client.resume_reading()
