"""The SIP edge relay service: asyncio transports around the sans-IO `Relay`.

Phone side: UDP and TCP on one port (mode udp) or a TLS listener (mode tls). Backend side: a UDP
socket on an ephemeral port of the bind address (instances with `sip` transport udp), TCP/TLS
connections opened on first use (transport tcp/tls), and listeners for connections PBXs open.
SDP bodies go through the media relay (`ctx.lookup("media")`) or `PassThroughMedia`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import resource
import secrets
import socket
import ssl
import time
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from time import monotonic as _monotonic
from typing import Any

from proxyd.config import ProxyConfig
from proxyd.service import Service, ServiceError
from proxyd.tls import write_private
from proxyd.tls_accept import create_tls_server
from services.media_api import MediaError, MediaRelay, PassThroughMedia, Side
from services.sip.flow import Flow, FlowSigner
from services.sip.framing import StreamFramer
from services.sip.lru import Lru
from services.sip.message import SipError
from services.sip.protect import RateLimiter
from services.sip.proxy import RETRY_AFTER, Local, MediaStep, Relay, Send, Target, is_ip
from services.sip.reasonlog import ReasonLog
from services.sip.scan import SCANNER

FLOW_KEY_FILE = "sip-flow.key"  # in certs/: 64 random bytes, hex
#: Towards a TCP/TLS PBX: how long a connect (with the TLS handshake) may take, and how many
#: messages wait for a connection being made. A target whose connect failed, or whose
#: certificate did not match its pin, gets no new attempt for RETRY_AFTER seconds: requests to it
#: get a 503 from the relay, anything else is dropped and counted; the PBX is not hammered.
CONNECT_TIMEOUT = 5.0
QUEUE_MAX = 256
#: A phone's TCP/TLS connection that has not sent one whole SIP message by then is closed: a
#: held, silent connection costs a descriptor (keepalives alone do not keep it). Connections that
#: have carried a message stay open as long as the phone keeps them (registered phones idle
#: between keepalives).
FIRST_MESSAGE_TIMEOUT = 30.0
#: A phone's TLS handshake must be done within this (asyncio's default is 60 s): until then the
#: connection is no phone the first-message deadline can see, and a descriptor is held. It
#: counts against the per-address and total caps from the accept on (`tls_accept` gate).
TLS_HANDSHAKE_TIMEOUT = 10.0
#: A phone connection that has carried a message is closed after this long with no byte either
#: way (not even a keep-alive): a phone on TCP/TLS pings every 25-120 s (RFC 5626 §4.4.1) or
#: re-registers within its expiry (3,600 s is the common default and what PBXs grant at most);
#: a connection silent longer is gone at the far end (NAT binding lost, phone unplugged).
IDLE_TIMEOUT = 3660.0
#: Backend connections (ours to a PBX, a PBX's to us) idle this long are closed: the next message
#: opens a new one (a PBX reaches us on the listener our Record-Route/Path names).
BACKEND_IDLE_TIMEOUT = 300.0
#: CRLF keep-alives on a connection (RFC 5626 §4.4.1): answered at most once per
#: KEEPALIVE_INTERVAL (clients ping every 25-120 s; extra pings are absorbed, counted), and a
#: connection sending more than KEEPALIVE_MAX within KEEPALIVE_WINDOW is flooding and is closed
#: (main answered 244,402 pongs to 1 MB of CRLF and kept the connection).
KEEPALIVE_INTERVAL = 1.0
#: Phone TCP/TLS connections from one address, and in all: a phone keeps one (RFC 5626 flows),
#: an office's NAT a few dozen; the total stays below the process's file limit with a reserve
#: for PBX connections, media sockets and the admin side (closed at once beyond, logged).
MAX_CONNECTIONS_PER_ADDRESS = 64
CONNECTION_RESERVE = 1024
KEEPALIVE_WINDOW = 10.0
KEEPALIVE_MAX = 20
#: UDP source addresses whose Flow (and, on the backend side, the source check) is kept per
#: socket: the phones and PBXs sending now; a flood of spoofed sources evicts only the least
#: recently seen (`Lru`), which only costs a new Flow for its next datagram
UDP_FLOWS_MAX = 4096


@dataclass(frozen=True)
class SipView:
    mode: str
    bind: str
    udp_port: int
    tls_port: int
    fqdn: str
    domains: tuple[tuple[str, str, str, int], ...]
    rate_limit: int = 300
    #: (host, port) of a tls PBX -> the SHA-256 fingerprint its certificate must have
    pins: tuple[tuple[tuple[str, int], str], ...] = ()
    #: PBX targets (transport, host, port) of instances that refuse SRTP offers
    rtp_only: frozenset[tuple[str, str, int]] = frozenset()
    #: addresses the backend side takes datagrams and connections from: each instance's `sip`
    #: host and its `media_sources` networks; None when a `sip` host is a DNS name (its address
    #: can change under us: then every source is taken, as before)
    backend_sources: tuple[str, ...] | None = ()
    #: PBX target (transport, host, port) -> instance name (the call-end log line)
    instances: tuple[tuple[tuple[str, str, int], str], ...] = ()
    #: where the backend side binds (`services.sip.backend_bind_address`, else `bind`)
    back_bind: str = ""
    #: (host, port) of udp PBX targets that take TCP too (`sip_offers_tcp`)
    tcp_too: frozenset[tuple[str, int]] = frozenset()

    @property
    def backend_bind(self) -> str:
        return self.back_bind or self.bind


_PASS_THROUGH = PassThroughMedia()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, svc: SipService, side: str):
        self.svc, self.side = svc, side
        #: source address -> its Flow: a phone or PBX sends many datagrams from one address
        self.flows: Lru[tuple[Any, ...], Flow] = Lru(UDP_FLOWS_MAX)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        flow = self.flows.hit(addr)
        if flow is None:
            if self.side == "b" and not self.svc.backend_source(addr[0]):
                self.svc.dropped("backend_foreign_sources", "src=%s:%s transport=udp (no instance's address)",
                                 addr[0], addr[1])
                return
            flow = Flow(self.side, "udp", addr[0], addr[1])
            self.flows.put(addr, flow)
        self.svc.on_data(data, flow)

    def error_received(self, exc: Exception) -> None:  # an ICMP error for a datagram we sent
        self.svc.dropped("udp_errors", "side=%s error=%r", self.side, exc)


class _Stream(asyncio.Protocol):
    """One TCP/TLS connection, accepted (phones; PBXs calling back) or opened by us towards a PBX
    (`pool_key` set: writes wait in `queued` until the connection is made)."""

    def __init__(self, svc: SipService, side: str, transport_name: str,
                 pool_key: tuple[str, str, int] | None = None):
        self.svc, self.side, self.tname, self.pool_key = svc, side, transport_name, pool_key
        self.framer = StreamFramer()
        self.conn = next(svc.conn_ids)
        self.transport: asyncio.Transport | None = None
        self.flow: Flow | None = None
        self.queued: list[bytes] = []
        self.opened = self.last = _monotonic()  # `last`: the last byte either way (idle timeouts)
        self.spoke = False  # has sent a whole SIP message (a keepalive alone does not count)
        self.counted = False  # holds a place in `SipService.per_address`
        self.pings = 0  # keep-alives in the window that started at `pings_since`
        self.pings_since = self.ponged = -KEEPALIVE_INTERVAL

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment] # uvloop's SSL transport is no asyncio.Transport
        ip, port = transport.get_extra_info("peername")[:2]
        # TLS: the access list and the backend's sources are checked by the listener's gate, at accept
        if self.side == "p" and self.tname != "tls" and not self.svc.ctx.access.allowed(ip, "sip"):
            self.svc.dropped("refused_sources", "src=%s:%s transport=%s", ip, port, self.tname)
            transport.close()
            return
        if self.side == "b" and self.tname != "tls" and self.pool_key is None and not self.svc.backend_source(ip):
            self.svc.dropped("backend_foreign_sources", "src=%s:%s transport=%s (no instance's address)", ip, port,
                             self.tname)
            transport.close()
            return
        if self.side == "p" and self.tname != "tls":  # TLS: counted by the listener's gate, at accept
            if not self.svc.admit(ip):
                self.svc.refused_connection(ip, port, self.tname)
                transport.close()
                return
            self.counted = True
        key = self.pool_key  # set on connections we open to a PBX
        if key is not None and self.tname == "tls" and not self.svc.pbx_certificate_ok(key, transport):
            self.svc.rest(key, self)  # nothing goes to a PBX that is not the one configured
            transport.close()
            return
        self.flow = Flow(self.side, self.tname, ip, port, self.conn)
        self.svc.conns[self.conn] = self
        if self.queued:
            transport.write(b"".join(self.queued))  # type: ignore[attr-defined]
            self.queued = []

    def write(self, data: bytes) -> None:
        if self.transport is None:
            if len(self.queued) < QUEUE_MAX:
                self.queued.append(data)
            else:
                self.svc.dropped("backend_queue_drops", "target=%s queued=%d (the connection is not made yet)",
                                 ":".join(map(str, self.pool_key or ())), QUEUE_MAX)
                self.svc.unsent([data])
        else:
            self.last = _monotonic()
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        assert self.flow is not None and self.transport is not None
        self.last = _monotonic()
        try:
            messages = self.framer.feed(data)
        except SipError as exc:
            self.svc.dropped("framing_errors", "error=%r src=%s:%s (connection closed)", exc.reason, self.flow.ip,
                             self.flow.port)
            relay = self.svc.relay
            for action in relay.bad(exc, self.flow) if relay is not None else ():
                if isinstance(action, Send):
                    self.transport.write(action.data)  # close() sends it before the FIN
            self.transport.close()
            return
        if not self.spoke and any(m[:1] != b"\r" for m in messages):
            self.spoke = True
        for m in messages:
            if m[:1] == b"\r" and not self._keepalive():
                if self.transport.is_closing():
                    return
                continue
            self.svc.on_data(m, self.flow)

    def _keepalive(self) -> bool:
        """Whether this keep-alive is answered; a flood closes the connection."""
        assert self.flow is not None and self.transport is not None
        now = _monotonic()
        if now - self.pings_since > KEEPALIVE_WINDOW:
            self.pings_since, self.pings = now, 0
        self.pings += 1
        if self.pings > KEEPALIVE_MAX:
            self.svc.dropped("keepalive_floods_closed", "src=%s:%s keepalives=%d seconds=%g (connection closed)",
                             self.flow.ip, self.flow.port, self.pings, KEEPALIVE_WINDOW)
            self.transport.close()
            return False
        if now - self.ponged < KEEPALIVE_INTERVAL:
            self.svc.dropped("keepalives_absorbed", "src=%s:%s (one pong per %g s)", self.flow.ip, self.flow.port,
                             KEEPALIVE_INTERVAL)
            return False
        self.ponged = now
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.svc.conns.pop(self.conn, None)
        if self.counted and self.flow is not None:
            self.svc.release(self.flow.ip)
            self.counted = False
        if self.pool_key is not None and self.svc.out.get(self.pool_key) is self:
            del self.svc.out[self.pool_key]


class SipService(Service):
    name = "sip"
    order = 60  # after media

    def __init__(self, ctx: Any):
        super().__init__(ctx)
        self.view_: SipView | None = None
        self.relay: Relay | None = None
        self.phone_udp: asyncio.DatagramTransport | None = None
        self.back_udp: asyncio.DatagramTransport | None = None
        self.server: asyncio.Server | None = None
        #: backend-side listeners (TCP on the backend UDP port number, TLS on its own): PBXs that
        #: open a connection for a request towards a phone (Record-Route/Path name these ports)
        self.back_servers: dict[str, asyncio.Server] = {}
        self.conns: dict[int, _Stream] = {}
        #: our connections to PBXs by (transport, host, port), reused for every message to it
        self.out: dict[tuple[str, str, int], _Stream] = {}
        #: (transport, host, port) -> until when no new connection is tried (`RETRY_AFTER`)
        self.down: dict[tuple[str, str, int], float] = {}
        self.conn_ids = itertools.count(1)
        self.tasks: set[asyncio.Task[None]] = set()
        self.timer: asyncio.Task[None] | None = None
        self.counters_extra: dict[str, int] = {}
        self.reasons = ReasonLog(self.log)
        #: phone connections per source address, and the cap on all of them
        self.per_address: dict[str, int] = {}
        self.phone_connections = 0
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.max_connections = max(64, (soft if soft != resource.RLIM_INFINITY else 65536) - CONNECTION_RESERVE)
        self._backend_nets: tuple[IPv4Network | IPv6Network, ...] | None = ()
        self._media_seen: object = None
        self._media_impl: MediaRelay = _PASS_THROUGH

    @classmethod
    def view(cls, cfg: ProxyConfig) -> SipView | None:
        s = cfg.services.sip
        if s.mode == "off" or not cfg.proxy.enabled:
            return None
        domains = tuple(
            (d.lower(), i.sip.transport, i.sip.host, i.sip.port)
            for i in cfg.instances if i.sip is not None for d in i.sip_domains
        )
        pins = tuple(((i.sip.host, i.sip.port), i.sip_tls_fingerprint)
                     for i in cfg.instances if i.sip is not None and i.sip_tls_fingerprint)
        rtp_only = frozenset((i.sip.transport, i.sip.host, i.sip.port)
                             for i in cfg.instances if i.sip is not None and i.rtp_only)
        hosts = [i.sip.host for i in cfg.instances if i.sip is not None]
        sources: tuple[str, ...] | None = tuple(
            dict.fromkeys([*hosts, *(n for i in cfg.instances if i.sip is not None for n in i.media_sources)]))
        if not all(is_ip(h) for h in hosts):
            sources = None
        return SipView(s.mode, cfg.bind_address, s.udp_port, s.tls_port, cfg.proxy.fqdn, domains, s.rate_limit,
                       pins, rtp_only, sources,
                       tuple(((i.sip.transport, i.sip.host, i.sip.port), i.name) for i in cfg.instances if i.sip),
                       s.backend_bind_address or "",
                       frozenset((i.sip.host, i.sip.port) for i in cfg.instances if i.sip and i.sip_offers_tcp))

    async def start(self, view: SipView) -> None:
        loop = asyncio.get_running_loop()
        self.view_ = view
        try:
            back = view.backend_bind
            self.back_udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self, "b"), local_addr=(back, 0))
            if view.mode == "udp":
                self.phone_udp, _ = await loop.create_datagram_endpoint(
                    lambda: _Udp(self, "p"), local_addr=(view.bind, view.udp_port))
                _big_buffer(self.phone_udp)
                # and TCP on the same port (RFC 3261 §18: every element does both; a phone must
                # switch to TCP for a request larger than 1,300 bytes)
                self.server = await loop.create_server(lambda: _Stream(self, "p", "tcp"), view.bind, view.udp_port)
            else:
                self.server = await create_tls_server(
                    lambda: _Stream(self, "p", "tls"), view.bind, view.tls_port, self.ctx.certs.server_context(),
                    service="sip", handshake_timeout=TLS_HANDSHAKE_TIMEOUT, gate=_TlsGate(self))
            _big_buffer(self.back_udp)
            back_port = self.back_udp.get_extra_info("sockname")[1]
            try:
                self.back_servers["tcp"] = await loop.create_server(
                    lambda: _Stream(self, "b", "tcp"), back, back_port)
            except OSError:  # the number is taken for TCP: any free one
                self.back_servers["tcp"] = await loop.create_server(lambda: _Stream(self, "b", "tcp"), back, 0)
            if _needs_tls(view):  # only then: the certificate store is in use
                self.back_servers["tls"] = await create_tls_server(
                    lambda: _Stream(self, "b", "tls"), back, 0, self.ctx.certs.server_context(), service="sip",
                    handshake_timeout=TLS_HANDSHAKE_TIMEOUT, gate=_BackendTlsGate(self))
        except OSError as exc:
            await self.stop(0)
            where = view.bind if view.backend_bind == view.bind else f"{view.bind} (backend side {view.backend_bind})"
            raise ServiceError(f"sip: cannot bind {where}: {exc} (is another SIP server running?)") from exc
        self.relay = self._make_relay(view)
        self._backend_nets = _networks(view.backend_sources)
        self.timer = asyncio.create_task(self._tick())
        self.log.info("event=sip_started mode=%s bind=%s scanner=%s", view.mode, view.bind, SCANNER)
        if SCANNER != "c":
            self.log.warning("event=sip_slow_scanner reason=services.sip._cscan_not_built fix='make venv'")

    def _make_relay(self, view: SipView) -> Relay:
        assert self.back_udp is not None
        host = view.bind if view.bind not in ("0.0.0.0", "::") else view.fqdn
        if view.mode == "udp":
            phone = {"udp": Local("udp", host, view.udp_port), "tcp": Local("tcp", host, view.udp_port)}
        else:
            phone = {"tls": Local("tls", host, view.tls_port)}
        back_host = view.backend_bind if view.backend_bind not in ("0.0.0.0", "::") else host
        back = {"udp": Local("udp", back_host, self.back_udp.get_extra_info("sockname")[1])}
        for t, server in self.back_servers.items():
            back[t] = Local(t, back_host, server.sockets[0].getsockname()[1])
        relay = Relay(_domains(view), phone, back, frozenset({view.fqdn}), _limiter(view),
                      FlowSigner(self._flow_key()))
        relay.unavailable = self._resting
        relay.rtp_only = view.rtp_only
        relay.tcp_too = view.tcp_too
        relay.instances = dict(view.instances)
        return relay

    def _resting(self, flow: Flow) -> bool:
        """Whether no connection to this PBX flow is tried now (`RETRY_AFTER`)."""
        until = self.down.get((flow.transport, flow.ip, flow.port))
        return until is not None and _monotonic() < until

    def _flow_key(self) -> bytes:
        """The flow-token key, kept in the state dir (0600, with the other keys in certs/, so
        backups carry it): registrations made before a restart or a rebind keep working."""
        path = self.ctx.state.certs / FLOW_KEY_FILE
        try:
            key = bytes.fromhex(path.read_text().strip())
            if len(key) == 64:
                return key
            self.log.warning("event=sip_flow_key_replaced reason='wrong length' path=%s", path)
        except FileNotFoundError:
            pass
        except ValueError:
            self.log.warning("event=sip_flow_key_replaced reason='not hex' path=%s", path)
        key = secrets.token_bytes(64)  # AES-256-SIV
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, key.hex() + "\n")
        return key

    async def reconfigure(self, view: SipView) -> None:
        old = self.view_
        sockets = (view.mode, view.bind, view.backend_bind, view.udp_port, view.tls_port)
        same_sockets = old is not None and (old.mode, old.bind, old.backend_bind, old.udp_port, old.tls_port) == \
            sockets and _needs_tls(view) == ("tls" in self.back_servers)
        if old is not None and self.relay is not None and same_sockets:
            self.relay.domains = _domains(view)  # swap the route table, keep sockets and flows
            self.relay.rtp_only = view.rtp_only
            self.relay.tcp_too = view.tcp_too
            self.relay.instances = dict(view.instances)
            self._backend_nets = _networks(view.backend_sources)
            if self.back_udp is not None:
                proto = self.back_udp.get_protocol()
                if isinstance(proto, _Udp):
                    proto.flows.clear()  # a removed instance's address is checked again
            if view.pins != old.pins:  # connections checked against another pin: check again
                old_pins, new_pins = dict(old.pins), dict(view.pins)
                for key in {*self.out, *self.down}:
                    if key[0] == "tls" and old_pins.get(key[1:]) != new_pins.get(key[1:]):
                        self.down.pop(key, None)  # a corrected pin is tried at once
                        conn = self.out.pop(key, None)  # the next message opens a new one, checked:
                        if conn is not None:  # a TLS close takes a round trip, and takes no more writes
                            conn.close()
            if view.rate_limit != old.rate_limit:
                self.relay.limiter = _limiter(view)
            self.view_ = view
            return
        await self.stop(1.0)
        await self.start(view)

    async def stop(self, timeout: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        for t in (self.phone_udp, self.back_udp):
            if t is not None:
                t.close()
        for server in (self.server, *self.back_servers.values()):
            if server is not None:
                server.close()
        for c in list(self.conns.values()) + list(self.out.values()):
            c.close()
        self.phone_udp = self.back_udp = None
        self.server = None
        self.back_servers = {}
        self.out = {}
        self.down = {}

    # ---- data path ---------------------------------------------------------------------
    def relay_counter(self, name: str, n: int = 1) -> None:
        self.counters_extra[name] = self.counters_extra.get(name, 0) + n

    def dropped(self, reason: str, fmt: str, *args: object, n: int = 1) -> None:
        """Count a message or connection that goes nowhere and log why (per reason at most a
        line and a summary per interval: `ReasonLog`)."""
        self.relay_counter(reason, n)
        self.reasons.note(reason, _monotonic(), "event=sip_drop reason=%s " + fmt, reason, *args)

    def on_data(self, data: bytes, src: Flow) -> None:
        relay = self.relay
        if relay is None:
            return
        if src.side == "p" and src.transport == "udp" and not self.ctx.access.allowed(src.ip, "sip"):
            self.dropped("refused_sources", "src=%s:%s transport=udp", src.ip, src.port)
            return
        for action in relay.receive(data, src, _monotonic()):
            if isinstance(action, Send):
                self.send(action.flow, action.data, action.counted)
            elif self.media() is not _PASS_THROUGH:
                self._media(action)  # synchronous (`MediaRelay`): the call's messages keep their order
            else:  # no media relay: SDP unchanged, sent at once so a call's messages keep their order
                if action.op == "answer":
                    relay.dialogs.answered(action.call_id)
                self.send(action.flow, action.msg.serialize(), action.counted)
        if relay.released:
            self._release(relay.released)
            relay.released = []
        if relay.calls.ended:
            relay.log_call_ends()

    def send(self, flow: Flow, data: bytes, counted: bool = True) -> None:
        if flow.transport == "udp":
            t = self.phone_udp if flow.side == "p" else self.back_udp
            relay = self.relay
            if flow.side == "p" and counted and relay is not None and \
                    not relay.amp.allow(flow, len(data), data.startswith(b"SIP/2.0 1")):
                self.dropped("amplification_limited", "dst=%s:%s bytes=%d (over %d× what this unverified source "
                             "sent)", flow.ip, flow.port, len(data), relay.amp.factor)
                return
            if t is not None:
                t.sendto(data, flow[2:4])  # (ip, port)
                return
        elif flow.conn in self.conns:  # the connection the flow came over (a phone's TLS, a PBX's)
            self.conns[flow.conn].write(data)
            return
        elif flow.side == "b":
            stream = self._backend_stream(flow)
            if stream is not None:
                stream.write(data)
            else:
                self.dropped("backend_down_drops", "target=%s:%s:%s (resting after a failed connect)",
                             flow.transport, flow.ip, flow.port)
                self.unsent([data])
            return
        # a phone's connection that is gone, or a flow token minted under another mode
        self.dropped("unreachable_flows", "flow=%s:%s:%s:%s side=%s", flow.transport, flow.ip, flow.port, flow.conn,
                     flow.side)
        self.unsent([data], (flow.ip, flow.port) if flow.side == "p" else None)

    def _backend_stream(self, flow: Flow) -> _Stream | None:
        """The open (or opening) connection to a PBX; one per target, reused (RFC 3261 §18.1.1).
        None while the target is down (`RETRY_AFTER`)."""
        key = (flow.transport, flow.ip, flow.port)
        conn = self.out.get(key)
        if conn is None:
            until = self.down.get(key)
            if until is not None:
                if _monotonic() < until:
                    return None
                del self.down[key]
            conn = self.out[key] = _Stream(self, "b", flow.transport, key)
            task = asyncio.create_task(self._connect(conn, key))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return conn

    async def _connect(self, conn: _Stream, key: tuple[str, str, int]) -> None:
        transport, host, port = key
        try:
            await asyncio.wait_for(asyncio.get_running_loop().create_connection(
                lambda: conn, host, port, ssl=_backend_tls() if transport == "tls" else None), CONNECT_TIMEOUT)
        except OSError as exc:  # TimeoutError is one
            self.relay_counter("backend_connect_failed")
            self.log.warning("event=sip_backend_connect_failed target=%s:%s:%s error=%r retry_after=%s",
                             transport, host, port, exc if str(exc) else f"no connection in {CONNECT_TIMEOUT:g} s",
                             RETRY_AFTER)
            self.rest(key, conn)

    def admit(self, ip: str) -> bool:
        """Take a place for a phone connection from `ip`, if under both caps."""
        n = self.per_address.get(ip, 0)
        if n >= MAX_CONNECTIONS_PER_ADDRESS or self.phone_connections >= self.max_connections:
            return False
        self.per_address[ip] = n + 1
        self.phone_connections += 1
        return True

    def backend_source(self, ip: str) -> bool:
        """Whether the backend side takes a datagram or connection from `ip` (an instance's)."""
        nets = self._backend_nets
        return nets is None or any(_in(ip, n) for n in nets)

    def refused_connection(self, ip: str, port: object, transport: str) -> None:
        self.dropped("connections_refused", "src=%s:%s transport=%s (over %d from this address or %d in all)",
                     ip, port, transport, MAX_CONNECTIONS_PER_ADDRESS, self.max_connections)

    def release(self, ip: str) -> None:
        n = self.per_address.get(ip, 0) - 1
        if n > 0:
            self.per_address[ip] = n
        else:
            self.per_address.pop(ip, None)
        self.phone_connections -= 1

    def rest(self, key: tuple[str, str, int], conn: _Stream) -> None:
        """No new connection to this PBX for RETRY_AFTER: what waited for `conn` is dropped, and
        `conn` is out of use at once (a TLS close still takes its round trip)."""
        self.down[key] = _monotonic() + RETRY_AFTER
        if conn.queued:
            self.dropped("backend_down_drops", "target=%s:%s:%s messages=%d (the connection failed)", *key,
                         len(conn.queued), n=len(conn.queued))
            queued, conn.queued = conn.queued, []
            self.unsent(queued)
        if self.out.get(key) is conn:
            del self.out[key]

    def pbx_certificate_ok(self, key: tuple[str, str, int], transport: asyncio.BaseTransport) -> bool:
        """Whether the certificate a tls PBX presented on a connection we opened has the
        configured fingerprint (`instances[].sip_tls_fingerprint`); true when none is configured."""
        view = self.view_
        pin = dict(view.pins).get(key[1:]) if view is not None else None
        if pin is None:
            return True
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        got = hashlib.sha256(der).digest() if der else b""
        if hmac.compare_digest(got, bytes.fromhex(pin.replace(":", ""))):
            return True
        self.relay_counter("backend_certificate_mismatch")
        self.log.warning("event=sip_backend_certificate_mismatch target=%s:%s:%s expected=%s got=%s", *key, pin,
                         ":".join(f"{b:02X}" for b in got) or "none")
        return False

    def media(self) -> MediaRelay:
        m = self.ctx.lookup("media")
        if m is not self._media_seen:  # a Protocol isinstance check is slow: once per media service
            self._media_seen = m
            self._media_impl = m if isinstance(m, MediaRelay) else _PASS_THROUGH
        return self._media_impl

    def _media(self, step: MediaStep) -> None:
        side = Side.PHONE if step.side == "phone" else Side.INSTANCE
        try:
            if step.op == "offer":
                pbx = step.src if step.src.side == "b" else step.flow  # counted against its limit
                sdp = self.media().offer(step.call_id, step.from_tag, step.msg.body, side=side,
                                         source_ip=step.source_ip, instance_rtp_only=step.instance_rtp_only,
                                         instance=f"{pbx.ip}:{pbx.port}")
            else:
                sdp = self.media().answer(step.call_id, step.from_tag, step.to_tag, step.msg.body,
                                          side=side, source_ip=step.source_ip)
                if self.relay is not None:
                    self.relay.dialogs.answered(step.call_id)
        except MediaError as exc:
            self.relay_counter(f"media_errors_{exc.status}")
            extra = (f"Retry-After: {exc.retry_after}",) if exc.retry_after else ()
            refusal = self.relay.refuse(step, exc.status, exc.reason, extra) if self.relay is not None else []
            for send in refusal:  # the relay logs why it answers a request itself
                self.send(send.flow, send.data)
            if not refusal:  # a response (or an ACK) with SDP: nothing to answer, it goes nowhere
                self.reasons.note(f"media_{exc.status}", _monotonic(), "event=sip_drop reason=media status=%s "
                                  "error=%r call_id=%s side=%s src=%s", exc.status, exc.reason, step.call_id,
                                  step.side, step.source_ip)
            return
        except Exception:  # a bug in the media relay: this message is lost, the relay goes on
            self.relay_counter("media_step_failed")
            self.log.exception("event=sip_drop reason=media_step_failed call_id=%s op=%s", step.call_id, step.op)
            return
        step.msg.body = sdp
        self.send(step.flow, step.msg.serialize(), step.counted)

    def unsent(self, messages: list[bytes], phone: tuple[str, int] | None = None) -> None:
        """Messages that never left: an unanswered INVITE among them ends its dialog, and its media goes back."""
        if self.relay is not None:
            self._release([key for data in messages for key in self.relay.unsent(data, phone)])

    def _release(self, call_ids: list[str]) -> None:
        media = self.media()
        if media is _PASS_THROUGH:  # nothing held: no task per call
            return
        for cid in call_ids:
            try:
                media.delete(cid)  # ports stay bound as spares for the next call
            except Exception:  # one call's failure must not keep the others' ports
                self.log.exception("event=sip_media_delete_failed call_id=%s", cid)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            now = time.monotonic()
            self.reasons.flush(now)
            if self.relay is not None:
                self._release(self.relay.expire(now))
                self.relay.log_call_ends()
            self.close_idle(now)

    def close_idle(self, now: float) -> None:
        """Close phone connections that sent no whole message within FIRST_MESSAGE_TIMEOUT, phone
        connections idle for IDLE_TIMEOUT and backend ones idle for BACKEND_IDLE_TIMEOUT."""
        for conn in list({**self.conns, **{c.conn: c for c in self.out.values()}}.values()):
            flow = conn.flow
            where = (flow.ip, flow.port) if flow is not None else ("?", "?")
            if conn.side == "p" and not conn.spoke and now - conn.opened > FIRST_MESSAGE_TIMEOUT:
                self.dropped("silent_connections_closed", "src=%s:%s seconds=%g (no SIP message)", *where,
                             FIRST_MESSAGE_TIMEOUT)
            elif now - conn.last > (IDLE_TIMEOUT if conn.side == "p" else BACKEND_IDLE_TIMEOUT):
                self.dropped("idle_connections_closed", "side=%s peer=%s:%s seconds=%g", conn.side, *where,
                             IDLE_TIMEOUT if conn.side == "p" else BACKEND_IDLE_TIMEOUT)
                if conn.pool_key is not None and self.out.get(conn.pool_key) is conn:
                    del self.out[conn.pool_key]  # the next message opens a new one at once
            else:
                continue
            conn.close()

    def stats(self) -> dict[str, Any]:
        listeners: list[str] = []
        v = self.view_
        if v is not None:  # same shape as every service: "<proto>://<address>:<port>"
            if v.mode == "udp":
                listeners += [f"udp://{v.bind}:{v.udp_port}", f"tcp://{v.bind}:{v.udp_port}"]
            else:
                listeners.append(f"tls://{v.bind}:{v.tls_port}")
        counters: dict[str, int] = dict(self.counters_extra)
        gauges: dict[str, int] = {"connections": len(self.conns),
                                  "tls_connections": sum(1 for c in self.conns.values() if c.tname == "tls")}
        if self.relay is not None:
            counters.update(self.relay.counters)
            gauges["dialogs"] = len(self.relay.dialogs.calls)
            gauges["calls"] = len(self.relay.calls)
            limiter = self.relay.limiter
            gauges["blocked_sources"] = limiter.blocked(time.monotonic()) if limiter is not None else 0
            gauges["locked_out"] = self.relay.auth.locked_out(time.monotonic())
            gauges["udp_sources_unverified"], gauges["udp_sources_verified"] = self.relay.amp.counts()
        return {"listeners": listeners, "counters": counters, "gauges": gauges}


class _TlsGate:
    """Phone TLS connections are checked against the access list and count against the caps
    from the accept, before the handshake (`proxyd.tls_accept.Gate`): a refused address costs no
    handshake, and a flood of handshakes that never finish cannot exceed the caps."""

    def __init__(self, svc: SipService):
        self.svc = svc

    def admit(self, address: str) -> bool:
        if not self.svc.ctx.access.allowed(address, "sip"):
            self.svc.dropped("refused_sources", "src=%s transport=tls (before the handshake)", address)
            return False
        if self.svc.admit(address):
            return True
        self.svc.refused_connection(address, "?", "tls")
        return False

    def release(self, address: str) -> None:
        self.svc.release(address)


class _BackendTlsGate:
    """A PBX's TLS connection comes from an instance's address, checked at accept: anyone else
    gets no handshake (nothing is counted: the backend side has no per-address cap)."""

    def __init__(self, svc: SipService):
        self.svc = svc

    def admit(self, address: str) -> bool:
        if self.svc.backend_source(address):
            return True
        self.svc.dropped("backend_foreign_sources", "src=%s transport=tls (no instance's address; before the "
                         "handshake)", address)
        return False

    def release(self, address: str) -> None:
        pass


def _networks(sources: tuple[str, ...] | None) -> tuple[IPv4Network | IPv6Network, ...] | None:
    if sources is None:
        return None
    return tuple(ip_network(s.strip("[]"), strict=False) for s in sources)


def _in(ip: str, net: IPv4Network | IPv6Network) -> bool:
    try:
        return ip_address(ip.partition("%")[0]) in net
    except ValueError:
        return False


def _limiter(view: SipView) -> RateLimiter | None:
    return RateLimiter(limit=view.rate_limit) if view.rate_limit else None


def _needs_tls(view: SipView) -> bool:
    return any(t == "tls" for _, t, _, _ in view.domains)


def _backend_tls() -> ssl.SSLContext:
    """TLS towards a PBX: instances run self-signed certificates on internal addresses, so no CA
    check; the certificate is pinned by fingerprint when the instance configures one
    (`SipService.pbx_certificate_ok`), else the connection is encrypted but unauthenticated."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _big_buffer(transport: asyncio.BaseTransport) -> None:
    """Absorb bursts (a call rate step, a registration storm) instead of dropping datagrams."""
    sock = transport.get_extra_info("socket")
    for opt in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if opt is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
            return
        except OSError:
            continue


def _domains(view: SipView) -> dict[str, Target]:
    return {d: Target(t, h, p) for d, t, h, p in view.domains}
