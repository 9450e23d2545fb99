"""PROXY protocol version 2 header (sans-IO), so a backend sees the client's real address."""

from __future__ import annotations

import ipaddress
import struct

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_PROXY_CMD = 0x21  # version 2, command PROXY
_LOCAL_CMD = 0x20  # version 2, command LOCAL (no address information)


def v2_header(src: tuple[str, int], dst: tuple[str, int]) -> bytes:
    """A PROXY v2 header for a TCP connection from `src` to `dst` (mixed families: LOCAL)."""
    s = ipaddress.ip_address(src[0].split("%", 1)[0])
    d = ipaddress.ip_address(dst[0].split("%", 1)[0])
    if isinstance(s, ipaddress.IPv6Address) and s.ipv4_mapped:
        s = s.ipv4_mapped
    if isinstance(d, ipaddress.IPv6Address) and d.ipv4_mapped:
        d = d.ipv4_mapped
    if s.version != d.version:
        return SIGNATURE + struct.pack("!BBH", _LOCAL_CMD, 0x00, 0)
    family = 0x11 if s.version == 4 else 0x21  # TCP over IPv4 / IPv6
    body = s.packed + d.packed + struct.pack("!HH", src[1], dst[1])
    return SIGNATURE + struct.pack("!BBH", _PROXY_CMD, family, len(body)) + body
