"""The media service: the asyncio adapter of the media session core (`services.media.session`).

It implements `MediaRelay` (offer/answer/delete) for the SIP relay: each call goes to the core,
which decides and returns the rewritten SDP and socket actions; this module performs them. Per
media stream it holds an RTP leg and an RTCP leg (`services.media.relay`), each a socket facing
the phone and one facing the instance, on the ports the core drew from its `PortPool`.

Mode `srtp`: phones must speak SRTP (SDES). When the instance speaks SRTP too, packets pass
opaque with the endpoints' own keys. When the instance speaks plain RTP, the stream is bridged:
the relay decrypts with the phone's key and encrypts towards the phone with a key of its own,
which it announces to the phone in place of the instance's (missing) a=crypto.

Sockets of ended calls are kept bound as spares (`_put_pair`) for the pool's next take; a
port another process holds is reported back to the core (`Sessions.unbindable`) and the offer
is tried again on other ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections import Counter, OrderedDict
from typing import Any

from proxyd.config import ProxyConfig
from proxyd.events import emit
from proxyd.service import Service
from proxyd.stats import ServiceStats
from services.media.kernel import Kernel, KernelError, route_source
from services.media.ports import PortPool
from services.media.relay import Addr, Endpoint, Leg, bind_udp, endpoints, register
from services.media.session import (
    RETRY_AFTER,
    Action,
    Call,
    Close,
    Latch,
    MediaView,
    Offload,
    Open,
    Refused,
    Sessions,
    Stream,
    Unoffload,
)
from services.media_api import MediaError, Side

__all__ = ["MediaService", "MediaView"]

IDLE_CHECK = 1.0
STATUS_STREAMS = 100  # per-stream detail in status is for people; the gauges cover the rest
#: Offers tried on fresh ports when some of the drawn ones turn out held by another process.
BIND_TRIES = 3

Pair = tuple[Endpoint, Endpoint]  # the RTP and RTCP endpoints of an even port


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
                         m.setup_timeout, m.max_streams, m.max_streams_per_source, hosts, nets,
                         m.max_streams_per_instance, m.kernel_offload)

    async def start(self, view: MediaView) -> None:
        self.v = view
        self.core = Sessions(view, PortPool(view.port_min, view.port_max), log=self.log, is_local=_is_local)
        self.core.on_end = self._call_ended
        self.eps: dict[int, Endpoint] = {}  # every socket of a live stream by its port
        self.streams: dict[int, tuple[str, Leg, Leg]] = {}  # by the port facing the phone: call, rtp, rtcp
        self.spare: OrderedDict[int, Pair] = OrderedDict()
        self.counters: Counter[str] = Counter()  # packets of ended streams
        self.registering: set[asyncio.Task[None]] = set()  # sockets being handed to the loop
        self.kernel: Kernel | None = None
        self.offload_reason = ""
        self._kernel_switch(view)
        self._idle = self.every(IDLE_CHECK, self.expire_idle, "idle and set-up timeouts")

    def _kernel_switch(self, view: MediaView) -> None:
        """Open the kernel table (flushing what a crashed run left) or say why media stays in userspace."""
        if not view.kernel_offload:
            self._kernel_off("services.media.kernel_offload is false")
        elif self.kernel is None:
            try:
                self.kernel = Kernel.open()
                self.offload_reason = ""
            except KernelError as exc:
                self.offload_reason = str(exc)
                self.log.info("event=media_offload mode=userspace reason=%r", self.offload_reason)

    def _kernel_off(self, reason: str) -> None:
        """Everything back to userspace: the core forgets its offloads, the table goes."""
        kernel, self.kernel, self.offload_reason = self.kernel, None, reason
        self.core.offloads({}, kernel=False)
        if kernel is not None:
            kernel.close()

    async def reconfigure(self, view: MediaView) -> None:
        self.core.reconfigure(view)
        self.v = view
        self._kernel_switch(view)
        for port in [p for p in self.spare if not self.core.pool.in_range(p)]:
            _close(self.spare.pop(port))

    async def stop(self, timeout: float) -> None:
        self._idle.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._idle
        for cid in list(self.core.calls):
            self._perform(self.core.delete(cid, "stopped"))
        if self.kernel is not None:
            self.kernel.close()
            self.kernel = None
        while self.spare:
            _close(self.spare.popitem()[1])
        for task in list(self.registering):  # what they had not handed over yet is closed above
            await task

    @property
    def calls(self) -> dict[str, Any]:
        return self.core.calls

    def legs(self, call_id: str, stream: int = 0) -> tuple[Leg, Leg]:
        """The (rtp, rtcp) legs of a live call's stream."""
        _, rtp, rtcp = self.streams[self.core.calls[call_id].streams[stream].phone]
        return rtp, rtcp

    # -- MediaRelay ------------------------------------------------------------------------
    # Synchronous, as the contract is: the core decides and takes its ports at once, sockets are
    # bound at once and handed to the loop behind the SDP's back (`register`), so no allocation
    # can be interrupted half-way and the SIP relay keeps a call's order for free.
    def offer(self, call_id: str, from_tag: str, sdp: bytes, *, side: Side, source_ip: str,
              instance_rtp_only: bool = False, instance: str = "") -> bytes:
        """The offer rewritten towards the other side (MediaError: refused, no port taken)."""
        relay_ip = self._address(source_ip)
        for _ in range(BIND_TRIES):
            now = time.monotonic()
            try:
                out = self.core.offer(call_id, sdp, side=side, source_ip=source_ip, relay_ip=relay_ip, now=now,
                                      instance=instance, instance_rtp_only=instance_rtp_only)
            except Refused as refused:
                self._perform(refused.actions)
                raise
            bad = self._perform(out.actions)
            if not bad:
                return out.sdp
            self._perform(self.core.unbindable(call_id, bad, now))
        raise MediaError(503, "no media ports available", RETRY_AFTER)

    def answer(self, call_id: str, from_tag: str, to_tag: str, sdp: bytes, *, side: Side,
               source_ip: str) -> bytes:
        """The answer rewritten towards the other side (MediaError: unusable, the call's ports go back)."""
        try:
            out = self.core.answer(call_id, sdp, side=side, source_ip=source_ip,
                                   relay_ip=self._address(source_ip), now=time.monotonic())
        except Refused as refused:
            self._perform(refused.actions)
            raise
        self._perform(out.actions)
        return out.sdp

    def delete(self, call_id: str, from_tag: str | None = None) -> None:
        """Release the call's ports (idempotent); sockets not kept as spares close on the next loop turn."""
        self._perform(self.core.delete(call_id))

    # -- performing the core's actions -----------------------------------------------------
    def _perform(self, actions: list[Action]) -> list[int]:
        """Do what the core asked; the ports of an Open that could not be bound (held elsewhere)."""
        bad: list[int] = []
        new: list[Endpoint] = []
        self._kernel_apply([a for a in actions if isinstance(a, Unoffload)], [])
        for a in actions:
            if isinstance(a, Latch):
                ep = self.eps.get(a.port)
                if ep is not None:
                    ep.apply(a)
            elif isinstance(a, Open):
                self._open(a, new, bad)
            elif isinstance(a, Close):
                self._close_stream(a)
        self._kernel_apply([], [a for a in actions if isinstance(a, Offload)])
        if new:
            task = asyncio.get_running_loop().create_task(register([ep for ep in new if not ep.closed]))
            self.registering.add(task)
            task.add_done_callback(self.registering.discard)
        return bad

    def _kernel_apply(self, removes: list[Unoffload], adds: list[Offload]) -> None:
        """Take directions out of the kernel (their last counts go to the sockets) or put them in.
        A kernel that fails leaves media in userspace, where the sockets still are."""
        if self.kernel is None or not (removes or adds):
            return
        try:
            last = self.kernel.apply([(o.port, o.src, o.dst, (route_source(o.dst[0], self.v.bind), o.via))
                                      for o in adds], [u.port for u in removes])
        except (KernelError, OSError) as exc:
            self.log.warning("event=media_offload mode=userspace reason=%r", str(exc))
            self._kernel_off(f"kernel error: {exc}")
            return
        for port, (n, b) in last.items():
            ep = self.eps.get(port)
            if ep is not None:
                ep.kernel_count(n, b)
                ep.kernel_seen = (0, 0)

    def _relatched(self, ep: Endpoint) -> None:
        self._perform(self.core.relatched(ep.port))

    def _open(self, a: Open, new: list[Endpoint], bad: list[int]) -> None:
        phone, instance = self._pair(a.phone, new), self._pair(a.instance, new)
        if phone is None or instance is None:
            bad += [p for p, pair in ((a.phone, phone), (a.instance, instance)) if pair is None]
            for pair in (phone, instance):
                if pair is not None:
                    _close(pair)
            return
        legs = Leg(phone[0], instance[0]), Leg(phone[1], instance[1])
        logged = self._log_drop(a.call_id)
        for rtp, rtcp in (phone, instance):
            rtcp.rtcp, rtcp.rtp = True, rtp
            rtp.on_drop = rtcp.on_drop = logged
            rtp.on_relatch = rtcp.on_relatch = self._relatched
            self.eps[rtp.port], self.eps[rtcp.port] = rtp, rtcp
        self.streams[a.phone] = (a.call_id, *legs)

    def _pair(self, port: int, new: list[Endpoint]) -> Pair | None:
        """A spare pair at `port`, else a newly bound one (None: the port is held elsewhere)."""
        pair = self.spare.pop(port, None)
        if pair is not None and not any(ep.closed for ep in pair):  # closed: the loop refused the socket
            return pair
        a = bind_udp(self.v.bind, port)
        b = bind_udp(self.v.bind, port + 1) if a else None
        if a is None or b is None:
            if a:
                a.close()
            return None
        pair = endpoints(port, (a, b))
        new.extend(pair)
        return pair

    def _close_stream(self, a: Close) -> None:
        rec = self.streams.pop(a.phone, None)
        if rec is None:
            return
        for leg in rec[1:]:
            for name, ep in (("phone", leg.phone), ("instance", leg.instance)):
                self.counters[f"packets_from_{name}"] += ep.packets + ep.kernel_packets
                self.counters[f"bytes_from_{name}"] += ep.bytes + ep.kernel_bytes
                self.counters["kernel_packets"] += ep.kernel_packets
                self.counters["drops"] += ep.drops
                self.counters["unsent"] += ep.unsent
                self.counters["latches"] += ep.latches
                self.counters["relatches"] += ep.relatches
                self.counters["srtp_auth_failures"] += ep.auth_failures
        _, rtp, rtcp = rec
        for pair in ((rtp.phone, rtcp.phone), (rtp.instance, rtcp.instance)):
            for ep in pair:
                self.eps.pop(ep.port, None)
            self._put_pair(pair)

    def _put_pair(self, pair: Pair) -> None:
        """Keep a pair whose call ended bound for the next call while its port is in the range,
        else close it. Binding, registering and closing 4 sockets per call cost more than the
        relaying; and a transport closes its socket only on a later loop turn, so a port closed
        now could not be bound again at once, while the pool hands the last port given back out
        first. The pool's stack keeps the spares few: as many as calls were live at the peak,
        never more sockets than a full range holds."""
        if self.core.pool.in_range(pair[0].port) and all(_reusable(ep) for ep in pair):
            for ep in pair:
                ep.reset()
            self.spare[pair[0].port] = pair
        else:
            _close(pair)

    def _call_ended(self, call_id: str, call: Call, why: str) -> None:
        """The call's one end event (issue #22 §4), with what its sockets relayed each way."""
        sums = Counter[str]()
        for s in call.streams:
            rec = self.streams.get(s.phone) if s.phone else None
            for leg in rec[1:] if rec else ():
                for name, ep in (("phone", leg.phone), ("instance", leg.instance)):
                    sums[f"packets_from_{name}"] += ep.packets + ep.kernel_packets
                    sums[f"bytes_from_{name}"] += ep.bytes + ep.kernel_bytes
                    sums["drops"] += ep.drops
        emit(self.log, logging.INFO, "media_call_end", {
            "service": "media", "client": call.owner or "-", "instance": call.instance or "-", "outcome": why,
            "streams": call.held, "bytes_from_phone": sums["bytes_from_phone"],
            "bytes_from_instance": sums["bytes_from_instance"], "packets_from_phone": sums["packets_from_phone"],
            "packets_from_instance": sums["packets_from_instance"], "drops": sums["drops"],
            "duration": f"{time.monotonic() - call.started:.3f}" if call.started else "-", "call_id": call_id})

    def _log_drop(self, call_id: str) -> Any:
        def logged(ep: Endpoint, reason: str, addr: Addr) -> None:
            self.log.info("event=media_drop call_id=%s port=%d reason=%s src=%s:%s dropped=%d", call_id, ep.port,
                          reason, addr[0], addr[1], ep.drops)
        return logged

    def _address(self, peer_ip: str) -> str:
        if self.v.public_address:
            return self.v.public_address
        if self.v.bind not in ("0.0.0.0", "::"):
            return self.v.bind
        family = socket.AF_INET6 if ":" in peer_ip else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((peer_ip, 9))  # no packet is sent: this asks the kernel for the route's source
            return str(s.getsockname()[0])

    def expire_idle(self, now: float) -> None:
        """Tell the core what each stream carried, and release what it times out (`now`: monotonic)."""
        if self.kernel is not None and self.kernel.installed:
            try:
                for port, (n, b) in self.kernel.counters().items():
                    ep = self.eps.get(port)
                    if ep is not None:
                        ep.kernel_count(n, b)
            except KernelError as exc:
                self._kernel_off(f"kernel error: {exc}")
        activity: dict[int, tuple[int, bool]] = {}
        for port, (_, rtp, rtcp) in self.streams.items():
            for leg in (rtp, rtcp):
                leg.phone.check(now)  # counting instead of a clock read per packet
                leg.instance.check(now)
            activity[port] = (rtp.received() + rtcp.received(), rtp.phone.src is not None or rtcp.phone.src is not None)
        self._perform(self.core.expire(now, activity))
        latched = {port: ep.src for port, ep in self.eps.items() if ep.src is not None}
        self._perform(self.core.offloads(latched, kernel=self.kernel is not None))

    def report(self) -> ServiceStats:
        counters = dict(self.counters + self.core.counters)
        streams: list[dict[str, Any]] = []
        for port, (cid, *legs) in self.streams.items():
            for leg in legs:
                for name, ep in (("phone", leg.phone), ("instance", leg.instance)):
                    counters[f"packets_from_{name}"] = (counters.get(f"packets_from_{name}", 0) + ep.packets
                                                        + ep.kernel_packets)
                    counters[f"bytes_from_{name}"] = counters.get(f"bytes_from_{name}", 0) + ep.bytes + ep.kernel_bytes
                    counters["kernel_packets"] = counters.get("kernel_packets", 0) + ep.kernel_packets
                    counters["drops"] = counters.get("drops", 0) + ep.drops
                    counters["unsent"] = counters.get("unsent", 0) + ep.unsent
                    for key, n in (("latches", ep.latches), ("relatches", ep.relatches),
                                   ("srtp_auth_failures", ep.auth_failures)):
                        counters[key] = counters.get(key, 0) + n
            call = self.core.calls.get(cid)
            if len(streams) < STATUS_STREAMS and call is not None:
                stream = next(s for s in call.streams if s.phone == port)
                streams.append(_stream_status(cid, stream, legs))
        pool = self.core.pool
        return ServiceStats(
            listeners=[f"udp://{self.v.bind}:{self.v.port_min}-{self.v.port_max} ({self.v.mode})"],
            counters=counters,
            gauges={"active_calls": len(self.core.calls), "active_streams": len(self.streams),
                    "ports_in_use": len(pool.used) * 2, "ports_available": pool.available * 2,
                    "ports_blocked": len(pool.blocked) * 2},
            detail={"offload": {"mode": "kernel" if self.kernel is not None else "userspace",
                                "reason": self.offload_reason or None,
                                "directions": len(self.kernel.installed) if self.kernel is not None else 0},
                    "streams": streams},
        )


def _reusable(ep: Endpoint) -> bool:
    """Open, or still being handed to the loop (a call shorter than that: closing it now would
    leave the port bound until a later loop turn while the pool hands it out again at once)."""
    if ep.transport is not None:
        return not ep.transport.is_closing()
    return not ep.closed and ep.sock is not None


def _close(pair: Pair) -> None:
    for ep in pair:
        ep.close()


def _stream_status(call_id: str, s: Stream, legs: list[Leg]) -> dict[str, Any]:
    out: dict[str, Any] = {"call_id": call_id, "srtp_bridged": s.bridged}  # else relayed opaque
    for kind, leg in zip(("rtp", "rtcp"), legs, strict=True):
        for name, ep in (("phone", leg.phone), ("instance", leg.instance)):
            out[f"{kind}_{name}"] = {"port": ep.port, "latched": f"{ep.src[0]}:{ep.src[1]}" if ep.src else None,
                                     "packets": ep.packets + ep.kernel_packets, "kernel_packets": ep.kernel_packets,
                                     "bytes": ep.bytes + ep.kernel_bytes, "drops": ep.drops,
                                     "unsent": ep.unsent}
    return out


def _is_local(ip: str) -> bool:
    """Whether `ip` is an address of this host (binding to it works)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((ip, 0))
        except OSError:
            return False
        return True
