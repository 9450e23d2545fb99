"""Relay legs: one UDP socket facing the phone and one facing the instance, per RTP (and RTCP) port.

Each socket is an `Endpoint`. Latching (symmetric RTP): an endpoint learns where its side's
packets come from — and so where that side's packets go — but only from the IP address its
signalling came from; a new source port from that IP re-latches (NAT rebinding); anything else is
dropped and counted. Packets are relayed opaque (SRTP passes end to end) unless an endpoint has a
transform (`xform`: the SRTP<->RTP bridge).

`datagram_received` is the hot path: one tuple comparison for the latch, int counters, one
`sendto` on the peer endpoint's transport; no allocation, no clock, no dict lookup.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from services.media.srtp import XFORM_ERRORS

Addr = tuple[str, int]


class Endpoint(asyncio.DatagramProtocol):
    __slots__ = ("port", "transport", "peer", "expected_ip", "src", "remote", "packets", "bytes", "drops",
                 "xform")

    def __init__(self, port: int) -> None:
        self.port = port
        self.transport: asyncio.DatagramTransport | None = None
        self.peer: Endpoint = self  # the endpoint facing the other side; set by `Leg`
        self.expected_ip = ""  # packets are accepted from this IP only
        self.src: Addr | None = None  # the latched source; None until the first accepted packet
        self.remote: Addr | None = None  # where this side is sent to: from SDP until latched
        self.packets = self.bytes = self.drops = 0  # forwarded from this side / dropped
        self.xform: Callable[[bytes], bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def latch(self, addr: Addr) -> bool:
        """A packet from a source other than the latched one: latch (or re-latch) if its IP is right."""
        if addr[0] != self.expected_ip:
            return False
        self.src = self.remote = addr
        return True

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        if addr != self.src and not self.latch(addr):
            self.drops += 1
            return
        peer = self.peer
        dst = peer.remote
        if dst is None:  # the other side has not told us where it is yet
            self.drops += 1
            return
        if self.xform is not None:
            try:
                data = self.xform(data)
            except XFORM_ERRORS:  # SRTP authentication failed, replay, not RTP: never forwarded
                self.drops += 1
                return
        try:
            peer.transport.sendto(data, dst)  # type: ignore[union-attr]
        except (ValueError, OSError):  # an SDP address the socket cannot reach (other family, a name)
            self.drops += 1
            return
        self.packets += 1
        self.bytes += len(data)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP unreachable from a side that went away: the idle timeout cleans up

    def reset(self) -> None:
        """Forget the call (latch, addresses, counters, transform): the socket waits for the next one."""
        self.peer = self
        self.expected_ip = ""  # until the next call's SDP, every packet is dropped
        self.src = self.remote = None
        self.packets = self.bytes = self.drops = 0
        self.xform = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Leg:
    """One port pair's worth of relaying: phone <-> relay <-> instance."""

    __slots__ = ("phone", "instance")

    def __init__(self, phone: Endpoint, instance: Endpoint) -> None:
        self.phone, self.instance = phone, instance
        phone.peer, instance.peer = instance, phone

    @property
    def phone_port(self) -> int:
        return self.phone.port

    @property
    def instance_port(self) -> int:
        return self.instance.port

    def received(self) -> int:
        """Everything that arrived on the leg (for the idle timeout)."""
        return self.phone.packets + self.phone.drops + self.instance.packets + self.instance.drops


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


async def open_endpoints(port: int, socks: tuple[socket.socket, socket.socket]) -> tuple[Endpoint, Endpoint]:
    """Endpoints on the bound sockets of `port` (RTP) and `port + 1` (RTCP), registered with the loop."""
    loop = asyncio.get_running_loop()
    eps = (Endpoint(port), Endpoint(port + 1))
    for ep, sock in zip(eps, socks, strict=True):
        await loop.create_datagram_endpoint(lambda ep=ep: ep, sock=sock)  # type: ignore[misc]
    return eps
