"""The kernel fast path of the media relay: one nftables table, `inet pforte_media`, owned by pforte.

Per offloaded direction of a stream (`services.media.session.Offload`): a packet that arrives at
a local address on the relay port from the latched source is rewritten in prerouting to the
other side's latched address (DNAT) and, after routing, in postrouting to the relay's own
address and port facing that side (SNAT) — exactly what the userspace relay sends. Stateless
(`notrack`): nothing in conntrack to age or leak. The four rewrite maps are keyed by a mark
that the first lookup sets (`MARK + relay port`), since every rewrite changes a field the next
lookup would key on; the first map is keyed by (source address, source port, relay port) and
counts per element: those counters are the stream's packets (`counters`). Everything else —
a packet from any other source, the first packets, re-latching — falls through to the socket.

Talks to the kernel through libnftables' JSON API, in process (ctypes, as Debian's
python3-nftables does): no fork and exec per call set-up, JSON rather than nft syntax built
from strings, and one batch per change, applied atomically. IPv4 only; IPv6 stays in userspace.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import socket
from typing import Any

Addr = tuple[str, int]
TABLE = "pforte_media"
FAMILY = "inet"
#: the mark the prerouting lookup sets to key the rewrite maps: a fixed prefix plus the relay port
#: (a policy-routing rule on fwmark 0x5046xxxx would see offloaded media; none of ours uses one)
MARK = 0x50460000
FORWARD_SYSCTL = "/proc/sys/net/ipv4/ip_forward"


class KernelError(Exception):
    """The kernel (or libnftables) refused: offload stays off, the reason is shown in status."""


class Nft:
    """A libnftables context with JSON in and out."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("nftables")
        if name is None:
            raise KernelError("libnftables not installed (Debian: libnftables1)")
        lib = self.lib = ctypes.CDLL(name)
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        for f in ("nft_ctx_output_set_flags", "nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, f).argtypes = [ctypes.c_void_p] + ([ctypes.c_uint] if f.endswith("flags") else [])
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        for f in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, f).restype = ctypes.c_char_p
            getattr(lib, f).argtypes = [ctypes.c_void_p]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        self.ctx = lib.nft_ctx_new(0)
        lib.nft_ctx_output_set_flags(self.ctx, 1 << 4)  # NFT_CTX_OUTPUT_JSON
        lib.nft_ctx_buffer_output(self.ctx)
        lib.nft_ctx_buffer_error(self.ctx)

    def run(self, cmds: list[dict[str, Any]]) -> dict[str, Any]:
        rc = self.lib.nft_run_cmd_from_buffer(self.ctx, json.dumps({"nftables": cmds}).encode())
        out = self.lib.nft_ctx_get_output_buffer(self.ctx) or b""
        if rc != 0:
            err = (self.lib.nft_ctx_get_error_buffer(self.ctx) or b"").decode(errors="replace").strip()
            raise KernelError(err.splitlines()[0] if err else f"nftables error {rc}")
        return dict(json.loads(out)) if out.strip() else {}

    def close(self) -> None:
        if self.ctx:
            self.lib.nft_ctx_free(self.ctx)
            self.ctx = None


def _t(**kw: Any) -> dict[str, Any]:
    return {"family": FAMILY, "table": TABLE, **kw}


def _p(proto: str, fld: str) -> dict[str, Any]:
    return {"payload": {"protocol": proto, "field": fld}}


MARK_EXPR = {"meta": {"key": "mark"}}
MAPS = {"daddr4": ("ip", "daddr", "ipv4_addr"), "dport4": ("udp", "dport", "inet_service"),
        "saddr4": ("ip", "saddr", "ipv4_addr"), "sport4": ("udp", "sport", "inet_service")}


def table_cmds() -> list[dict[str, Any]]:
    """Create the table empty; whatever a crashed run left in it goes first (add + delete + add:
    one transaction, no moment without the table's chains or with the old elements)."""
    def mangle(*names: str) -> list[dict[str, Any]]:
        return [{"mangle": {"key": _p(*MAPS[n][:2]), "value": {"map": {"key": MARK_EXPR, "data": f"@{n}"}}}}
                for n in names]
    pre = [{"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}},
           {"mangle": {"key": MARK_EXPR, "value": {"map": {
               "key": {"concat": [_p("ip", "saddr"), _p("udp", "sport"), _p("udp", "dport")]}, "data": "@fwd4"}}}},
           {"notrack": None}, *mangle("daddr4", "dport4")]
    post = [*mangle("saddr4", "sport4"), {"mangle": {"key": MARK_EXPR, "value": 0}}]
    cmds: list[dict[str, Any]] = [{"add": {"table": {"family": FAMILY, "name": TABLE}}},
                                  {"delete": {"table": {"family": FAMILY, "name": TABLE}}},
                                  {"add": {"table": {"family": FAMILY, "name": TABLE}}},
                                  {"add": {"map": _t(name="fwd4", type=["ipv4_addr", "inet_service", "inet_service"],
                                                     map="mark", stmt=[{"counter": None}])}}]
    cmds += [{"add": {"map": _t(name=n, type="mark", map=typ)}} for n, (_, _, typ) in MAPS.items()]
    cmds += [{"add": {"chain": _t(name="pre", type="filter", hook="prerouting", prio=-300, policy="accept")}},
             {"add": {"chain": _t(name="post", type="filter", hook="postrouting", prio=110, policy="accept")}},
             {"add": {"rule": _t(chain="pre", expr=pre)}}, {"add": {"rule": _t(chain="post", expr=post)}}]
    return cmds


def _key(src: Addr, port: int) -> dict[str, Any]:
    return {"concat": [src[0], src[1], port]}


def add_cmds(port: int, src: Addr, dst: Addr, via: Addr) -> list[dict[str, Any]]:
    """Forward what comes to `port` from `src` to `dst`, as sent from `via` (address, port)."""
    mark = MARK + port
    vals = {"daddr4": dst[0], "dport4": dst[1], "saddr4": via[0], "sport4": via[1]}
    return [{"add": {"element": _t(name=n, elem=[[mark, v]])}} for n, v in vals.items()] + [
        {"add": {"element": _t(name="fwd4", elem=[[_key(src, port), mark]])}}]  # last: the rewrite is ready


def delete_cmds(port: int, src: Addr) -> list[dict[str, Any]]:
    mark = MARK + port
    return [{"delete": {"element": _t(name="fwd4", elem=[_key(src, port)])}}] + [  # first: nothing matches
        {"delete": {"element": _t(name=n, elem=[mark])}} for n in MAPS]


class Kernel:
    """The table while the media service runs: `install`/`remove` per direction, `counters`, `close`."""

    def __init__(self, nft: Nft) -> None:
        self.nft = nft
        self.installed: dict[int, Addr] = {}  # relay port -> the latched source it forwards from

    @classmethod
    def open(cls) -> Kernel:
        """The table, flushed (KernelError: no offload, with the reason)."""
        try:
            with open(FORWARD_SYSCTL) as f:
                if f.read().strip() != "1":
                    raise KernelError("net.ipv4.ip_forward is 0 (the kernel would drop what it forwards)")
        except OSError as exc:
            raise KernelError(f"cannot read {FORWARD_SYSCTL}: {exc.strerror}") from None
        nft = Nft()
        try:
            nft.run(table_cmds())
        except KernelError as exc:
            nft.close()
            if "Operation not permitted" in str(exc):
                raise KernelError("no CAP_NET_ADMIN (nftables: operation not permitted)") from None
            raise
        return cls(nft)

    def apply(self, adds: list[tuple[int, Addr, Addr, Addr]], removes: list[int]) -> dict[int, tuple[int, int]]:
        """Remove, then install, in one transaction; the removed directions' last counts."""
        last = self.counters(only=set(removes)) if removes else {}
        cmds: list[dict[str, Any]] = []
        for port in removes:
            src = self.installed.pop(port, None)
            if src is not None:
                cmds += delete_cmds(port, src)
        for port, src, dst, via in adds:
            if port in self.installed:  # replaced: the core removes first, this is a guard
                cmds += delete_cmds(port, self.installed.pop(port))
            cmds += add_cmds(port, src, dst, via)
            self.installed[port] = src
        if cmds:
            self.nft.run(cmds)
        return last

    def counters(self, only: set[int] | None = None) -> dict[int, tuple[int, int]]:
        """(packets, bytes) the kernel forwarded per relay port."""
        out = self.nft.run([{"list": {"map": _t(name="fwd4")}}])
        got: dict[int, tuple[int, int]] = {}
        for item in out.get("nftables", []):
            for elem in item.get("map", {}).get("elem", []):
                key, inner = elem[0]["elem"], elem[0]["elem"].get("counter", {})
                port = int(key["val"]["concat"][2])
                if only is None or port in only:
                    got[port] = (int(inner.get("packets", 0)), int(inner.get("bytes", 0)))
        return got

    def close(self) -> None:
        """Remove the table: no rule outlives the service."""
        try:
            self.nft.run([{"delete": {"table": {"family": FAMILY, "name": TABLE}}}])
        except KernelError:
            pass  # already gone
        self.installed.clear()
        self.nft.close()


def route_source(peer_ip: str, bind: str) -> str:
    """The address the relay's socket (bound to `bind`) sends to `peer_ip` from."""
    if bind not in ("0.0.0.0", "::"):
        return bind
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((peer_ip, 9))  # no packet is sent: this asks the kernel for the route's source
        return str(s.getsockname()[0])
