"""What every waiting proxy is owed, in memory: the one object behind the config long-poll.

`FEED` holds, per proxy, the newest revision number and its config JSON, the API key hash and
whether actions were made for it. With that a config poll from a proxy that has the newest
revision is answered (or parked) without touching the database, and a new revision is sent from
memory. Writers call `changed()` / `action()` / `key_changed()` from any thread (sync views and
signals run in worker threads); parked polls wake on their own event loop.

Other processes (a second `--workers` process, another host, the admin CLI) reach this one
through the database: one watcher per process reads what was added since it last looked. On
PostgreSQL it wakes on `LISTEN pforte_feed` (writers `NOTIFY` inside their transaction, so the
note arrives with the commit); on SQLite, which is one process, it looks once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import threading
from typing import Any

log = logging.getLogger("manager.feed")

CHANNEL = "pforte_feed"
SQLITE_RECHECK = 1.0  # seconds between looks at the database for revisions made by another process
PG_RECHECK = 30.0  # PostgreSQL: a look without a NOTIFY too, in case the listening connection was lost


def _model(name: str) -> Any:
    # through the app registry: the compiler (which models.py calls) imports this module
    from django.apps import apps

    return apps.get_model("proxies", name)


def notify_others() -> None:
    """Inside a writer's transaction: tell the other manager processes to look (PostgreSQL only)."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("SELECT pg_notify(%s, '')", [CHANNEL])


def _latest_rows(after_pk: int = 0) -> list[tuple[int, int, int, str]]:
    """(pk, proxy, number, config JSON as served: secrets decrypted) of the newest revision of each
    proxy, or of those after `after_pk`."""
    from django.db.models import OuterRef, Subquery

    ConfigRevision = _model("ConfigRevision")  # noqa: N806 - a model class

    qs = ConfigRevision.objects.filter(pk__gt=after_pk)
    if not after_pk:
        newest = ConfigRevision.objects.filter(proxy_id=OuterRef("proxy_id")).order_by("-number").values("number")[:1]
        qs = qs.filter(number=Subquery(newest))
    return [(r.pk, r.proxy_id, r.number, r.served_json())
            for r in qs.order_by("pk").only("pk", "proxy_id", "number", "config_json", "secrets_enc")]


def _keys() -> dict[int, str]:
    Proxy = _model("Proxy")  # noqa: N806 - a model class

    return dict(Proxy.objects.exclude(api_key_hash="").values_list("pk", "api_key_hash"))


def _dns_proxies() -> set[int]:
    DnsRecord = _model("DnsRecord")  # noqa: N806 - a model class

    return set(DnsRecord.objects.values_list("proxy_id", flat=True))


def _actions_after(pk: int) -> list[tuple[int, int]]:
    ProxyAction = _model("ProxyAction")  # noqa: N806 - a model class

    return list(ProxyAction.objects.filter(pk__gt=pk).order_by("pk").values_list("pk", "proxy_id"))


def _open_actions() -> tuple[int, list[int]]:
    """(newest action pk, proxies with an action not finished yet)."""
    from django.db.models import Q

    ProxyAction = _model("ProxyAction")  # noqa: N806 - a model class

    last = ProxyAction.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    open_ = ProxyAction.objects.filter(Q(finished__isnull=True)).values_list("proxy_id", flat=True).distinct()
    return last, list(open_)


class Feed:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[int, int] = {}
        self._bodies: dict[int, bytes] = {}
        self._keys: dict[int, str] = {}
        self._actions: dict[int, int] = {}
        self._dns: set[int] = set()  # proxies with a DNS record (their heartbeats' source is checked at arrival)
        self._waiters: dict[int, set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}
        self._ready: asyncio.Future[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._last_rev = self._last_action = 0

    # -- writers (any thread) ----------------------------------------------------------------
    def changed(self, proxy_id: int, revision: int, body: str | bytes | None = None) -> None:
        with self._lock:
            if revision <= self._latest.get(proxy_id, 0):
                return
            self._latest[proxy_id] = revision
            if body is None:
                self._bodies.pop(proxy_id, None)
            else:
                self._bodies[proxy_id] = body.encode() if isinstance(body, str) else body
            waiters = self._waiters.pop(proxy_id, set())
        self._wake(waiters)

    def action(self, proxy_id: int) -> None:
        """A new action (backup request, restored files) waits for the proxy: end its long-poll now."""
        with self._lock:
            self._actions[proxy_id] = self._actions.get(proxy_id, 0) + 1
            waiters = self._waiters.pop(proxy_id, set())
        self._wake(waiters)

    def key_changed(self, proxy_id: int, key_hash: str | None) -> None:
        """A minted, revoked or deleted key (None or ""): the next request is checked against it."""
        with self._lock:
            if key_hash:
                self._keys[proxy_id] = key_hash
            else:
                self._keys.pop(proxy_id, None)

    def dns_changed(self, proxy_id: int, present: bool) -> None:
        with self._lock:
            if present:
                self._dns.add(proxy_id)
            else:
                self._dns.discard(proxy_id)

    @staticmethod
    def _wake(waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
        for loop, fut in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits there any more
                loop.call_soon_threadsafe(_resolve, fut)

    # -- readers -----------------------------------------------------------------------------
    def authenticate(self, authorization: str) -> int | None:
        """The proxy id of `Bearer <id>.<secret>` if its key hash is known here and matches."""
        if not authorization.startswith("Bearer "):
            return None
        pid, _, secret = authorization[7:].strip().partition(".")
        if not pid.isdigit() or not secret or len(pid) > 18:
            return None
        with self._lock:
            known = self._keys.get(int(pid))
        if known is None:
            return None
        given = hashlib.sha256(secret.encode()).hexdigest()
        return int(pid) if hmac.compare_digest(given, known) else None

    def has_dns(self, proxy_id: int) -> bool:
        with self._lock:
            return proxy_id in self._dns

    def known(self, proxy_id: int) -> int | None:
        with self._lock:
            return self._latest.get(proxy_id)

    def current(self, proxy_id: int) -> tuple[int | None, bytes | None]:
        with self._lock:
            return self._latest.get(proxy_id), self._bodies.get(proxy_id)

    def waiting(self) -> int:
        """Config long-polls parked in this process right now (for /metrics)."""
        with self._lock:
            return sum(len(w) for w in self._waiters.values())

    def actions_seen(self, proxy_id: int) -> int:
        with self._lock:
            return self._actions.get(proxy_id, 0)

    async def wait_newer(self, proxy_id: int, than: int, timeout: float) -> bool:
        """Wait until a revision newer than `than` is known for the proxy, or an action is made for
        it; False on timeout."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        entry = (loop, fut)
        with self._lock:
            if self._latest.get(proxy_id, 0) > than:
                return True
            self._waiters.setdefault(proxy_id, set()).add(entry)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                waiting = self._waiters.get(proxy_id)
                if waiting is not None:
                    waiting.discard(entry)
                    if not waiting:
                        del self._waiters[proxy_id]

    # -- the watcher (one per process) -------------------------------------------------------
    async def ready(self) -> None:
        """Loaded from the database and watching it; the first caller starts both."""
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_future()
            try:
                await asyncio.to_thread(self._load)
            except BaseException as exc:
                self._ready.set_exception(exc)
                self._ready = None
                raise
            self._ready.set_result(None)
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        await asyncio.shield(self._ready)

    def _load(self) -> None:
        rows, keys, (last_action, open_), dns = _latest_rows(), _keys(), _open_actions(), _dns_proxies()
        with self._lock:
            self._keys, self._dns = keys, dns
        for _pk, proxy_id, number, body in rows:
            self.changed(proxy_id, number, body)
        self._last_rev = max((r[0] for r in rows), default=0)
        self._last_action = last_action
        for proxy_id in open_:
            self.action(proxy_id)
        _close_db()

    def _look(self) -> None:
        """What other processes added since the last look: revisions, actions, key changes."""
        rows = _latest_rows(self._last_rev)
        for pk, proxy_id, number, body in rows:
            self.changed(proxy_id, number, body)
            self._last_rev = max(self._last_rev, pk)
        for pk, proxy_id in _actions_after(self._last_action):
            self.action(proxy_id)
            self._last_action = max(self._last_action, pk)
        # the key hashes and which proxies have a DNS record too (two small queries): a key re-minted
        # or revoked elsewhere counts here from this look on; this process's own changes count at
        # once (key_changed, dns_changed)
        keys, dns = _keys(), _dns_proxies()
        with self._lock:
            self._keys, self._dns = keys, dns

    async def _watch(self) -> None:
        from django.db import connection

        woke = asyncio.Event()
        stop = threading.Event()
        listener = None
        if connection.vendor == "postgresql":
            loop = asyncio.get_running_loop()
            listener = threading.Thread(target=_listen, args=(loop, woke, stop), name="feed-listen", daemon=True)
            listener.start()
        recheck = PG_RECHECK if listener else SQLITE_RECHECK
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woke.wait(), recheck)
                woke.clear()
                try:
                    await asyncio.to_thread(self._look)
                except Exception:  # noqa: BLE001 - a database hiccup must not end the watching
                    log.exception("event=feed_look_failed")
        finally:
            stop.set()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _close_db() -> None:
    from django.db import connection

    connection.close()


def _listen(loop: asyncio.AbstractEventLoop, woke: asyncio.Event, stop: threading.Event) -> None:
    """LISTEN on a connection of its own; each NOTIFY sets `woke` on the loop (reconnects on loss)."""
    import psycopg
    from django.db import connection

    params = connection.get_connection_params()
    params = {k: v for k, v in params.items() if k in ("dbname", "user", "password", "host", "port", "sslmode")}
    while not stop.is_set():
        try:
            with psycopg.connect(**params, autocommit=True) as conn:
                conn.execute(f"LISTEN {CHANNEL}")
                loop.call_soon_threadsafe(woke.set)  # whatever happened while not listening
                while not stop.is_set():
                    for _ in conn.notifies(timeout=1.0):
                        loop.call_soon_threadsafe(woke.set)
        except (psycopg.Error, OSError) as exc:
            log.warning("event=feed_listen_lost error=%r", str(exc))
        except RuntimeError:  # the loop closed: the process is ending
            return
        stop.wait(1.0)


FEED = Feed()
