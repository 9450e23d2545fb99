"""The only module that talks netlink: observe one interface/table, apply a plan, tear down.

"Already there" (EEXIST) and "already gone" (ENOENT, ESRCH, EADDRNOTAVAIL) count as success;
other netlink errors become NetconfError naming the interface and the step.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from pyroute2 import IPRoute, NetNS
from pyroute2.netlink.exceptions import NetlinkError

from netconf.plan import Desired, NetconfError, Observed, Op

BENIGN = {errno.EEXIST, errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL}


def connect(netns: str | None) -> Any:
    return NetNS(netns) if netns else IPRoute()


def _index(ipr: Any, iface: str) -> int | None:
    found = ipr.link_lookup(ifname=iface)
    return found[0] if found else None


def observe(ipr: Any, d: Desired) -> Observed:
    idx = _index(ipr, d.interface)
    if idx is None:
        return Observed(exists=False)
    link = ipr.get_links(idx)[0]
    up = bool(link["flags"] & 1)
    addrs = [(a.get("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=idx, family=socket.AF_INET)]
    routes = [(r.get("RTA_DST"), r["dst_len"], r.get("RTA_GATEWAY"))
              for r in ipr.get_routes(table=d.table, family=socket.AF_INET)
              if r.get("RTA_TABLE", r["table"]) == d.table]
    rules = [(r.get("FRA_SRC"), r["src_len"], r.get("FRA_TABLE", r["table"]), r.get("FRA_PRIORITY"))
             for r in ipr.get_rules(family=socket.AF_INET)]
    return Observed(True, up, addrs, routes, rules)


def apply(ipr: Any, d: Desired, ops: list[Op]) -> list[str]:
    idx = _index(ipr, d.interface)
    if idx is None:
        raise NetconfError(f"interface {d.interface} does not exist")
    done = []
    for o in ops:
        a = dict(o.args)
        try:
            if o.kind == "link_up":
                ipr.link("set", index=idx, state="up")
            elif o.kind in ("addr_add", "addr_del"):
                ipr.addr(o.kind[5:], index=idx, address=a["address"], prefixlen=a["prefixlen"])
            elif o.kind in ("route_replace", "route_del"):
                kw: dict[str, Any] = {"dst": a["dst"] or "0.0.0.0", "dst_len": a["dst_len"], "table": d.table,
                                      "oif": idx}
                if a["gateway"]:
                    kw["gateway"] = a["gateway"]
                elif o.kind == "route_replace":
                    kw.update(scope=253, prefsrc=d.ip)  # the connected route: link scope, our source
                ipr.route("replace" if o.kind == "route_replace" else "del", **kw)
            elif o.kind in ("rule_add", "rule_del"):
                kw = {"table": d.table, "src_len": a["src_len"], "priority": a["priority"]}
                if a["src"]:
                    kw["src"] = a["src"]
                ipr.rule(o.kind[5:], **kw)
        except NetlinkError as exc:
            if exc.code in BENIGN:
                continue
            raise NetconfError(f"interface {d.interface}: {o.kind} {a} failed: {exc.args[-1]}") from None
        done.append(o.kind)
    return done


def teardown(ipr: Any, d: Desired) -> list[str]:
    """Remove what apply() adds: the policy rule, the table's routes, the address."""
    steps = [Op("rule_del", (("priority", d.priority), ("src", d.ip), ("src_len", 32)))]
    if _index(ipr, d.interface) is None:
        try:  # the NIC is gone (and its routes and address with it): only the rule can remain
            ipr.rule("del", table=d.table, src=d.ip, src_len=32, priority=d.priority)
        except NetlinkError as exc:
            if exc.code not in BENIGN:
                raise NetconfError(f"interface {d.interface}: rule_del failed: {exc.args[-1]}") from None
        return ["rule_del"]
    obs = observe(ipr, d)
    steps += [Op("route_del", (("dst", r[0]), ("dst_len", r[1]), ("gateway", r[2]))) for r in obs.routes]
    if (d.ip, d.prefixlen) in obs.addresses:
        steps.append(Op("addr_del", (("address", d.ip), ("prefixlen", d.prefixlen))))
    return apply(ipr, d, steps)
