"""The media session core: calls, their streams and ports, and what each socket may do. Sans-IO.

`Sessions.offer/answer/delete/expire` take the SDP, the call's identifiers and the time, draw
ports from a `PortPool`, and return the rewritten SDP and the socket actions the adapter
(`services.media.service`) performs, in order:

- `Open(call_id, phone, instance)`: bind a stream's sockets, RTP at the even port and RTCP at the
  next, one pair facing the phone and one facing the instance, and relay between them;
- `Latch(port, ...)`: what the socket at `port` accepts as proof and from where, and where it
  sends before its first proven packet (see `services.media.relay` for the packet rules);
- `Close(phone, instance)`: the stream ended; its ports are back in the pool.

An offer takes every port it needs or none; every way out (refusal, parse error, a port the
adapter could not bind, delete, idle or set-up timeout) gives them back. Limits: `max_streams`
m= lines per SDP (488), `max_streams_per_source` streams per phone address, and
`max_streams_per_instance` per PBX (503 with `RETRY_AFTER`), the pool's range for them all.

Where media may go: before a side has latched, only to an SDP address equal to the address its
signalling came from (the instance side: or one of the instances' configured hosts and
networks), never to the relay's own ports, and never to an unspecified, multicast, broadcast or
link-local address. The one exception is a spiral (phone -> relay -> PBX -> relay -> phone, each
pass a call of its own here): when the instance sides of two live streams name each other's
PBX-facing port, the two are linked and relay to each other over the host's own address
(`_link`); one stream naming the other alone links nothing, and the end of one unlinks the other.
The one thing the core cannot know without I/O, whether an address is the host's own, it asks
`is_local` (the adapter binds a socket to find out).
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from pylibsrtp import Session

from services.media import sdes, srtp
from services.media import sdp as sdplib
from services.media.ports import PortPool
from services.media_api import MediaError, Side

Addr = tuple[str, int]
Transform = Callable[[bytes], bytes]
SRTP_PROTOS = ("RTP/SAVP", "RTP/SAVPF")
#: Seconds a 503 for a full range (or a source or instance at its limit) asks the phone to wait:
#: set-up timeouts and ended calls free ports within that order of time.
RETRY_AFTER = 10
#: Seconds a port the adapter could not bind (another process holds it) stays out of the pool.
BLOCKED_FOR = 60.0
#: Seconds an unanswered call without media keeps its ports (instead of `idle_timeout`): a phone
#: may ring for minutes without early media, and RFC 3261 Timer C (> 3 min) ends such an INVITE;
#: the SIP relay's dialogs release it at the same time (`services.sip.dialogs.SETUP_TIMEOUT`).
UNANSWERED_FOR = 200.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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
    instance_networks: tuple[Network, ...] = ()
    max_streams_per_instance: int = 600
    kernel_offload: bool = True


# -- actions ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Open:
    call_id: str
    phone: int  # the even port of the pair facing the phone (RTCP: phone + 1)
    instance: int  # likewise facing the instance


@dataclass(frozen=True)
class Close:
    phone: int
    instance: int


@dataclass(frozen=True)
class Latch:
    """The socket at `port`: packets are accepted from `expected_ip` only (and latch only when
    they prove themselves: `pts`, `verify`), `xform` applies to what it receives, and until it has
    latched it sends to `remote` (None: nowhere)."""

    port: int
    expected_ip: str
    remote: Addr | None
    pts: frozenset[int]
    mux: bool
    verify: Transform | None
    xform: Transform | None
    #: drop the latched source too (the linked pass it came from ended: its port may serve another call)
    forget: bool = False


@dataclass(frozen=True)
class Offload:
    """Forward in the kernel what comes to `port` from `src` to `dst`, sent from the relay's
    `via` port (what the socket at `port` would do)."""

    port: int
    src: Addr
    dst: Addr
    via: int


@dataclass(frozen=True)
class Unoffload:
    """Back to userspace: the kernel forwards nothing more for `port`."""

    port: int


Action = Open | Close | Latch | Offload | Unoffload
#: per socket port, its latched source (None: not latched): what `Sessions.offloads` decides on
Latched = Mapping[int, Addr | None]


@dataclass(frozen=True)
class Result:
    sdp: bytes
    actions: list[Action]


#: per stream, keyed by the port facing the phone: (proven packets so far, the phone side latched)
Activity = Mapping[int, tuple[int, bool]]


# -- state -----------------------------------------------------------------------------------
@dataclass
class Wire:
    """The core's picture of one socket (what `Latch` tells the adapter)."""

    port: int
    expected_ip: str = ""
    remote: Addr | None = None
    pts: frozenset[int] = frozenset()
    mux: bool = False
    verify: Transform | None = None
    xform: Transform | None = None

    def latch(self) -> Latch:
        return Latch(self.port, self.expected_ip, self.remote, self.pts, self.mux, self.verify, self.xform)


@dataclass
class Stream:
    phone: int = 0  # 0: a rejected (port 0) stream, no ports
    instance: int = 0
    wires: dict[Side, tuple[Wire, Wire]] = field(default_factory=dict)  # facing a side: (rtp, rtcp)
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
    #: the relay's own PBX-facing port the instance side's SDP names (a spiral's other pass), and
    #: the stream of that pass once both name each other
    names: int = 0
    linked: Stream | None = None
    #: the directions the kernel forwards: relay port -> the Offload installed for it
    offloaded: dict[int, Offload] = field(default_factory=dict)

    @classmethod
    def on(cls, phone: int, instance: int) -> Stream:
        return cls(phone, instance, {Side.PHONE: (Wire(phone), Wire(phone + 1)),
                                     Side.INSTANCE: (Wire(instance), Wire(instance + 1))})

    def endpoints(self, side: Side) -> list[tuple[bool, Wire]]:
        """(is the RTCP port, wire) facing `side`."""
        return list(enumerate(self.wires[side]))  # type: ignore[arg-type]

    def encrypt_with(self, own: sdes.Crypto) -> None:
        """What goes to the phone is encrypted with the relay's key."""
        if self.enc is None or self.own is None or self.own.key != own.key:
            self.enc = srtp.session(own, inbound=False)
        for rtcp, w in self.endpoints(Side.INSTANCE):
            w.xform = srtp.encrypter(self.enc, rtcp_port=bool(rtcp), mux=self.mux)
        self.own, self.bridged = own, True

    def decrypt_with(self, phone_key: sdes.Crypto) -> None:
        """What the phone sends is decrypted with its key."""
        if self.dec is None or self.dec_key != phone_key.key:
            self.dec, self.dec_key = srtp.session(phone_key, inbound=True), phone_key.key
        for rtcp, w in self.endpoints(Side.PHONE):
            w.xform = srtp.decrypter(self.dec, rtcp_port=bool(rtcp), mux=self.mux)
            w.verify = None  # the decryption authenticates

    def unbridge(self) -> None:
        for side in self.wires:
            for w in self.wires[side]:
                w.xform = None
        self.own, self.bridged, self.enc, self.dec, self.dec_key = None, False, None, None, b""

    def latches(self) -> list[Action]:
        return [w.latch() for side in (Side.PHONE, Side.INSTANCE) for w in self.wires.get(side, ())]


@dataclass
class Call:
    streams: list[Stream] = field(default_factory=list)
    seen: int = 0  # proven packets at the last `expire`
    since: float = 0.0  # when `seen` last changed
    owner: str = ""  # the phone address whose offer took the ports ('' for an instance's offer)
    instance: str = ""  # the PBX the call goes to or came from ('' unknown)
    held: int = 0  # streams with ports, counted against the owner and the instance
    answered: float | None = None  # when the first answer went through (the set-up timeout runs)
    started: float = 0.0  # when its first offer took the ports (the call's end event: duration)

    def ports(self) -> list[int]:
        return [p for s in self.streams if s.phone for p in (s.phone, s.instance)]


class Sessions:
    def __init__(self, view: MediaView, pool: PortPool, *, log: logging.Logger,
                 is_local: Callable[[str], bool] = lambda ip: False):
        self.v, self.pool, self.log, self.is_local = view, pool, log, is_local
        self.calls: dict[str, Call] = {}
        self.counters: Counter[str] = Counter()
        self.by_source: Counter[str] = Counter()  # streams held per phone address
        self.by_instance: Counter[str] = Counter()  # streams held per instance
        #: called with (call id, the call, why) when a call ends, before its ports go back (the
        #: adapter logs the call's end with what its sockets relayed)
        self.on_end: Callable[[str, Call, str], None] | None = None
        self.facing_instance: dict[int, Stream] = {}  # live streams by their PBX-facing port (`_link`)
        self.unlinked: list[Action] = []  # what the sockets of passes unlinked by the last call must forget

    def reconfigure(self, view: MediaView) -> None:
        self.pool.resize(view.port_min, view.port_max)  # calls in progress keep their ports
        self.v = view

    # -- the contract --------------------------------------------------------------------
    def offer(self, call_id: str, sdp: bytes, *, side: Side, source_ip: str, relay_ip: str, now: float,
              instance: str = "", instance_rtp_only: bool = False) -> Result:
        """The offer rewritten towards the other side (MediaError: refused, no port taken; Refused:
        refused after a re-offer released the call's old streams, which its actions close)."""
        media = self._parse(sdp, side, call_id)
        call = self.calls.get(call_id)
        actions: list[Action] = _unoffload(call) if call is not None else []  # the SDP may change what is sent where
        if call is None or len(call.streams) != len(media):
            # the phone whose offer took the ports keeps them counted when the instance re-offers
            owner = call.owner if call is not None else source_ip if side is Side.PHONE else ""
            instance = instance or (call.instance if call is not None else "")
            if call is not None:
                actions += self.delete(call_id, None)  # a re-offer with other streams: the call goes on
            try:
                call = self._new_call(call_id, media, owner, instance, now)
            except MediaError as exc:  # the old streams are gone all the same: the adapter closes them
                raise Refused(exc, actions) from None
            actions += [Open(call_id, s.phone, s.instance) for s in call.streams if s.phone]
        self._learn(call, media, side, source_ip)
        edits = [self._offer_edit(s, m, side, instance_rtp_only) for s, m in zip(call.streams, media, strict=True)]
        actions += _latches(call) + self.unlinked
        self.unlinked = []
        return Result(self._rewrite(sdp, call, _other(side), relay_ip, edits), actions)

    def answer(self, call_id: str, sdp: bytes, *, side: Side, source_ip: str, relay_ip: str,
               now: float) -> Result:
        """The answer rewritten towards the other side (Refused: unusable, the call's ports go back)."""
        call = self.calls.get(call_id)
        if call is None:  # its media was released (a timeout, a refusal): the peer's SDP must not pass as it is
            self.counters["answers_without_call"] += 1
            self.log.info("event=media_refused status=503 call_id=%s side=%s reason=answer_without_call",
                          call_id, side.value)
            raise MediaError(503, "the call's media was released", RETRY_AFTER)
        try:
            media = self._parse(sdp, side, call_id)
        except MediaError as exc:  # the answer is not forwarded: the call has no media to hold ports for
            raise Refused(exc, self.delete(call_id, "answer_refused")) from None
        if call.answered is None:
            call.answered = now
        unoffloaded = _unoffload(call)
        self._learn(call, media, side, source_ip)
        edits = [self._answer_edit(call_id, s, m, side) for s, m in zip(call.streams, media, strict=False)]
        actions, self.unlinked = unoffloaded + _latches(call) + self.unlinked, []
        return Result(self._rewrite(sdp, call, _other(side), relay_ip, edits), actions)

    def delete(self, call_id: str, why: str | None = "released") -> list[Action]:
        """Release the call's ports (idempotent). `why` the call ended, for `on_end` (None: it did not)."""
        call = self.calls.pop(call_id, None)
        if call is None:
            return []
        if why is not None and self.on_end is not None:
            self.on_end(call_id, call, why)
        actions = _unoffload(call) + self._uncount(call)
        for p in reversed(call.ports()):  # the next take draws them in the same order
            self.pool.give(p)
        return actions + [Close(s.phone, s.instance) for s in call.streams if s.phone]

    def unbindable(self, call_id: str, ports: list[int], now: float) -> list[Action]:
        """The adapter could not bind `ports` of the call just offered: they leave the pool for
        `BLOCKED_FOR`, the call's other ports go back (the adapter closes what it opened)."""
        call = self.calls.pop(call_id, None)
        if call is None:
            return []
        actions = self._uncount(call)
        bad = set(ports)
        for p in reversed(call.ports()):
            if p in bad:
                self.pool.block(p, now + BLOCKED_FOR)
            else:
                self.pool.give(p)
        self.counters["ports_unbindable"] += len(bad)
        self.log.warning("event=media_ports_unbindable call_id=%s ports=%s reason='held by another process' "
                         "blocked_for=%g", call_id, ",".join(map(str, sorted(bad))), BLOCKED_FOR)
        return actions + [Close(s.phone, s.instance) for s in call.streams if s.phone]

    def expire(self, now: float, activity: Activity) -> list[Action]:
        """Release calls whose streams carried no proven packet for idle_timeout (unanswered ones:
        UNANSWERED_FOR), and answered calls whose phone sent none within setup_timeout; blocked
        ports get another try."""
        self.pool.unblock(now)
        actions: list[Action] = []
        for cid, call in list(self.calls.items()):
            if not call.held:
                continue
            seen, latched = 0, False
            for s in call.streams:
                n, up = activity.get(s.phone, (0, False)) if s.phone else (0, False)
                seen, latched = seen + n, latched or up
            if seen != call.seen:
                call.seen, call.since = seen, now
            elif now - call.since > (self.v.idle_timeout if call.answered is not None
                                     else max(self.v.idle_timeout, UNANSWERED_FOR)):
                self.counters["idle_released"] += 1
                self.log.info("event=media_idle_release call_id=%s", cid)
                actions += self.delete(cid, "idle_timeout")
                continue
            if call.answered is not None and now - call.answered > self.v.setup_timeout and not latched:
                self.counters["setup_timeout_released"] += 1
                self.log.info("event=media_setup_timeout call_id=%s reason='no proven packet from the phone in "
                              "%g s after the answer'", cid, self.v.setup_timeout)
                actions += self.delete(cid, "setup_timeout")
        return actions

    # -- the kernel fast path ----------------------------------------------------------------
    def offloads(self, latched: Latched, *, kernel: bool) -> list[Action]:
        """What the kernel should forward now. A direction of a leg is offloaded only when both
        sockets of the leg have latched to a proven source (the adapter's `Endpoint.latch`), the
        sources are where the core allows media to come from (`expected_ip`), nothing is
        transformed (no SRTP bridge), the stream is no spiral pass, and both are IPv4 unicast
        addresses that are not the host's; the kernel then sends where userspace would: to the
        other socket's latched source. Anything else (or `kernel` False) is taken back. At most
        two directions per socket pair, so the stream limits bound the kernel's elements."""
        actions: list[Action] = []
        for call in self.calls.values():
            for st in call.streams:
                want: dict[int, Offload] = {}
                if kernel and st.phone and not st.bridged and st.linked is None and not st.names:
                    for k in (0, 1):
                        p, i = st.wires[Side.PHONE][k], st.wires[Side.INSTANCE][k]
                        a, b = latched.get(p.port), latched.get(i.port)
                        if not (a and b):
                            continue
                        there = Offload(p.port, a, b, i.port), Offload(i.port, b, a, p.port)
                        # an SDP that changes a wire takes the offload back first: installed means checked
                        if st.offloaded.get(p.port) == there[0] or (self._forwardable(p, a)
                                                                    and self._forwardable(i, b)):
                            want[p.port], want[i.port] = there
                for port, o in list(st.offloaded.items()):
                    if want.get(port) != o:
                        actions.append(Unoffload(port))
                        del st.offloaded[port]
                for port, o in want.items():
                    if port not in st.offloaded:
                        actions.append(o)
                        st.offloaded[port] = o
        self.counters["kernel_offloads"] += sum(isinstance(a, Offload) for a in actions)
        return actions

    def relatched(self, port: int) -> list[Action]:
        """The socket at `port` moves to a new source (NAT rebinding): its stream's directions
        go back to userspace before the first packet is relayed to or from the new source."""
        for call in self.calls.values():
            for st in call.streams:
                if st.phone and port in (st.phone, st.phone + 1, st.instance, st.instance + 1):
                    out: list[Action] = [Unoffload(q) for q in st.offloaded]
                    st.offloaded.clear()
                    return out
        return []

    def _forwardable(self, w: Wire, src: Addr) -> bool:
        if w.xform is not None or src[0] != w.expected_ip or _never(src[0]):
            return False
        try:
            a = ipaddress.ip_address(src[0])
        except ValueError:
            return False
        return a.version == 4 and not a.is_loopback and src[0] not in (self.v.bind, self.v.public_address) \
            and not self.is_local(src[0])

    # -- SRTP: opaque or bridged ---------------------------------------------------------
    def _offer_edit(self, st: Stream, m: sdplib.Media, side: Side, instance_rtp_only: bool) -> sdplib.Edit | None:
        if self.v.mode != "srtp" or not st.phone:
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
        if self.v.mode != "srtp" or not st.phone or m.port == 0:
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

    # -- internals -----------------------------------------------------------------------
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

    def _new_call(self, call_id: str, media: list[sdplib.Media], owner: str, instance: str, now: float) -> Call:
        """A call with ports for every stream of `media`, or MediaError and no port taken."""
        need = sum(1 for m in media if m.port)
        if owner and self.by_source[owner] + need > self.v.max_streams_per_source:
            self._refuse(call_id, "source_limit", f"source={owner} held={self.by_source[owner]} "
                         f"limit={self.v.max_streams_per_source}", "too many media streams from this address")
        if instance and self.by_instance[instance] + need > self.v.max_streams_per_instance:
            self._refuse(call_id, "instance_limit", f"instance={instance} held={self.by_instance[instance]} "
                         f"limit={self.v.max_streams_per_instance}", "too many media streams for this PBX")
        ports = self.pool.take(2 * need)
        if ports is None:
            self._refuse(call_id, "ports_exhausted", f"range={self.v.port_min}-{self.v.port_max} needed={2 * need} "
                         f"available={self.pool.available}", "no media ports available")
        pairs = iter(ports or ())
        streams = [Stream.on(next(pairs), next(pairs)) if m.port else Stream() for m in media]
        call = self.calls[call_id] = Call(streams, since=now, owner=owner, instance=instance, held=need, started=now)
        self.facing_instance.update((s.instance, s) for s in streams if s.phone)
        if owner:
            self.by_source[owner] += need
        if instance:
            self.by_instance[instance] += need
        return call

    def _refuse(self, call_id: str, reason: str, detail: str, text: str) -> None:
        self.counters[f"refused_{reason}" if reason != "ports_exhausted" else reason] += 1
        self.log.warning("event=media_refused status=503 call_id=%s reason=%s %s", call_id, reason, detail)
        raise MediaError(503, text, RETRY_AFTER)

    def _uncount(self, call: Call) -> list[Action]:
        """Forget a call that leaves; what a linked pass's sockets must forget of it."""
        for held, key in ((self.by_source, call.owner), (self.by_instance, call.instance)):
            if key:
                held[key] -= call.held
                if held[key] <= 0:
                    del held[key]
        for s in call.streams:
            self.facing_instance.pop(s.instance, None)
            self._unlink(s)
        actions, self.unlinked = self.unlinked, []
        return actions

    def _unlink(self, stream: Stream) -> None:
        """The linked pass stops sending to this stream's ports (the pool may hand them out again)."""
        other, stream.linked = stream.linked, None
        if other is not None:
            other.linked, other.names = None, 0
            for w in other.wires[Side.INSTANCE]:
                w.remote = None
                self.unlinked.append(replace(w.latch(), forget=True))

    def _learn(self, call: Call, media: list[sdplib.Media], side: Side, source_ip: str) -> None:
        for stream, m in zip(call.streams, media, strict=False):
            if stream.phone:
                self._learn_stream(stream, m, side, source_ip)

    def _learn_stream(self, stream: Stream, m: sdplib.Media, side: Side, source_ip: str) -> None:
        stream.mux = stream.mux or m.rtcp_mux
        stream.pts |= m.pts
        verifier = self._verifier(stream, m, side)
        # a phone's media must come from where its signalling came from (and only there is sent
        # to before it does); the instance's likewise, or from one of the configured instance hosts
        trusted = m.address == source_ip or (
            side is Side.INSTANCE and (m.address in self.v.instance_hosts
                                       or _within(m.address, self.v.instance_networks)))
        ip = m.address if trusted and not _never(m.address) else source_ip
        for wires in stream.wires.values():
            for w in wires:
                w.pts, w.mux = stream.pts, stream.mux
        if side is Side.INSTANCE:
            if stream.linked is not None and stream.linked.instance != m.port:
                self._unlink(stream)
            if m.port and self._own(m.address, m.port):
                self._link(stream, m.port, verifier)
                return
            stream.names = 0
        for k, w in enumerate(stream.wires[side]):
            port = m.port if k == 0 or m.rtcp_mux else m.port + 1
            w.expected_ip = ip
            if not (w.xform is not None and side is Side.PHONE and stream.bridged):
                w.verify = None if verifier is None else srtp.decrypter(verifier, rtcp_port=k == 1, mux=stream.mux)
            ok = trusted and m.port != 0 and not _never(m.address) and not self._own(m.address, port)
            w.remote = (m.address, port) if ok else None  # the adapter keeps a latched source instead
            if not ok and k == 0 and m.port and m.address not in ("0.0.0.0", "::"):  # 0.0.0.0: hold
                self.counters["sdp_address_refused"] += 1
                self.log.info("event=media_sdp_address_refused side=%s address=%s port=%d signalling=%s "
                              "reason='no packet goes there before one came from there'", side.value, m.address,
                              port, source_ip)

    def _link(self, stream: Stream, port: int, verifier: Session | None) -> None:
        """The instance side names one of the relay's own ports: a spiral's other pass, if that
        pass's instance side names this stream back (then both are linked); else nothing is sent
        and nothing latches from outside. Linked sockets send to each other over the host's own
        address, and accept only from there."""
        host = self.v.bind if self.v.bind not in ("0.0.0.0", "::") else "::1" if ":" in self.v.bind else "127.0.0.1"
        stream.names = port
        for k, w in enumerate(stream.wires[Side.INSTANCE]):
            w.expected_ip, w.remote = host, None
            w.verify = None if verifier is None else srtp.decrypter(verifier, rtcp_port=k == 1, mux=stream.mux)
        other = self.facing_instance.get(port)
        if other is None or other is stream or other.names != stream.instance:
            return
        stream.linked, other.linked = other, stream
        for s, to in ((stream, other), (other, stream)):
            for k, w in enumerate(s.wires[Side.INSTANCE]):
                w.remote = (host, to.instance + (0 if s.mux else k))
        self.counters["spiral_passes_linked"] += 1

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
            try:
                return ipaddress.ip_address(ip).is_loopback or self.is_local(ip)
            except ValueError:
                return False
        return False

    def _rewrite(self, sdp: bytes, call: Call, toward: Side, relay_ip: str,
                 edits: list[sdplib.Edit | None]) -> bytes:
        ports: list[tuple[int, int | None]] = []
        for s in call.streams:
            p = s.phone if toward is Side.PHONE else s.instance
            ports.append((p, p + 1) if p else (0, None))
        return sdplib.rewrite(sdp, relay_ip, ports, edits)


class Refused(MediaError):
    """A refusal after which the adapter still has sockets to close (`actions`)."""

    def __init__(self, exc: MediaError, actions: list[Action]):
        super().__init__(exc.status, exc.reason, exc.retry_after)
        self.actions = actions


def _unoffload(call: Call) -> list[Action]:
    out: list[Action] = []
    for st in call.streams:
        out += [Unoffload(port) for port in st.offloaded]
        st.offloaded.clear()
    return out


def _latches(call: Call) -> list[Action]:
    """Every socket of the call as the core now sees it, and of the passes linked to it."""
    return [a for s in call.streams for t in (s, s.linked) if t is not None for a in t.latches()]


def _within(ip: str, nets: tuple[Network, ...]) -> bool:
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


def _is_srtp(m: sdplib.Media) -> bool:
    return m.proto in SRTP_PROTOS and m.crypto


def _plain(proto: str) -> str:
    return "RTP/AVPF" if proto.endswith("F") else "RTP/AVP"


def _secure(proto: str) -> str:
    return "RTP/SAVPF" if proto.endswith("F") else "RTP/SAVP"


def _other(side: Side) -> Side:
    return Side.INSTANCE if side is Side.PHONE else Side.PHONE
