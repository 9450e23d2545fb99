"""The media service: implements `MediaRelay` (offer/answer/delete) for the SIP relay.

Per media stream of a call it holds an RTP leg and an RTCP leg, each a socket facing the phone
and one facing the instance, with ports from `services.media.port_min..port_max`. SDP sent to a
side points at the sockets facing that side.

Mode `srtp`: phones must speak SRTP (SDES). When the instance speaks SRTP too, packets pass
opaque with the endpoints' own keys. When the instance speaks plain RTP, the stream is bridged:
the relay decrypts with the phone's key and encrypts towards the phone with a key of its own,
which it announces to the phone in place of the instance's (missing) a=crypto.

Where packets may go, and what they must prove, is in `services.media.relay`; this module
decides the addresses: before a side has latched, its packets go only to an SDP address equal
to the address its signalling came from (the instance side: or one of the instances'
configured hosts), never to the relay's own ports, and never to an unspecified, multicast,
broadcast or link-local address. Limits (README "Media limits"): `max_streams` m= lines per
SDP, `max_streams_per_source` streams per phone address, the port range for the whole relay;
an offer takes every port it needs or none (`_take_pairs`), and every way out gives them back.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from pylibsrtp import Session

from proxyd.config import ProxyConfig
from proxyd.service import Service
from services.media import sdes, srtp
from services.media import sdp as sdplib
from services.media.ports import PortAllocator, PortsExhausted
from services.media.relay import Addr, Endpoint, Leg, bind_udp, endpoints, register
from services.media_api import MediaError, Side

SRTP_PROTOS = ("RTP/SAVP", "RTP/SAVPF")
IDLE_CHECK = 1.0
#: Seconds a 503 for a full range (or a source at its limit) asks the phone to wait: set-up
#: timeouts and ended calls free ports within that order of time.
RETRY_AFTER = 10
STATUS_STREAMS = 100  # per-stream detail in status is for people; the gauges cover the rest
#: Port pairs of ended calls kept bound and registered for the next call (oldest reused first):
#: binding, registering and closing 4 sockets per side per call cost more than the relaying.
SPARE_PAIRS = 64

Pair = tuple[int, tuple[Endpoint, Endpoint]]  # an even port, its RTP and RTCP endpoints


@dataclass(frozen=True)
class MediaView:
    mode: str
    port_min: int
    port_max: int
    idle_timeout: float
    bind: str
    public_address: str | None
    setup_timeout: float = 20.0
    max_streams: int = 8
    max_streams_per_source: int = 64
    #: the instances' configured SIP hosts: besides its signalling source, the only addresses an
    #: instance's SDP may point the relay at
    instance_hosts: frozenset[str] = frozenset()
    #: the instances' `media_sources`: networks whose SDP addresses are trusted on the instance side
    instance_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


@dataclass
class Stream:
    legs: list[Leg]  # [rtp, rtcp]; empty for a rejected (port 0) stream
    mux: bool = False
    phone_proto: str = ""  # what the phone's last SDP said (RTP/SAVP...)
    phone_keys: tuple[str, ...] = ()  # the phone's a=crypto values
    own: sdes.Crypto | None = None  # the relay's key towards the phone while bridged
    bridged: bool = False
    # libsrtp sessions live as long as their key: a new session under the same key would restart
    # the rollover counter (keystream reuse) and the replay window
    enc: Session | None = None
    dec: Session | None = None
    dec_key: bytes = b""
    pts: frozenset[int] = frozenset()  # payload types either side's SDP names
    #: per side: (the key its SDP announced, a libsrtp session that checks its packets before a latch)
    verifiers: dict[Side, tuple[bytes, Session]] = field(default_factory=dict)

    def endpoints(self, side: Side) -> list[tuple[bool, Endpoint]]:
        """(is the RTCP port, endpoint) facing `side`."""
        return [(k == 1, leg.phone if side is Side.PHONE else leg.instance) for k, leg in enumerate(self.legs)]

    def encrypt_with(self, own: sdes.Crypto) -> None:
        """What goes to the phone is encrypted with the relay's key."""
        if self.enc is None or self.own is None or self.own.key != own.key:
            self.enc = srtp.session(own, inbound=False)
        for rtcp, ep in self.endpoints(Side.INSTANCE):
            ep.xform = srtp.encrypter(self.enc, rtcp_port=rtcp, mux=self.mux)
        self.own, self.bridged = own, True

    def decrypt_with(self, phone_key: sdes.Crypto) -> None:
        """What the phone sends is decrypted with its key."""
        if self.dec is None or self.dec_key != phone_key.key:
            self.dec, self.dec_key = srtp.session(phone_key, inbound=True), phone_key.key
        for rtcp, ep in self.endpoints(Side.PHONE):
            ep.xform = srtp.decrypter(self.dec, rtcp_port=rtcp, mux=self.mux)
            ep.verify = None  # the decryption authenticates

    def unbridge(self) -> None:
        for side in Side:
            for _, ep in self.endpoints(side):
                ep.xform = None
        self.own, self.bridged, self.enc, self.dec, self.dec_key = None, False, None, None, b""


@dataclass
class Call:
    streams: list[Stream] = field(default_factory=list)
    seen: int = 0  # packets that had arrived at the last idle check
    since: float = field(default_factory=time.monotonic)  # when `seen` last changed
    owner: str = ""  # the phone address whose offer took the ports ('' for an instance's offer)
    held: int = 0  # streams with ports, counted against the owner
    answered: float | None = None  # when the first answer went through (the set-up timeout runs)


class MediaService(Service):
    name = "media"
    order = 40  # before sip, which looks it up

    @classmethod
    def view(cls, cfg: ProxyConfig) -> MediaView | None:
        m = cfg.services.media
        if cfg.services.sip.mode == "off":
            return None
        hosts = frozenset(i.sip.host for i in cfg.instances if i.sip is not None)
        nets = tuple(sorted({ipaddress.ip_network(n) for i in cfg.instances for n in i.media_sources}, key=str))
        return MediaView(m.mode, m.port_min, m.port_max, m.idle_timeout, cfg.bind_address, m.public_address,
                         m.setup_timeout, m.max_streams, m.max_streams_per_source, hosts, nets)

    async def start(self, view: MediaView) -> None:
        self.v = view
        self.ports = PortAllocator(view.port_min, view.port_max)
        self.calls: dict[str, Call] = {}
        self.counters: Counter[str] = Counter()
        self.spare: deque[Pair] = deque()
        self.by_source: Counter[str] = Counter()  # streams held per phone address
        self.registering: set[asyncio.Task[None]] = set()  # sockets being handed to the loop
        self._idle = asyncio.create_task(self._idle_loop())

    async def reconfigure(self, view: MediaView) -> None:
        self.ports.resize(view.port_min, view.port_max)  # calls in progress keep their ports
        self.v = view
        for _ in range(len(self.spare)):  # spare pairs outside the new range are closed
            self._put_pair(self.spare.popleft())

    async def stop(self, timeout: float) -> None:
        self._idle.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._idle
        for cid in list(self.calls):
            self._release(cid)
        while self.spare:
            self._free_pair(self.spare.popleft())
        for task in list(self.registering):  # what they had not handed over yet is closed above
            await task

    # -- MediaRelay ------------------------------------------------------------------------
    # Synchronous, as the contract is: every decision and every port is taken at once, sockets
    # are bound at once and handed to the loop behind the SDP's back (`register`), so no
    # allocation can be interrupted half-way and the SIP relay keeps a call's order for free.
    def offer(self, call_id: str, from_tag: str, sdp: bytes, *, side: Side, source_ip: str,
              instance_rtp_only: bool = False) -> bytes:
        """The offer rewritten towards the other side (MediaError: refused, no port taken)."""
        media = self._parse(sdp, side, call_id)
        call = self.calls.get(call_id)
        if call is None or len(call.streams) != len(media):
            # the phone whose offer took the ports keeps them counted when the instance re-offers
            owner = call.owner if call is not None else source_ip if side is Side.PHONE else ""
            if call is not None:
                self._release(call_id)
            call = self._new_call(call_id, media, owner)
        self._learn(call, media, side, source_ip)
        edits = [self._offer_edit(st, m, side, instance_rtp_only) for st, m in zip(call.streams, media, strict=True)]
        return self._rewrite(sdp, call, toward=_other(side), peer_ip=source_ip, edits=edits)

    def answer(self, call_id: str, from_tag: str, to_tag: str, sdp: bytes, *, side: Side,
               source_ip: str) -> bytes:
        """The answer rewritten towards the other side (MediaError: unusable, the call's ports go back)."""
        call = self.calls.get(call_id)
        if call is None:
            return sdp  # no offer went through us: nothing to relay
        try:
            media = self._parse(sdp, side, call_id)
        except MediaError:
            self._release(call_id)  # the answer is not forwarded: the call has no media to hold ports for
            raise
        if call.answered is None:
            call.answered = time.monotonic()
        self._learn(call, media, side, source_ip)
        edits = [self._answer_edit(call_id, st, m, side) for st, m in zip(call.streams, media, strict=False)]
        return self._rewrite(sdp, call, toward=_other(side), peer_ip=source_ip, edits=edits)

    def delete(self, call_id: str, from_tag: str | None = None) -> None:
        """Release the call's ports (idempotent); sockets not kept as spares close on the next loop turn."""
        self._release(call_id)

    # -- SRTP: opaque or bridged -----------------------------------------------------------
    def _offer_edit(self, st: Stream, m: sdplib.Media, side: Side, instance_rtp_only: bool) -> sdplib.Edit | None:
        if self.v.mode != "srtp" or not st.legs:
            return None
        if side is Side.PHONE:
            st.phone_proto, st.phone_keys = m.proto, m.cryptos
            # a re-offer on a bridged stream stays bridged: the instance keeps hearing plain RTP;
            # an instance that refuses SRTP offers hears plain RTP from the first offer, and its
            # plain answer makes the stream bridged
            return sdplib.Edit(_plain(m.proto), ()) if st.bridged or instance_rtp_only else None
        if _is_srtp(m):
            st.unbridge()
            return None
        # the instance offers plain RTP: the phone is offered SRTP with the relay's key, and what
        # the instance sends is encrypted from now on (the phone's key arrives with its answer)
        own = st.own or sdes.own()
        st.encrypt_with(own)
        return sdplib.Edit(_secure(m.proto), (own.line(),))

    def _answer_edit(self, call_id: str, st: Stream, m: sdplib.Media, side: Side) -> sdplib.Edit | None:
        if self.v.mode != "srtp" or not st.legs or m.port == 0:
            return None
        if side is Side.PHONE:  # the phone answers the relay's SRTP offer: its key decrypts
            if not st.bridged:
                return None
            phone_key = sdes.choose(m.cryptos)
            if phone_key is None or st.own is None:
                self._unbridgeable(call_id, st)
                return None
            st.decrypt_with(phone_key)
            return sdplib.Edit(_plain(m.proto), ())
        if _is_srtp(m):  # end-to-end SRTP: the relay never touches the keys
            st.unbridge()
            return None
        phone_key = sdes.choose(st.phone_keys)
        if phone_key is None:
            self._unbridgeable(call_id, st)
            return None
        # a re-negotiation keeps the relay's key; the answer carries the tag of the offered line it takes
        own = st.own if st.own and st.own.suite == phone_key.suite else sdes.own(phone_key.tag, phone_key.suite)
        own = sdes.Crypto(phone_key.tag, own.suite, own.key)
        st.decrypt_with(phone_key)
        st.encrypt_with(own)
        self.counters["srtp_bridged"] += 1
        return sdplib.Edit(st.phone_proto or "RTP/SAVP", (own.line(),))

    def _unbridgeable(self, call_id: str, st: Stream) -> None:
        self.counters["srtp_bridge_unusable_key"] += 1
        self.log.warning("event=media_srtp_bridge_unusable_key call_id=%s", call_id)
        st.unbridge()

    # -- internals -------------------------------------------------------------------------
    def _parse(self, sdp: bytes, side: Side, call_id: str) -> list[sdplib.Media]:
        try:
            media = sdplib.parse(sdp, self.v.max_streams)
        except sdplib.SdpError as exc:
            self.counters["refused_488"] += 1
            self.log.info("event=media_refused status=488 call_id=%s side=%s reason=%r", call_id, side.value,
                          str(exc))
            raise MediaError(488, f"unusable SDP: {exc}") from None
        if self.v.mode == "srtp" and side is Side.PHONE and not all(_is_srtp(m) for m in media if m.port):
            self.counters["refused_488"] += 1
            self.log.info("event=media_refused status=488 call_id=%s side=%s reason=srtp_required", call_id,
                          side.value)
            raise MediaError(488, "this proxy requires SRTP (RTP/SAVP with a=crypto) from phones")
        return media

    def _new_call(self, call_id: str, media: list[sdplib.Media], owner: str) -> Call:
        """A call with ports for every stream of `media`, or MediaError and no port taken."""
        need = sum(1 for m in media if m.port)
        if owner and self.by_source[owner] + need > self.v.max_streams_per_source:
            self.counters["refused_source_limit"] += 1
            self.log.warning("event=media_refused status=503 call_id=%s reason=source_limit source=%s held=%d "
                             "limit=%d", call_id, owner, self.by_source[owner], self.v.max_streams_per_source)
            raise MediaError(503, "too many media streams from this address", RETRY_AFTER)
        pairs = iter(self._take_pairs(2 * need, call_id))
        streams: list[Stream] = []
        for m in media:
            if not m.port:
                streams.append(Stream([]))
                continue
            phone, instance = next(pairs), next(pairs)
            stream = Stream([Leg(phone[1][k], instance[1][k]) for k in (0, 1)])
            for leg_rtcp in (stream.legs[1].phone, stream.legs[1].instance):
                leg_rtcp.rtcp = True
            stream.legs[1].phone.rtp, stream.legs[1].instance.rtp = stream.legs[0].phone, stream.legs[0].instance
            for ep in (*phone[1], *instance[1]):
                ep.on_drop = self._log_drop(call_id)
            streams.append(stream)
        call = self.calls[call_id] = Call(streams, owner=owner, held=need)
        if owner:
            self.by_source[owner] += need
        return call

    def _take_pairs(self, n: int, call_id: str) -> list[Pair]:
        """`n` pairs, or none: what was taken goes back when the range runs out. Newly bound
        sockets are handed to the loop by one task per offer (spares need none)."""
        taken: list[Pair] = []
        try:
            for _ in range(n):
                taken.append(self._take_pair())
        except PortsExhausted as exc:
            for pair in taken:
                self._put_pair(pair)
            self.counters["ports_exhausted"] += 1
            self.log.warning("event=media_refused status=503 call_id=%s reason=ports_exhausted range=%d-%d "
                             "needed=%d detail=%r", call_id, self.v.port_min, self.v.port_max, n, str(exc))
            raise MediaError(503, "no media ports available", RETRY_AFTER) from None
        new = [ep for _, eps in taken for ep in eps if ep.transport is None and not ep.registering]
        if new:
            task = asyncio.get_running_loop().create_task(register(new))
            self.registering.add(task)
            task.add_done_callback(self.registering.discard)
        return taken

    def _take_pair(self) -> Pair:
        """A spare pair, else a newly bound one (PortsExhausted when none is left)."""
        if self.spare:
            return self.spare.popleft()
        port, socks = self._alloc_pair()
        return port, endpoints(port, socks)

    def _log_drop(self, call_id: str) -> Any:
        def logged(ep: Endpoint, reason: str, addr: Addr) -> None:
            self.log.info("event=media_drop call_id=%s port=%d reason=%s src=%s:%s dropped=%d", call_id, ep.port,
                          reason, addr[0], addr[1], ep.drops)
        return logged

    def _put_pair(self, pair: Pair) -> bool:
        """A pair whose call ended: kept for the next call while the spare list has room and the
        port is still in the range, else closed and its port released (True)."""
        port, eps = pair
        if (len(self.spare) < SPARE_PAIRS and self.ports.lo <= port and port + 1 <= self.ports.hi
                and all(ep.transport is not None and not ep.transport.is_closing() for ep in eps)):
            for ep in eps:
                ep.reset()
            self.spare.append(pair)
            return False
        self._free_pair(pair)
        return True

    def _free_pair(self, pair: Pair) -> None:
        for ep in pair[1]:
            ep.close()
        self.ports.release(pair[0])

    def _alloc_pair(self) -> tuple[int, tuple[socket.socket, socket.socket]]:
        got: dict[int, tuple[socket.socket, socket.socket]] = {}

        def is_free(p: int) -> bool:
            a = bind_udp(self.v.bind, p)
            b = bind_udp(self.v.bind, p + 1) if a else None
            if a is None or b is None:
                if a:
                    a.close()
                return False
            got[p] = (a, b)
            return True

        port = self.ports.allocate(is_free)
        return port, got[port]

    def _learn(self, call: Call, media: list[sdplib.Media], side: Side, source_ip: str) -> None:
        for stream, m in zip(call.streams, media, strict=False):
            self._learn_stream(stream, m, side, source_ip)

    def _learn_stream(self, stream: Stream, m: sdplib.Media, side: Side, source_ip: str) -> None:
        if not stream.legs:
            return
        stream.mux = stream.mux or m.rtcp_mux
        stream.pts |= m.pts
        verifier = self._verifier(stream, m, side)
        # a phone's media must come from where its signalling came from (and only there is sent
        # to before it does); the instance's likewise, or from one of the configured instance hosts
        trusted = m.address == source_ip or (
            side is Side.INSTANCE and (m.address in self.v.instance_hosts
                                       or _within(m.address, self.v.instance_networks)))
        ip = m.address if trusted and not _never(m.address) else source_ip
        for k, leg in enumerate(stream.legs):
            port = m.port if k == 0 or m.rtcp_mux else m.port + 1
            ep = leg.phone if side is Side.PHONE else leg.instance
            ep.expected_ip, ep.mux = ip, stream.mux
            for e in (leg.phone, leg.instance):
                e.pts = stream.pts
            if not (ep.xform is not None and side is Side.PHONE and stream.bridged):
                ep.verify = None if verifier is None else srtp.decrypter(verifier, rtcp_port=k == 1, mux=stream.mux)
            if ep.src is None:
                ok = trusted and m.port != 0 and not _never(m.address) and not self._own(m.address, port)
                ep.remote = (m.address, port) if ok else None
                if not ok and k == 0 and m.port and m.address not in ("0.0.0.0", "::"):  # 0.0.0.0: hold
                    self.counters["sdp_address_refused"] += 1
                    self.log.info("event=media_sdp_address_refused side=%s address=%s port=%d signalling=%s "
                                  "reason='no packet goes there before one came from there'", side.value, m.address,
                                  port, source_ip)

    def _verifier(self, stream: Stream, m: sdplib.Media, side: Side) -> Session | None:
        """A session that authenticates the SRTP this side sends under the key its SDP announced."""
        key = sdes.choose(m.cryptos) if m.proto in SRTP_PROTOS else None
        if key is None:
            stream.verifiers.pop(side, None)
            return None
        held = stream.verifiers.get(side)
        if held is None or held[0] != key.key:
            held = stream.verifiers[side] = (key.key, srtp.session(key, inbound=True))
        return held[1]

    def _own(self, ip: str, port: int) -> bool:
        """Whether (ip, port) could be one of the relay's own sockets (a loop through the relay)."""
        if not self.v.port_min <= port <= self.v.port_max + 1:
            return False
        if ip in (self.v.bind, self.v.public_address):
            return True
        if self.v.bind in ("0.0.0.0", "::"):
            with contextlib.suppress(ValueError):
                return ipaddress.ip_address(ip).is_loopback or _is_local(ip)
        return False

    def _rewrite(self, sdp: bytes, call: Call, *, toward: Side, peer_ip: str,
                 edits: list[sdplib.Edit | None]) -> bytes:
        ports: list[tuple[int, int | None]] = []
        for stream in call.streams:
            if not stream.legs:
                ports.append((0, None))
                continue
            rtp, rtcp = stream.legs
            if toward is Side.PHONE:
                ports.append((rtp.phone_port, rtcp.phone_port))
            else:
                ports.append((rtp.instance_port, rtcp.instance_port))
        return sdplib.rewrite(sdp, self._address(peer_ip), ports, edits)

    def _address(self, peer_ip: str) -> str:
        if self.v.public_address:
            return self.v.public_address
        if self.v.bind not in ("0.0.0.0", "::"):
            return self.v.bind
        family = socket.AF_INET6 if ":" in peer_ip else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((peer_ip, 9))  # no packet is sent: this asks the kernel for the route's source
            return str(s.getsockname()[0])

    def _release(self, call_id: str) -> bool:
        """Forget a call; True if sockets were closed (rather than all kept as spares)."""
        call = self.calls.pop(call_id, None)
        if call is None:
            return False
        closed = False
        if call.owner:
            self.by_source[call.owner] -= call.held
            if self.by_source[call.owner] <= 0:
                del self.by_source[call.owner]
        for stream in call.streams:
            for leg in stream.legs:
                for name, ep in (("phone", leg.phone), ("instance", leg.instance)):
                    self.counters[f"packets_from_{name}"] += ep.packets
                    self.counters[f"bytes_from_{name}"] += ep.bytes
                    self.counters["drops"] += ep.drops
                    self.counters["unsent"] += ep.unsent
            if stream.legs:
                rtp, rtcp = stream.legs
                closed |= self._put_pair((rtp.phone_port, (rtp.phone, rtcp.phone)))
                closed |= self._put_pair((rtp.instance_port, (rtp.instance, rtcp.instance)))
        return closed

    async def _idle_loop(self) -> None:
        while True:
            await asyncio.sleep(IDLE_CHECK)
            self.expire_idle(time.monotonic())

    def expire_idle(self, now: float) -> None:
        """Release calls that received nothing for idle_timeout seconds (`now`: the monotonic clock)."""
        for cid, call in list(self.calls.items()):
            seen = 0
            for s in call.streams:
                for leg in s.legs:
                    seen += leg.received()
                    for ep in (leg.phone, leg.instance):
                        ep.check(now)  # counting instead of a clock read per packet
            if seen != call.seen:
                call.seen, call.since = seen, now
            elif now - call.since > self.v.idle_timeout and any(s.legs for s in call.streams):
                self.counters["idle_released"] += 1
                self.log.info("event=media_idle_release call_id=%s", cid)
                self._release(cid)
                continue
            if (call.answered is not None and now - call.answered > self.v.setup_timeout
                    and not any(leg.phone.src for s in call.streams for leg in s.legs)
                    and any(s.legs for s in call.streams)):
                self.counters["setup_timeout_released"] += 1
                self.log.info("event=media_setup_timeout call_id=%s reason='no proven packet from the phone in "
                              "%g s after the answer'", cid, self.v.setup_timeout)
                self._release(cid)

    def stats(self) -> dict[str, Any]:
        counters = dict(self.counters)
        streams: list[dict[str, Any]] = []
        active = 0
        for cid, call in self.calls.items():
            for s in call.streams:
                if not s.legs:
                    continue
                active += 1
                for leg in s.legs:
                    for name, ep in (("phone", leg.phone), ("instance", leg.instance)):
                        counters[f"packets_from_{name}"] = counters.get(f"packets_from_{name}", 0) + ep.packets
                        counters[f"bytes_from_{name}"] = counters.get(f"bytes_from_{name}", 0) + ep.bytes
                        counters["drops"] = counters.get("drops", 0) + ep.drops
                        counters["unsent"] = counters.get("unsent", 0) + ep.unsent
                if len(streams) < STATUS_STREAMS:
                    streams.append(_stream_status(cid, s))
        spare = {port for port, _ in self.spare}  # bound, but free for the next call
        in_range = sum(1 for p in self.ports.used if self.ports.lo <= p <= self.ports.hi and p not in spare)
        return {
            "listeners": [f"udp://{self.v.bind}:{self.v.port_min}-{self.v.port_max} ({self.v.mode})"],
            "counters": counters,
            "gauges": {"active_calls": len(self.calls), "active_streams": active,
                       "ports_in_use": (len(self.ports.used) - len(spare)) * 2,
                       "ports_available": max(0, self.ports.capacity - in_range) * 2},
            "streams": streams,
        }


def _stream_status(call_id: str, s: Stream) -> dict[str, Any]:
    out: dict[str, Any] = {"call_id": call_id, "srtp_bridged": s.bridged}  # else relayed opaque
    for kind, leg in zip(("rtp", "rtcp"), s.legs, strict=True):
        for name, ep in (("phone", leg.phone), ("instance", leg.instance)):
            out[f"{kind}_{name}"] = {"port": ep.port, "latched": f"{ep.src[0]}:{ep.src[1]}" if ep.src else None,
                                     "packets": ep.packets, "bytes": ep.bytes, "drops": ep.drops,
                                     "unsent": ep.unsent}
    return out


def _within(ip: str, nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    if not nets:
        return False
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(a in n for n in nets)


def _never(ip: str) -> bool:
    """Addresses no media is ever sent to, whatever an SDP says: unspecified, multicast,
    broadcast, link-local (and names: an SDP address must be a literal)."""
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return True
    return (a.is_unspecified or a.is_multicast or a.is_link_local or a == ipaddress.IPv4Address("255.255.255.255")
            or (isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None and _never(str(a.ipv4_mapped))))


def _is_local(ip: str) -> bool:
    """Whether `ip` is an address of this host (binding to it works)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((ip, 0))
        except OSError:
            return False
        return True


def _is_srtp(m: sdplib.Media) -> bool:
    return m.proto in SRTP_PROTOS and m.crypto


def _plain(proto: str) -> str:
    return "RTP/AVPF" if proto.endswith("F") else "RTP/AVP"


def _secure(proto: str) -> str:
    return "RTP/SAVPF" if proto.endswith("F") else "RTP/SAVP"


def _other(side: Side) -> Side:
    return Side.INSTANCE if side is Side.PHONE else Side.PHONE
