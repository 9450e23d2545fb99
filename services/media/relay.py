"""Relay legs: one UDP socket facing the phone and one facing the instance, per RTP (and RTCP) port.

Latching (symmetric RTP): a side's destination is learned from the packets it sends, but only
from the IP address its signalling came from (`Latch`); a new source port from that IP
re-latches (NAT rebinding); anything else is dropped and counted. Packets are relayed opaque, so
SRTP passes end to end.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field


@dataclass
class Latch:
    """Where one side's packets come from and go to. Sans-IO."""

    expected_ip: str
    addr: tuple[str, int] | None = None  # from SDP until latched, then the real source
    latched: bool = False

    def accept(self, src: tuple[str, int]) -> bool:
        if src[0] != self.expected_ip:
            return False
        if not self.latched or src != self.addr:
            self.addr, self.latched = (src[0], src[1]), True
        return True


@dataclass
class Counters:
    packets: int = 0
    bytes: int = 0
    drops: int = 0


class _Side(asyncio.DatagramProtocol):
    def __init__(self, leg: Leg, inbound: str):
        self.leg, self.inbound = leg, inbound
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.leg.received(self.inbound, data, addr)


@dataclass
class Leg:
    """One port pair's worth of relaying: phone <-> relay <-> instance."""

    phone_port: int
    instance_port: int
    phone: Latch
    instance: Latch
    counters: dict[str, Counters] = field(default_factory=lambda: {"phone": Counters(), "instance": Counters()})
    last_packet: float = field(default_factory=time.monotonic)
    sides: dict[str, _Side] = field(default_factory=dict)

    def received(self, inbound: str, data: bytes, src: tuple[str, int]) -> None:
        src_latch, dst_latch = (self.phone, self.instance) if inbound == "phone" else (self.instance, self.phone)
        c = self.counters[inbound]
        if not src_latch.accept(src):
            c.drops += 1
            return
        self.last_packet = time.monotonic()
        out = self.sides["instance" if inbound == "phone" else "phone"].transport
        if dst_latch.addr is None or out is None:
            c.drops += 1
            return
        out.sendto(data, dst_latch.addr)
        c.packets += 1
        c.bytes += len(data)

    def close(self) -> None:
        for s in self.sides.values():
            if s.transport is not None:
                s.transport.close()


def bind_udp(host: str, port: int) -> socket.socket | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        s.bind((host, port))
    except OSError:
        s.close()
        return None
    s.setblocking(False)
    return s


async def open_leg(host: str, phone_port: int, instance_port: int, phone: Latch, instance: Latch,
                   socks: tuple[socket.socket, socket.socket]) -> Leg:
    loop = asyncio.get_running_loop()
    leg = Leg(phone_port, instance_port, phone, instance)
    for name, sock in zip(("phone", "instance"), socks, strict=True):
        side = _Side(leg, name)
        await loop.create_datagram_endpoint(lambda side=side: side, sock=sock)  # type: ignore[misc]
        leg.sides[name] = side
    return leg
