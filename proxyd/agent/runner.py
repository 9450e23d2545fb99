"""The agent loop inside `proxyd run` (managed mode).

Two tasks share one `Agent`: the poller long-polls the manager for new revisions, validates and
applies them; the heartbeat task reports the applied revision and service states every interval,
right after start and right after every apply. Until the manager answers, the last good config
from the state dir is served. An unreachable manager means retry with backoff (logged once per
state change); a revoked key (401) stops all requests while the proxy keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proxyd import __version__
from proxyd.agent import acme_dns
from proxyd.agent.actions import ActionRunner
from proxyd.agent.backoff import Backoff
from proxyd.agent.client import BadAnswer, ManagerClient, ManagerError, Unauthorized, revision_from_etag
from proxyd.agent.state import AgentState, load
from proxyd.config import ConfigError, ProxyConfig, loads

if TYPE_CHECKING:
    from proxyd.daemon import ConfigHost

log = logging.getLogger("proxyd.agent")

REPEAT_PAUSE = 1.0  # seconds before asking again after the manager resent the same body

CONNECTING, ONLINE, UNREACHABLE, REVOKED = "connecting", "online", "unreachable", "revoked"


@dataclass(frozen=True)
class AgentOptions:
    heartbeat_interval: float = 60.0
    poll_wait: float = 55.0
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    # the heartbeat after applying a config waits a random moment up to this: a change reaches
    # every proxy at once, and their reports then arrive spread instead of in one burst
    applied_heartbeat_jitter: float = 3.0


class Agent:
    def __init__(self, daemon: ConfigHost, agent: AgentState, opts: AgentOptions):
        self.daemon = daemon
        self.agent = agent
        self.opts = opts
        self.client = ManagerClient(agent)
        self.backoff = Backoff(opts.backoff_base, opts.backoff_max)
        # the heartbeat's own retry pace: a config long-poll sent to a manager that just came back
        # waits there (the proxy has its revision) and says nothing until the wait ends, so the
        # heartbeat is what tells the manager, within backoff_max, that this proxy is back
        self.heartbeat_backoff = Backoff(opts.backoff_base, opts.backoff_max)
        self.state = CONNECTING
        self.state_reason = ""
        self.last_contact: float | None = None
        self.offered_revision: int | None = None
        self.last_error: str | None = None
        self.heartbeat_due = asyncio.Event()
        self.heartbeats = 0
        self.last_heartbeat: float | None = None  # when the manager last accepted one
        self.revoked = asyncio.Event()
        self._last_body: bytes | None = None
        self._bad: dict[str, str] = {}  # request kind -> reason its answer was last refused for
        self.actions = ActionRunner(daemon.state, self.client, self._enabled)
        daemon.status_hooks.append(self.status)
        daemon.apply_listeners.append(self._on_apply)

    # -- state ---------------------------------------------------------------------------
    def set_state(self, state: str, reason: str = "") -> None:
        """Log only transitions, never every failed retry."""
        if state == ONLINE:
            self.last_contact = time.time()
            self.backoff.reset()
        if state == self.state:
            return
        previous, self.state, self.state_reason = self.state, state, reason
        level = logging.INFO if state == ONLINE else logging.WARNING
        log.log(level, "event=manager_state state=%s previous=%s url=%s reason=%r",
                state, previous, self.agent.manager_url, reason)
        if state == ONLINE:
            self.heartbeat_due.set()  # tell the manager at once that we are back
        if state == REVOKED:
            self.revoked.set()

    def status(self) -> dict[str, Any]:
        return {"manager": {
            "url": self.agent.manager_url,
            "proxy_id": self.agent.proxy_id,
            "state": self.state,
            "reason": self.state_reason or None,
            "last_contact": _iso(self.last_contact),
            "last_heartbeat": _iso(self.last_heartbeat),
            # seconds since epoch, for /metrics (the ISO forms above are for people)
            "last_contact_at": self.last_contact,
            "last_heartbeat_at": self.last_heartbeat,
            "offered_revision": self.offered_revision,
            "last_error": self.last_error,
            "heartbeats": self.heartbeats,
        }}

    def _enabled(self) -> bool:
        cfg = self.daemon.supervisor.config
        return bool(cfg and cfg.proxy.enabled)

    def _on_apply(self, cfg: ProxyConfig | None, error: str | None) -> None:
        if cfg is None:
            self.last_error = error
        jitter = random.uniform(0, self.opts.applied_heartbeat_jitter)
        asyncio.get_running_loop().call_later(jitter, self.heartbeat_due.set)

    # -- tasks ---------------------------------------------------------------------------
    async def run(self) -> None:
        # DNS-01 TXT records through the manager's DNS account (proxyd/agent/acme_dns.py)
        self.daemon.ctx.acme_dns = acme_dns.blocking(self.client, asyncio.get_running_loop())
        last = self.daemon.state.load_last_good()
        if last is not None:
            log.info("event=serving_last_good revision=%d", last.revision)
            await self.daemon.apply(last, "last_good")
        else:
            log.warning("event=no_last_good detail=%r", "nothing is served until the manager sends a config")
        # started as far as systemd is concerned: a manager that is down must not block the boot
        # (/readyz says "no configuration applied yet" until one arrives)
        self.daemon.source_started.set()
        tasks = [asyncio.create_task(self.poll_loop()), asyncio.create_task(self.heartbeat_loop())]
        try:
            # The loops end only on a revoked key; then both stop (no request in flight may still
            # apply a config) and the running config is served until the daemon is stopped.
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()  # a loop that died of a bug must surface, not leave a silent proxy
            await self.revoked.wait()
            for t in tasks:
                t.cancel()
            await asyncio.Event().wait()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            if not self.revoked.is_set():
                try:
                    await self.client.goodbye()
                except (ManagerError, Unauthorized) as exc:
                    log.info("event=goodbye_failed detail=%r", str(exc))
            await self.client.close()

    def _etag(self) -> str | None:
        cfg = self.daemon.supervisor.config
        rev = self.offered_revision if self.offered_revision is not None else (cfg.revision if cfg else None)
        return f'"{rev}"' if rev is not None else None

    async def poll_loop(self) -> None:
        while self.state != REVOKED:
            try:
                answer = await self.client.fetch_config(self._etag(), self.opts.poll_wait)
            except Unauthorized as exc:
                self.set_state(REVOKED, str(exc))
                return
            except BadAnswer as exc:
                self.bad_answer("config", str(exc))
                await asyncio.sleep(self.backoff.next())
                continue
            except ManagerError as exc:
                self.set_state(UNREACHABLE, str(exc))
                await asyncio.sleep(self.backoff.next())
                continue
            if answer.body is not None and answer.body == self._last_body:
                # A manager that ignores If-None-Match must not turn the long poll into a busy loop.
                await asyncio.sleep(max(REPEAT_PAUSE, self.backoff.next()))
                continue
            self.set_state(ONLINE)
            if answer.actions:
                # before the config: restored files must be in place when it switches the proxy on
                await self.actions.run(answer.actions)
            if answer.body is None:
                self.good_answer("config")
                continue
            self._last_body = answer.body
            if await self.handle_config(answer.body, revision_from_etag(answer.etag)):
                self.good_answer("config")
            else:
                await asyncio.sleep(self.backoff.next())

    def bad_answer(self, kind: str, reason: str) -> None:
        """An answer we do not take: the running config stays; logged once while the reason is the same."""
        self.last_error = f"manager answer refused: {kind}: {reason}"
        if self._bad.get(kind) != reason:
            log.error("event=manager_answer_refused url=%s request=%s reason=%r", self.agent.manager_url, kind, reason)
        self._bad[kind] = reason
        self.heartbeat_due.set()

    def good_answer(self, kind: str) -> None:
        if self._bad.pop(kind, None) is not None and (self.last_error or "").startswith(
                f"manager answer refused: {kind}:"):
            self.last_error = None

    async def handle_config(self, body: bytes, etag_revision: int | None) -> bool:
        """Validate and apply a revision; False (and `last_error`) when it was refused."""
        try:
            cfg = loads(body, source="manager")
        except ConfigError as exc:
            self.offered_revision = etag_revision
            self.last_error = f"revision {etag_revision}: " + "; ".join(exc.problems)[:2000]
            self.daemon.reject("manager", exc)
            self.heartbeat_due.set()
            return False
        self.offered_revision = cfg.revision
        running = self.daemon.supervisor.config
        if running is not None and cfg == running:
            return True
        if await self.daemon.apply(cfg, "manager") is not None:
            self.last_error = None
        return True

    async def heartbeat_loop(self) -> None:
        while self.state != REVOKED:
            self.heartbeat_due.clear()
            pause = self.opts.heartbeat_interval
            try:
                answer = await self.client.heartbeat(self.heartbeat_body())
            except Unauthorized as exc:
                self.set_state(REVOKED, str(exc))
                return
            except BadAnswer as exc:
                self.bad_answer("heartbeat", str(exc))
            except ManagerError as exc:
                # the poller owns the state and its logging; a failed heartbeat is tried again sooner
                log.debug("event=heartbeat_failed error=%r", str(exc))
                pause = min(pause, self.heartbeat_backoff.next())
            else:
                self.heartbeat_backoff.reset()
                self.good_answer("heartbeat")
                self.heartbeats += 1
                self.last_heartbeat = time.time()
                self.set_state(ONLINE)
                log.debug("event=heartbeat_ok active_revision=%s", answer.get("active_revision"))
                await self.actions.run(_heartbeat_actions(answer))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.heartbeat_due.wait(), pause)

    def heartbeat_body(self) -> dict[str, Any]:
        st = self.daemon.status()  # the daemon's view: services include a failing exposure self-test (degraded)
        cfg = self.daemon.supervisor.config
        return {
            "applied_revision": cfg.revision if cfg else None,
            "version": __version__,
            "uptime": round(time.time() - self.daemon.started_at, 1),
            "services": st["services"],
            "network": st.get("network"),
            "last_error": self.last_error or st.get("last_error"),
            # per name: issuer, expiry, last renewal attempt and its error; why Degraded
            "certificate": {k: st.get(k) for k in ("certificates", "acme", "degraded")},
        }


def _heartbeat_actions(answer: dict[str, Any]) -> list[tuple[str, int]]:
    items = answer.get("actions")
    if not isinstance(items, list):
        return []
    return [(str(a["kind"]), int(a["id"])) for a in items
            if isinstance(a, dict) and isinstance(a.get("id"), int) and "kind" in a]


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def manager_source(opts: AgentOptions | None = None) -> Callable[[ConfigHost], Any]:
    """The config source for managed mode; needs a registered state dir (`proxyd register`)."""
    options = opts or AgentOptions()

    async def run(daemon: ConfigHost) -> None:
        agent = load(daemon.state)
        if agent is None:
            raise RuntimeError(f"{daemon.state.root} is not registered: run `proxyd register` first")
        await Agent(daemon, agent, options).run()

    return run
