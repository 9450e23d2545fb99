"""The media service: implements `MediaRelay` (offer/answer/delete) for the SIP relay.

Per media stream of a call it holds an RTP leg and an RTCP leg, each a socket facing the phone
and one facing the instance, with ports from `services.media.port_min..port_max`. SDP sent to a
side points at the sockets facing that side.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from proxyd.config import ProxyConfig
from proxyd.service import Service
from services.media import sdp as sdplib
from services.media.ports import PortAllocator, PortsExhausted
from services.media.relay import Latch, Leg, bind_udp, open_leg
from services.media_api import MediaError, Side

SRTP_PROTOS = ("RTP/SAVP", "RTP/SAVPF")
IDLE_CHECK = 1.0


@dataclass(frozen=True)
class MediaView:
    mode: str
    port_min: int
    port_max: int
    idle_timeout: float
    bind: str
    public_address: str | None


@dataclass
class Stream:
    legs: list[Leg]  # [rtp, rtcp]; empty for a rejected (port 0) stream

    def close(self) -> None:
        for leg in self.legs:
            leg.close()


@dataclass
class Call:
    streams: list[Stream] = field(default_factory=list)


class MediaService(Service):
    name = "media"
    order = 40  # before sip, which looks it up

    @classmethod
    def view(cls, cfg: ProxyConfig) -> MediaView | None:
        m = cfg.services.media
        if cfg.services.sip.mode == "off":
            return None
        return MediaView(m.mode, m.port_min, m.port_max, m.idle_timeout, cfg.bind_address, m.public_address)

    async def start(self, view: MediaView) -> None:
        self.v = view
        self.ports = PortAllocator(view.port_min, view.port_max)
        self.calls: dict[str, Call] = {}
        self.counters: Counter[str] = Counter()
        self._idle = asyncio.create_task(self._idle_loop())

    async def reconfigure(self, view: MediaView) -> None:
        self.ports.resize(view.port_min, view.port_max)  # calls in progress keep their ports
        self.v = view

    async def stop(self, timeout: float) -> None:
        self._idle.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._idle
        for cid in list(self.calls):
            self._release(cid)

    # -- MediaRelay ------------------------------------------------------------------------
    async def offer(self, call_id: str, from_tag: str, sdp: bytes, *, side: Side, source_ip: str) -> bytes:
        media = self._parse(sdp, side)
        call = self.calls.get(call_id)
        if call is None or len(call.streams) != len(media):
            if call is not None:
                self._release(call_id)
            call = Call([await self._stream(m, side, source_ip) for m in media])
            self.calls[call_id] = call
        else:
            self._learn(call, media, side, source_ip)
        return self._rewrite(sdp, call, toward=_other(side), peer_ip=source_ip)

    async def answer(self, call_id: str, from_tag: str, to_tag: str, sdp: bytes, *, side: Side,
                     source_ip: str) -> bytes:
        call = self.calls.get(call_id)
        if call is None:
            return sdp  # no offer went through us: nothing to relay
        media = self._parse(sdp, side)
        if self.v.mode == "srtp" and side is Side.INSTANCE and not all(_is_srtp(m) for m in media if m.port):
            # the phone side speaks SRTP; bridging to plain RTP is not built yet: relayed opaque
            self.counters["srtp_bridge_unavailable"] += 1
            self.log.warning("event=media_srtp_bridge_unavailable call_id=%s", call_id)
        self._learn(call, media, side, source_ip)
        return self._rewrite(sdp, call, toward=_other(side), peer_ip=source_ip)

    async def delete(self, call_id: str, from_tag: str | None = None) -> None:
        self._release(call_id)
        await asyncio.sleep(0)  # transports close their sockets on the next loop turn: free the ports now

    # -- internals -------------------------------------------------------------------------
    def _parse(self, sdp: bytes, side: Side) -> list[sdplib.Media]:
        try:
            media = sdplib.parse(sdp)
        except sdplib.SdpError as exc:
            self.counters["refused_488"] += 1
            raise MediaError(488, f"unusable SDP: {exc}") from None
        if self.v.mode == "srtp" and side is Side.PHONE and not all(_is_srtp(m) for m in media if m.port):
            self.counters["refused_488"] += 1
            raise MediaError(488, "this proxy requires SRTP (RTP/SAVP with a=crypto) from phones")
        return media

    async def _stream(self, m: sdplib.Media, side: Side, source_ip: str) -> Stream:
        if m.port == 0:
            return Stream([])
        try:
            p_port, p_socks = self._alloc_pair()
            try:
                i_port, i_socks = self._alloc_pair()
            except PortsExhausted:
                self._free_pair(p_port, p_socks)
                raise
        except PortsExhausted:
            self.counters["ports_exhausted"] += 1
            self.log.warning("event=media_ports_exhausted range=%d-%d", self.v.port_min, self.v.port_max)
            raise MediaError(503, "no media ports available") from None
        legs = []
        for k in (0, 1):  # RTP, RTCP
            phone, inst = Latch(""), Latch("")
            legs.append(await open_leg(self.v.bind, p_port + k, i_port + k, phone, inst, (p_socks[k], i_socks[k])))
        stream = Stream(legs)
        self._learn_stream(stream, m, side, source_ip)
        return stream

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

    def _free_pair(self, port: int, socks: tuple[socket.socket, socket.socket]) -> None:
        for s in socks:
            s.close()
        self.ports.release(port)

    def _learn(self, call: Call, media: list[sdplib.Media], side: Side, source_ip: str) -> None:
        for stream, m in zip(call.streams, media, strict=False):
            self._learn_stream(stream, m, side, source_ip)

    def _learn_stream(self, stream: Stream, m: sdplib.Media, side: Side, source_ip: str) -> None:
        for k, leg in enumerate(stream.legs):
            port = m.port if k == 0 or m.rtcp_mux else m.port + 1
            latch = leg.phone if side is Side.PHONE else leg.instance
            # a phone's media must come from where its signalling came from; the instance's from its SDP
            latch.expected_ip = source_ip if side is Side.PHONE else m.address
            if not latch.latched:
                latch.addr = (m.address, port)

    def _rewrite(self, sdp: bytes, call: Call, *, toward: Side, peer_ip: str) -> bytes:
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
        return sdplib.rewrite(sdp, self._address(peer_ip), ports)

    def _address(self, peer_ip: str) -> str:
        if self.v.public_address:
            return self.v.public_address
        if self.v.bind not in ("0.0.0.0", "::"):
            return self.v.bind
        family = socket.AF_INET6 if ":" in peer_ip else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((peer_ip, 9))  # no packet is sent: this asks the kernel for the route's source
            return str(s.getsockname()[0])

    def _release(self, call_id: str) -> None:
        call = self.calls.pop(call_id, None)
        if call is None:
            return
        for stream in call.streams:
            stream.close()
            if stream.legs:
                self.ports.release(stream.legs[0].phone_port)
                self.ports.release(stream.legs[0].instance_port)
            for leg in stream.legs:
                for side, c in leg.counters.items():
                    self.counters[f"packets_from_{side}"] += c.packets
                    self.counters[f"bytes_from_{side}"] += c.bytes
                    self.counters["drops"] += c.drops

    async def _idle_loop(self) -> None:
        while True:
            await asyncio.sleep(IDLE_CHECK)
            now = time.monotonic()
            for cid, call in list(self.calls.items()):
                legs = [leg for s in call.streams for leg in s.legs]
                if legs and all(now - leg.last_packet > self.v.idle_timeout for leg in legs):
                    self.counters["idle_released"] += 1
                    self.log.info("event=media_idle_release call_id=%s", cid)
                    self._release(cid)

    def stats(self) -> dict[str, Any]:
        live = [leg for c in self.calls.values() for s in c.streams for leg in s.legs]
        counters = dict(self.counters)
        for leg in live:
            for side, c in leg.counters.items():
                counters[f"packets_from_{side}"] = counters.get(f"packets_from_{side}", 0) + c.packets
                counters["drops"] = counters.get("drops", 0) + c.drops
        used = len(self.ports.used) * 2
        return {
            "listeners": [f"udp://{self.v.bind}:{self.v.port_min}-{self.v.port_max} ({self.v.mode})"],
            "counters": counters,
            "gauges": {"active_calls": len(self.calls), "active_streams": len(live) // 2, "ports_in_use": used,
                       "ports_available": max(0, self.ports.capacity * 2 - used)},
        }


def _is_srtp(m: sdplib.Media) -> bool:
    return m.proto in SRTP_PROTOS and m.crypto


def _other(side: Side) -> Side:
    return Side.INSTANCE if side is Side.PHONE else Side.PHONE
