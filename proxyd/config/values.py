"""The address-like values of the wire format and the pure checks on them (no reader needed)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

DNS_NAME_RE = re.compile(
    r"^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$"
)
SIP_TRANSPORTS = ("udp", "tcp", "tls")


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class SipTarget:
    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.transport}:{HostPort(self.host, self.port)}"


def normalize_sha256_fingerprint(text: str) -> str | None:
    """A certificate's SHA-256 fingerprint, hex with or without colons, as "AB:CD:..."; None if it is none."""
    digits = text.strip().replace(":", "").upper()
    if len(digits) != 64 or any(c not in "0123456789ABCDEF" for c in digits):
        return None
    return ":".join(digits[i:i + 2] for i in range(0, 64, 2))


def _is_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
    except ValueError:
        return False
    return True


def _split_host_port(s: str) -> HostPort | None:
    if s.startswith("["):
        host, sep, rest = s[1:].partition("]:")
        if not sep or not _is_ip(host):
            return None
    else:
        host, sep, rest = s.rpartition(":")
        if not sep or not host or ":" in host:
            return None
        if not (_is_ip(host) or DNS_NAME_RE.match(host)):
            return None
    if not rest.isdigit() or not 1 <= int(rest) <= 65535:
        return None
    return HostPort(host, int(rest))


def _cidr(s: str) -> str | None:
    """`s` as a normalised network (an address alone is its /32 or /128), or None."""
    try:
        return str(ipaddress.ip_network(s, strict=False))
    except ValueError:
        return None
