"""Keeps a proxy's DNS record at the source address of its heartbeats.

`on_heartbeat()` runs inside the heartbeat request and only decides: one small query, and when
the address differs from the one the record was last set to, it marks the record `updating` and
hands the work to a background thread. The provider calls (with their retries and waits) never
hold up a heartbeat. A failed update is tried again by a later heartbeat, at most every
RETRY_AFTER for the same address; a new address is tried at once.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.db import close_old_connections
from django.utils import timezone

from manager.dyndns.providers import Cloudflare, DdnsError, Provider, Rfc2136, update_with_retries

log = logging.getLogger("manager.dyndns")

ATTEMPTS = 3
RETRY_DELAY = 1.0  # seconds before the 2nd attempt, doubling after
RETRY_AFTER = timedelta(minutes=5)

_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ddns")
_lock = threading.Lock()
_inflight: set[int] = set()


def provider_for(record) -> Provider:  # type: ignore[no-untyped-def]
    if record.provider == "cloudflare":
        return Cloudflare(record.zone, record.credentials, api=record.api_url)
    return Rfc2136(record.server, record.zone, record.key_name, record.credentials,
                   algorithm=record.algorithm, port=record.port)


def needs_update(record, source: str) -> bool:  # type: ignore[no-untyped-def]
    if source == record.synced_address:
        return False  # unchanged: nothing is touched
    if source != record.address or record.state not in ("failed", "updating"):
        return True
    return record.last_update is None or timezone.now() - record.last_update >= RETRY_AFTER


def on_heartbeat(proxy_id: int, source: str | None) -> bool:
    """Start a background update when the proxy's address changed; True if one was started."""
    from manager.proxies.models import DnsRecord

    if not source:
        return False
    record = DnsRecord.objects.filter(proxy_id=proxy_id).first()
    if record is None or not needs_update(record, source):
        return False
    return start(record, source)


def on_heartbeats(sources: dict[int, str | None]) -> int:
    """`on_heartbeat` for a batch of heartbeats (proxy id -> source) in one query; how many started."""
    from manager.proxies.models import DnsRecord

    ids = [pid for pid, src in sources.items() if src]
    started = 0
    for i in range(0, len(ids), 500):
        for record in DnsRecord.objects.filter(proxy_id__in=ids[i:i + 500]):
            source = sources[record.proxy_id]
            if source and needs_update(record, source):
                started += start(record, source)
    return started


def start(record, source: str) -> bool:  # type: ignore[no-untyped-def]
    from manager.proxies.models import DnsRecord

    with _lock:
        if record.pk in _inflight:
            return False
        _inflight.add(record.pk)
    DnsRecord.objects.filter(pk=record.pk).update(address=source, state="updating")
    _pool.submit(_run, record.pk, source)
    return True


def _run(record_pk: int, address: str) -> None:
    from manager.proxies.models import DnsRecord

    close_old_connections()
    try:
        record = DnsRecord.objects.filter(pk=record_pk).first()
        if record is None:
            return
        attempts = 0
        provider = provider_for(record)

        class Counting:
            def update(self, name: str, address: str) -> str:
                nonlocal attempts
                attempts += 1
                return provider.update(name, address)

        try:
            result = update_with_retries(Counting(), record.name, address, attempts=ATTEMPTS, delay=RETRY_DELAY)
            fields = {"state": "ok", "synced_address": address}
        except DdnsError as exc:
            result, fields = str(exc), {"state": "failed"}
        except Exception as exc:  # noqa: BLE001 - a bug must show on the page, not kill the worker
            log.exception("event=ddns_error name=%s", record.name)
            result, fields = f"internal error: {type(exc).__name__}", {"state": "failed"}
        if attempts > 1:
            result += f" (after {attempts} attempts)"
        DnsRecord.objects.filter(pk=record_pk).update(last_update=timezone.now(), last_result=result,
                                                      attempts=attempts, **fields)
    finally:
        with _lock:
            _inflight.discard(record_pk)
        close_old_connections()
