"""`allow_sources`: which client addresses may connect at all (checked once per connection/flow).

Entries are CIDRs or DNS names. Names are resolved before the list takes effect and then
re-resolved in the background; a failed re-resolution keeps the last answer. A name that never
resolved allows nobody. An empty list allows everyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections import Counter

log = logging.getLogger("proxyd.access")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

RESOLVE_INTERVAL = 30.0  # a moved name is picked up within half a minute
MIN_RETRY = 5.0  # a name that does not resolve is retried sooner, without hammering
#: verdicts remembered per source address (SIP over UDP asks for every datagram); cleared when
#: the list or a name's addresses change, and when full
VERDICTS_MAX = 4096


class AccessList:
    def __init__(self) -> None:
        self.entries: tuple[str, ...] = ()
        self._nets: tuple[IPNetwork, ...] = ()
        self._resolved: dict[str, tuple[IPNetwork, ...]] = {}
        self._task: asyncio.Task[None] | None = None
        self._verdicts: dict[str, bool] = {}
        self.refused = Counter[str]()

    @property
    def open(self) -> bool:
        return not self.entries

    def allowed(self, ip: str, service: str = "") -> bool:
        """True if `ip` may connect; counts refusals per service."""
        if not self.entries:
            return True
        verdict = self._verdicts.get(ip)
        if verdict is None:
            verdict = self._check(ip)
            if len(self._verdicts) >= VERDICTS_MAX:
                self._verdicts.clear()
            self._verdicts[ip] = verdict
        if not verdict:
            self.refused[service] += 1
        return verdict

    def _check(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self._nets) or any(
            addr in net for nets in self._resolved.values() for net in nets)

    async def update(self, entries: tuple[str, ...]) -> None:
        if entries == self.entries:
            return
        self.entries = entries
        nets, names = [], []
        for e in entries:
            try:
                nets.append(ipaddress.ip_network(e, strict=False))
            except ValueError:
                names.append(e)
        self._nets = tuple(nets)
        self._resolved = {n: self._resolved.get(n, ()) for n in names}
        self._verdicts = {}
        await self.close()
        if names:
            # Resolve once before serving so that a name entry works from the first connection.
            ttls = await asyncio.gather(*(self._resolve(n) for n in names))
            self._task = asyncio.create_task(self._refresh(names, min(ttls)))

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _refresh(self, names: list[str], wait: float) -> None:
        while True:
            await asyncio.sleep(wait)
            ttls = await asyncio.gather(*(self._resolve(n) for n in names))
            wait = min(ttls)

    async def _resolve(self, name: str) -> float:
        """Resolve one name through the system resolver; returns seconds until the next try.

        getaddrinfo() hides the TTL, so names are re-resolved every RESOLVE_INTERVAL; the
        system view (/etc/hosts, nsswitch, a caching resolver) is what operators expect.
        """
        loop = asyncio.get_running_loop()
        addrs: set[str] = set()
        with contextlib.suppress(OSError):
            infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
            addrs.update(str(info[4][0]) for info in infos)
        nets = tuple(ipaddress.ip_network(a) for a in sorted(addrs))
        if nets != self._resolved.get(name):
            log.info("event=allow_source_resolved name=%s addresses=%s", name,
                     ",".join(map(str, nets)) or "-")
        if nets or name not in self._resolved:
            self._resolved[name] = nets
            self._verdicts = {}
        return RESOLVE_INTERVAL if nets else MIN_RETRY
