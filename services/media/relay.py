"""Relay legs: one UDP socket facing the phone and one facing the instance, per RTP (and RTCP) port.

Each socket is an `Endpoint`. Sending: an endpoint sends its side's packets to `remote`, which
is None until the session core has an address it may send to before latching (only the address
the side's signalling came from, see `Sessions._learn_stream`; set by `apply`), and the latched
source after.

Latching (symmetric RTP) is earned, not taken: a packet from a source other than the latched one
latches only if it comes from `expected_ip` (where the side's signalling came from), the endpoint
has not latched yet or its latched source has been silent for `RELATCH_SILENCE` (`quiet`, set
by the service's once-a-second check: NAT rebinding), and it proves itself (`proven`): RTP/RTCP
header shape, a payload type of the session, the SSRC latched first, and for SRTP/SRTCP the
authentication tag under the sender's key (`verify`, or the bridge's decrypting `xform`).
Anything else is dropped and counted in `drops` (unproven); such packets never count as life
for the idle and set-up timeouts (`Leg.received`).

`datagram_received` is the hot path: for the latched source one tuple comparison, int counters,
one `sendto` on the peer endpoint's transport; no allocation, no clock, no dict lookup.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from services.media.session import Latch
from services.media.srtp import XFORM_ERRORS

Addr = tuple[str, int]
#: Seconds the latched source must have been silent before another port of the same IP may
#: take the stream over (a NAT rebinding stops the old mapping at once; an attacker on the
#: phone's IP cannot move a stream that is flowing). 2 s of silence is what a rebinding costs.
RELATCH_SILENCE = 2.0


def rtp_shape(data: bytes, pts: frozenset[int], ssrc: bytes, rtcp: bool, mux: bool) -> bytes | None:
    """The packet's SSRC if it parses as RTP (version 2, a payload type in `pts`) or, on an RTCP
    port or muxed, as RTCP (version 2, SR or RR first: RFC 3550 §6.1); with `ssrc` set it must be
    that one (RTCP: the sender's). None otherwise. SRTP/SRTCP headers are clear, so this holds too."""
    if len(data) < 8 or data[0] >> 6 != 2:
        return None
    if rtcp or (mux and 192 <= data[1] <= 223):
        if data[1] not in (200, 201):
            return None
        got = data[4:8]
    else:
        if len(data) < 12 or data[1] & 0x7F not in pts:
            return None
        got = data[8:12]
    if ssrc and got != ssrc:
        return None
    return got


class Endpoint(asyncio.DatagramProtocol):
    __slots__ = ("port", "transport", "peer", "expected_ip", "src", "remote", "packets", "bytes", "drops",
                 "unsent", "xform", "verify", "pts", "ssrc", "rtcp", "mux", "rtp", "quiet", "on_drop", "seen",
                 "seen_at", "sock", "closed", "registering", "latches", "relatches", "auth_failures", "kernel_packets",
                 "kernel_bytes", "kernel_seen", "on_relatch")
    kernel_seen: tuple[int, int]

    def __init__(self, port: int, sock: socket.socket | None = None) -> None:
        self.port = port
        #: the bound socket, until `register` hands it to the loop (packets wait in its buffer)
        self.sock = sock
        self.closed = self.registering = False
        self.transport: asyncio.DatagramTransport | None = None
        self.peer: Endpoint = self  # the endpoint facing the other side; set by `Leg`
        self.expected_ip = ""  # packets are accepted from this IP only
        self.src: Addr | None = None  # the latched source; None until the first proven packet
        self.remote: Addr | None = None  # where this side is sent to: None, the signalling address, the latch
        self.packets = self.bytes = 0  # forwarded from this side
        self.drops = 0  # unproven: wrong address, not RTP/RTCP of the session, failed authentication
        self.unsent = 0  # proven, but the other side has no address yet (or the socket cannot reach it)
        self.latches = self.relatches = 0  # first latches, and moves to a new source (NAT rebinding)
        self.auth_failures = 0  # SRTP/SRTCP packets that failed authentication (counted in drops too)
        self.xform: Callable[[bytes], bytes] | None = None
        self.verify: Callable[[bytes], object] | None = None  # SRTP(C) authentication of a latching packet
        self.pts: frozenset[int] = frozenset()  # payload types both SDPs name for the stream
        self.ssrc = b""  # the SSRC of the first latch: a re-latch must carry it
        self.rtcp = False  # the RTCP port of a stream that is not muxed
        self.mux = False
        self.rtp: Endpoint = self  # the RTP endpoint of the same side (whose SSRC RTCP reports)
        self.quiet = False  # the latched source has been silent for RELATCH_SILENCE
        self.on_drop: Callable[[Endpoint, str, Addr], None] | None = None  # logs (1st, 2nd, 4th ... drop)
        self.seen, self.seen_at = 0, 0.0  # proven packets at the service's last check, and since when
        #: forwarded by the kernel from this side (`services.media.kernel`), and its counter at the last read
        self.kernel_packets = self.kernel_bytes = 0
        self.kernel_seen = (0, 0)
        self.on_relatch: Callable[[Endpoint], None] | None = None  # takes the kernel's forwarding back first

    def kernel_count(self, packets: int, nbytes: int) -> None:
        """The kernel's counter for this side now (it restarts at 0 with every installation)."""
        seen = self.kernel_seen if packets >= self.kernel_seen[0] else (0, 0)
        self.kernel_packets += packets - seen[0]
        self.kernel_bytes += nbytes - seen[1]
        self.kernel_seen = (packets, nbytes)

    def apply(self, latch: Latch) -> None:
        """What the session core says this socket accepts, proves and sends to before a latch."""
        self.expected_ip, self.pts, self.mux = latch.expected_ip, latch.pts, latch.mux
        self.verify, self.xform = latch.verify, latch.xform
        if latch.forget:  # the linked pass it latched to ended
            self.src, self.ssrc, self.quiet = None, b"", False
        if self.src is None:  # a latched source stays: it proved itself, an SDP did not
            self.remote = latch.remote

    def check(self, now: float) -> None:
        """Once a second (the service's idle loop): is the latched source silent enough to be replaced?"""
        n = self.packets + self.unsent + self.kernel_packets
        if n != self.seen:
            self.seen, self.seen_at, self.quiet = n, now, False
        elif self.src is not None and now - self.seen_at >= RELATCH_SILENCE:
            self.quiet = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def latchable(self, data: bytes, addr: Addr) -> str:
        """'' if a packet from `addr` (not the latched source) may latch, else why not."""
        if addr[0] != self.expected_ip:
            return "source_address"
        if self.src is not None and not self.quiet:
            return "latched_source_active"
        ssrc = rtp_shape(data, self.pts, self.rtp.ssrc, self.rtcp, self.mux)
        if ssrc is None:
            return "not_rtp_of_session"
        if self.verify is not None:
            try:
                self.verify(data)
            except XFORM_ERRORS:
                return "srtp_auth"
        return ""

    def latch(self, addr: Addr, data: bytes) -> None:
        if not self.rtcp and not (self.mux and 192 <= data[1] <= 223) and not self.ssrc:
            self.ssrc = data[8:12]
        if self.src is None:
            self.latches += 1
        else:
            if self.on_relatch is not None:  # the kernel must not go on forwarding to or from the old source
                self.on_relatch(self)
            self.relatches += 1
        self.src = self.remote = addr
        self.quiet = False

    def drop(self, reason: str, addr: Addr) -> None:
        self.drops += 1
        if reason == "srtp_auth":
            self.auth_failures += 1
        if self.on_drop is not None and self.drops & (self.drops - 1) == 0:  # 1st, 2nd, 4th, 8th ...
            self.on_drop(self, reason, addr)

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        latching = addr != self.src
        if latching:
            why = self.latchable(data, addr)
            if why:
                self.drop(why, addr)
                return
        if self.xform is not None:
            try:
                data = self.xform(data)
            except XFORM_ERRORS:  # SRTP authentication failed, replay, not RTP: never forwarded
                self.drop("srtp_auth", addr)
                return
        if latching:
            self.latch(addr, data)
        peer = self.peer
        dst = peer.remote
        if dst is None:  # the other side has no address we may send to yet
            self.unsent += 1
            return
        try:
            peer.transport.sendto(data, dst)  # type: ignore[union-attr]
        except AttributeError:  # the peer's socket is still being handed to the loop: send on it
            if not peer.send_raw(data, dst):
                self.unsent += 1
                return
        except (ValueError, OSError):  # an SDP address the socket cannot reach (other family, a name)
            self.unsent += 1
            return
        self.packets += 1
        self.bytes += len(data)
        if not self.packets & 1023 and self.verify is not None:
            self.keep_verifier(data)

    def keep_verifier(self, data: bytes) -> None:
        """Show the SRTP verifier a packet of the latched source now and then (every 1,024th,
        ~20 s at 50 packets/s): libsrtp guesses the rollover counter from the last index it saw,
        and a guess 2^15 packets stale would fail a rebinding phone's genuine packet."""
        try:
            self.verify(data)  # type: ignore[misc]
        except XFORM_ERRORS:
            pass

    def send_raw(self, data: bytes, dst: Addr) -> bool:
        """Send on the bound socket the loop does not have yet (the first packets of a new call)."""
        if self.sock is None or self.closed:
            return False
        try:
            self.sock.sendto(data, dst)
        except (ValueError, OSError):
            return False
        return True

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP unreachable from a side that went away: the idle timeout cleans up

    def reset(self) -> None:
        """Forget the call (latch, addresses, counters, transform): the socket waits for the next one."""
        self.peer = self.rtp = self
        self.expected_ip = ""  # until the next call's SDP, every packet is dropped
        self.src = self.remote = None
        self.packets = self.bytes = self.drops = self.unsent = 0
        self.latches = self.relatches = self.auth_failures = 0
        self.xform = self.verify = self.on_drop = None
        self.pts, self.ssrc, self.rtcp, self.mux, self.quiet = frozenset(), b"", False, False, False
        self.seen, self.seen_at = 0, 0.0
        self.kernel_packets = self.kernel_bytes = 0
        self.kernel_seen = (0, 0)
        self.on_relatch = None

    def close(self) -> None:
        """Close the socket now if the loop does not have it yet; else through its transport (at
        once, or as soon as `register` has it: closing a socket under a transport in the making
        would free an fd the loop is about to watch)."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        elif self.sock is not None and not self.registering:
            self.sock.close()


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
        """Proven packets that arrived on the leg (for the idle timeout); unproven ones are no life."""
        return (self.phone.packets + self.phone.unsent + self.instance.packets + self.instance.unsent
                + self.phone.kernel_packets + self.instance.kernel_packets)


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


def endpoints(port: int, socks: tuple[socket.socket, socket.socket]) -> tuple[Endpoint, Endpoint]:
    """Endpoints on the bound sockets of `port` (RTP) and `port + 1` (RTCP), not yet registered
    with the loop (`register`): a call's SDP can name them at once, nothing waits."""
    return Endpoint(port, socks[0]), Endpoint(port + 1, socks[1])


async def register(eps: list[Endpoint]) -> None:
    """Hand the endpoints' sockets to the loop; one closed meanwhile is closed, not registered."""
    loop = asyncio.get_running_loop()
    for ep in eps:
        sock = ep.sock
        if ep.closed or sock is None or sock.fileno() == -1:
            continue
        ep.registering = True
        try:
            await loop.create_datagram_endpoint(lambda ep=ep: ep, sock=sock)  # type: ignore[misc]
        except OSError:
            ep.closed = True
            sock.close()
            continue
        finally:  # cancelled (the service stops): asyncio closed the transport it was making
            ep.registering = False
        if ep.closed and ep.transport is not None:  # the call ended while the loop took the socket
            ep.transport.close()
