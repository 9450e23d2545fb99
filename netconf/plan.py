"""Desired and observed network state, and the plan between them. Sans-IO."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

RULE_PRIORITY_BASE = 10000  # our rules sit between local (0) and main (32766)


@dataclass(frozen=True)
class Desired:
    interface: str
    address: str  # CIDR, e.g. 10.5.6.100/24
    gateway: str
    table: int

    @property
    def ip(self) -> str:
        return str(ipaddress.ip_interface(self.address).ip)

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_interface(self.address).network.prefixlen

    @property
    def network(self) -> str:
        return str(ipaddress.ip_interface(self.address).network.network_address)

    @property
    def priority(self) -> int:
        return RULE_PRIORITY_BASE + self.table % 10000


@dataclass
class Observed:
    exists: bool
    up: bool = False
    addresses: list[tuple[str, int]] = field(default_factory=list)
    routes: list[tuple[str | None, int, str | None]] = field(default_factory=list)  # (dst, len, gw) in table
    rules: list[tuple[str | None, int, int, int | None]] = field(default_factory=list)  # (src, len, table, prio)


@dataclass(frozen=True)
class Op:
    kind: str  # link_up | addr_add | addr_del | route_replace | route_del | rule_add | rule_del
    args: tuple[tuple[str, object], ...]

    def arg(self, name: str) -> object:
        return dict(self.args)[name]


def op(kind: str, **args: object) -> Op:
    return Op(kind, tuple(sorted(args.items())))


class NetconfError(RuntimeError):
    """A netconf step failed; the message names the interface and what went wrong."""


def plan(d: Desired, o: Observed) -> list[Op]:
    """Ordered steps (link, addresses, routes, rule) that turn `o` into `d`; empty when equal."""
    if not o.exists:
        raise NetconfError(f"interface {d.interface} does not exist")
    ops: list[Op] = []
    if not o.up:
        ops.append(op("link_up"))
    for ip, plen in o.addresses:
        if (ip, plen) != (d.ip, d.prefixlen):
            ops.append(op("addr_del", address=ip, prefixlen=plen))  # the NIC is the proxy's alone
    if (d.ip, d.prefixlen) not in o.addresses:
        ops.append(op("addr_add", address=d.ip, prefixlen=d.prefixlen))
    connected = (d.network, d.prefixlen, None)
    default = (None, 0, d.gateway)
    for route in o.routes:
        if route not in (connected, default):
            ops.append(op("route_del", dst=route[0], dst_len=route[1], gateway=route[2]))
    if connected not in o.routes:
        ops.append(op("route_replace", dst=d.network, dst_len=d.prefixlen, gateway=None))
    if default not in o.routes:
        ops.append(op("route_replace", dst=None, dst_len=0, gateway=d.gateway))
    ours = (d.ip, 32, d.table, d.priority)
    for rule in o.rules:
        if rule[2] == d.table and rule != ours:
            ops.append(op("rule_del", src=rule[0], src_len=rule[1], priority=rule[3]))
    if ours not in o.rules:
        ops.append(op("rule_add", src=d.ip, src_len=32, priority=d.priority))
    return ops
