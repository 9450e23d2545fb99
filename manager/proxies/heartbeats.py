"""Heartbeats collected in memory and written once a second in one bulk insert.

Ten thousand proxies heartbeat every minute and all of them again right after a change; one
INSERT, one trim and one DNS check per heartbeat, each in a thread of its own, was what kept the
manager's core busy. Here the ASGI front answers a heartbeat at once and `BATCH` writes what
came in during the last second. A proxy that heartbeats twice within a second is written once
(its newest), so the pending set never exceeds one entry per known proxy.

The DNS record follows the heartbeat's source address (manager/dyndns): the batch writer checks
every written heartbeat, and `dns_check()` checks one at arrival when the proxy has a record (as the feed
knows: at once for one made in this process, at the next look for one made in another) and its
source is not the one this process last saw for the proxy, so a moved proxy's record starts
updating at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from datetime import UTC, datetime
from typing import Any

from manager.proxies.feed import FEED

log = logging.getLogger("manager.heartbeats")


def now() -> datetime:
    return datetime.now(UTC)  # what django.utils.timezone.now() gives with USE_TZ

FLUSH_EVERY = 1.0
HISTORY = 100  # heartbeats kept per proxy
INTERVAL = 60  # seconds the proxies are told to wait between heartbeats


Pending = dict[int, tuple[str | None, dict[str, Any], datetime]]


def write(batch: Pending) -> None:
    """Insert the batch, trim those proxies' history to HISTORY, clear a goodbye older than the
    heartbeat (the agent is back), start DNS updates where the source moved."""
    from django.db import close_old_connections, connection, transaction

    from manager.dyndns import updater
    from manager.proxies.models import Heartbeat, Proxy

    close_old_connections()  # this thread's kept connection, if it broke or aged (no request cycle does it here)
    rows = []
    for proxy_id, (source, d, received) in batch.items():
        services = dict(d.get("services") or {})
        if d.get("network"):
            services["network"] = d["network"]  # the proxy's netconf result, kept with its services
        if d.get("certificate"):
            services["certificate"] = d["certificate"]  # issuer/expiry/renewal per name (Proxy.certificate_status)
        rows.append(Heartbeat(
            proxy_id=proxy_id, source=source, applied_revision=d.get("applied_revision"),
            version=d.get("version", ""), uptime=d.get("uptime", 0), last_error=d.get("last_error") or "",
            services=json.loads(json.dumps(services)), interval=INTERVAL, received=received))
    table = Heartbeat._meta.db_table
    ids = list(batch)
    with transaction.atomic():
        Heartbeat.objects.bulk_create(rows, batch_size=500)
        stopped = [pk for i in range(0, len(ids), 500) for pk, at in Proxy.objects.filter(
            pk__in=ids[i:i + 500], agent_stopped__isnull=False).values_list("pk", "agent_stopped")
            if at < batch[pk][2]]
        if stopped:  # a goodbye that came after the heartbeat (and before this write) stays
            Proxy.objects.filter(pk__in=stopped).update(agent_stopped=None)
        with connection.cursor() as cur:
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                marks = ", ".join(["%s"] * len(chunk))
                cur.execute(
                    f"DELETE FROM {table} WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER ("  # noqa: S608
                    f"PARTITION BY proxy_id ORDER BY received DESC, id DESC) AS n FROM {table} "
                    f"WHERE proxy_id IN ({marks})) AS ranked WHERE n > %s)", [*chunk, HISTORY])
    updater.on_heartbeats({pid: source for pid, (source, _, _) in batch.items()})


_sources: dict[int, str | None] = {}  # proxy -> the source it was last checked at (one entry per proxy)


async def dns_check(proxy_id: int, source: str | None) -> None:
    """At a heartbeat's arrival: start the proxy's DNS update if its address moved (one small query,
    in a thread; the update itself runs in the background). A failure is logged, the heartbeat stays."""
    from manager.dyndns import updater

    if not source or not FEED.has_dns(proxy_id) or _sources.get(proxy_id) == source:
        return  # most proxies have no DNS record: no query for them
    try:
        await asyncio.to_thread(updater.on_heartbeat, proxy_id, source)
    except Exception:  # noqa: BLE001 - a DNS bookkeeping failure must not refuse the heartbeat
        log.exception("event=ddns_check_failed proxy=%d", proxy_id)
        return
    _sources[proxy_id] = source


async def flush() -> None:
    """Write what is pending now (at shutdown: the heartbeats were answered, they must not be lost)."""
    from manager.proxies.api import serialized

    batch = BATCH.take()
    if batch:
        await asyncio.to_thread(serialized, write, batch)


class Batch:
    def __init__(self) -> None:
        self._pending: Pending = {}
        self._lock = threading.Lock()
        self._flusher: asyncio.Task[None] | None = None

    def add(self, proxy_id: int, source: str | None, data: dict[str, Any]) -> None:
        with self._lock:
            self._pending.pop(proxy_id, None)  # re-inserted last: the dict stays in arrival order
            self._pending[proxy_id] = (source, data, now())
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    def take(self) -> Pending:
        with self._lock:
            batch, self._pending = self._pending, {}
        return batch

    async def _flush_loop(self) -> None:
        from manager.proxies.api import serialized

        while True:
            await asyncio.sleep(FLUSH_EVERY)
            batch = self.take()
            if not batch:
                return  # the next heartbeat starts the loop again
            try:
                await asyncio.to_thread(serialized, write, batch)
            except Exception:  # noqa: BLE001 - one failed write must not stop the next ones
                log.exception("event=heartbeat_write_failed count=%d", len(batch))


BATCH = Batch()
