"""Changes that reach every proxy, published off the request that made them.

An instance saved, deleted or exposed to other proxies changes the config of every proxy: one
revision per proxy (`compiler.publish_many`), seconds of work at 10,000 proxies. Under `serve`
the admin's request only asks for it (`request()`, after its commit) and returns; one thread per
manager process publishes. Asks that come while it publishes are one more run, not one each: a
burst of edits costs one publish after the one under way.

The thread runs only in a serving process (started at ASGI lifespan startup). Anywhere else (the
admin CLI, a shell, tests through Django's client) `running` is False and the caller publishes
inline, as before. The request writes a `PendingPublish` row with its change (one row, whatever
the number of proxies); the publish deletes the rows it covers in its own transaction, and a thread
that starts and finds one left (the process that saved it ended before publishing) publishes.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("manager.publisher")

# after an ask, wait this long before reading the proxies: a form saves the instance and then its
# proxies (two asks, milliseconds apart) and one publish then covers both
SETTLE = 0.05


class Publisher:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._asked = False
        self._busy = False
        self._runs = 0
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def runs(self) -> int:
        """Publishes finished since the start (the one at start included)."""
        with self._cond:
            return self._runs

    def start(self) -> None:
        """Start the thread (once per process); it publishes at once if a change is owed."""
        with self._cond:
            if self.running:
                return
            self._asked = True  # the first run looks for PendingPublish rows, and publishes if it finds one
            self._thread = threading.Thread(target=self._loop, name="publisher", daemon=True)
            self._thread.start()

    def request(self) -> None:
        """Publish every proxy soon (call after the change is committed)."""
        with self._cond:
            self._asked = True
            self._cond.notify()

    def idle(self, timeout: float) -> bool:
        """Wait until nothing is asked or being published; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._asked or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _loop(self) -> None:
        from django.db import close_old_connections

        while True:
            with self._cond:
                while not self._asked:
                    self._cond.wait()
            time.sleep(SETTLE)
            with self._cond:
                self._asked, self._busy = False, True
            started = time.monotonic()
            try:
                close_old_connections()  # this thread's kept connection, if it broke or aged (no request cycle here)
                if publish_all(only_owed=True):
                    log.info("event=publish_committed seconds=%.3f", time.monotonic() - started)
            except Exception:  # noqa: BLE001 - the next ask (or the next start) publishes again
                log.exception("event=publish_failed")
                with self._cond:
                    self._asked = True  # try again: the change is committed and owed to the proxies
                time.sleep(1.0)
            finally:
                with self._cond:
                    self._busy = False
                    self._runs += 1
                    self._cond.notify_all()


def publish_all(only_owed: bool = False) -> int:
    """A new revision for every proxy whose config changed; `only_owed`: only if a `PendingPublish`
    row says a change waits (they are deleted with the publish)."""
    from django.apps import apps
    from django.db import transaction

    from manager.proxies.compiler import publish_many

    pending = apps.get_model("proxies", "PendingPublish").objects
    if only_owed and not pending.exists():
        return 0
    with transaction.atomic():
        # read under the lock: a proxy saved between an unlocked read and the publish would get a
        # revision made from its fields as they were before (its own newer revision overwritten)
        proxies = list(apps.get_model("proxies", "Proxy").objects.select_for_update(no_key=True))
        # the asks this publish covers, read after the lock: another process's publish that held it
        # has deleted those it covered; one written after this read is the next publish's
        owed = pending.order_by("-pk").values_list("pk", flat=True).first()
        if only_owed and owed is None:
            return 0
        made = publish_many(proxies)
        if owed is not None:
            pending.filter(pk__lte=owed).delete()
        return made


PUBLISHER = Publisher()
