"""`network`: the host's network as it is, or the proxy's own NIC, applied by netconf."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from proxyd.config.reader import _fields, _Reader


@dataclass(frozen=True)
class Network:
    #: `auto` (the host's network as it is; one proxy per host) or `manual` (the fields below, applied by netconf)
    mode: str = "auto"
    #: manual: the NIC the proxy owns
    interface: str | None = None
    #: manual: the NIC's address with prefix length (CIDR), e.g. `10.5.6.100/24`; listeners bind to it
    address: str | None = None
    #: manual: the default gateway, a neighbour inside `address`'s network
    gateway: str | None = None
    #: manual: the routing table for the proxy's traffic (1..2^31-1, not 253-255)
    table: int | None = None


def _parse_network(r: _Reader, raw: Any) -> Network | None:
    d = r.obj(raw, "network", _fields(Network))
    n0 = len(r.problems)
    mode = r.field(d, "network", Network, "mode", lambda v, p: r.choice(v, p, ("auto", "manual")))
    if mode == "auto":
        for key in ("interface", "address", "gateway", "table"):
            if d.get(key) is not None:
                r.fail(f"network.{key}", "only allowed in mode manual")
        return Network() if len(r.problems) == n0 else None
    iface = r.get(d, "network", "interface", r.string)
    if iface is not None and not re.match(r"^[A-Za-z0-9_.:-]{1,15}$", iface):
        r.fail("network.interface", f"invalid interface name {iface!r}")
    address = r.get(d, "network", "address", r.string)
    gateway = r.get(d, "network", "gateway", r.ip)
    table = r.get(d, "network", "table", lambda v, p: r.integer(v, p, 1, 2**31 - 1))
    if table in (253, 254, 255):
        r.fail("network.table", "tables 253-255 are the kernel's default/main/local")
    iface_net = None
    if address is not None:
        try:
            iface_net = ipaddress.ip_interface(address)
            if "/" not in address:
                raise ValueError("missing prefix length")
        except ValueError as exc:
            r.fail("network.address", f"expected an address with prefix (CIDR), e.g. 10.5.6.100/24: {exc}")
    if iface_net is not None and gateway is not None:
        gw = ipaddress.ip_address(gateway)
        if gw not in iface_net.network or gw == iface_net.ip:
            r.fail("network.gateway", f"{gateway} is not a neighbour inside {iface_net.network}")
    if len(r.problems) > n0:
        return None
    return Network(mode="manual", interface=iface, address=address, gateway=gateway, table=table)
