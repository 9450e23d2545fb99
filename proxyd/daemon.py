"""The running daemon: state dir, supervisor, admin endpoint, config source, signals.

Standalone mode takes its config from a file (re-read on SIGHUP and when the file changes).
Managed mode (no --config) gets it from the manager through `proxyd.agent`. Either way a new
config is validated first; an invalid one or one that fails to apply is logged and the running
config stays. The last applied config is kept in the state dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from proxyd import __version__, sdnotify
from proxyd.access import AccessList
from proxyd.admin import AdminServer
from proxyd.config import ConfigError, ProxyConfig, load_file
from proxyd.exposure import RESULT_FILE, degraded
from proxyd.loop import loop_name
from proxyd.service import Service, ServiceContext
from proxyd.statedir import StateDir
from proxyd.supervisor import ApplyError, ApplyReport, Supervisor, discover
from proxyd.tls import CertStore

log = logging.getLogger("proxyd")

FILE_POLL_INTERVAL = 1.0


class Running(Protocol):
    config: ProxyConfig | None

    def confirm(self, cfg: ProxyConfig) -> bool: ...


class AcmeDnsHolder(Protocol):
    acme_dns: Callable[[str, str, bool], None] | None


class ConfigHost(Protocol):
    """What a config source (`file_source`, the manager agent) needs of the process it feeds:
    a Daemon, or with `--workers` the parent (proxyd/workers.py), which fans configs out."""

    state: StateDir
    source_started: asyncio.Event
    started_at: float
    status_hooks: list[Callable[[], dict[str, Any]]]
    apply_listeners: list[Callable[[ProxyConfig | None, str | None], None]]

    @property
    def supervisor(self) -> Running: ...

    @property
    def ctx(self) -> AcmeDnsHolder: ...

    async def apply(self, cfg: ProxyConfig, source: str) -> object | None: ...

    def reject(self, source: str, exc: ConfigError) -> None: ...

    def status(self) -> dict[str, Any]: ...


class Daemon:
    def __init__(
        self,
        state: StateDir,
        *,
        admin_tcp: tuple[str, int] | None = None,
        drain_timeout: float = 10.0,
        classes: list[type[Service]] | None = None,
        reuse_port: bool = False,
        host_duties: bool = True,
    ):
        self.state = state.ensure()
        self.ctx = ServiceContext(state=state, certs=CertStore(state.certs), access=AccessList(), reuse_port=reuse_port)
        self.supervisor = Supervisor(self.ctx, classes if classes is not None else discover(), drain_timeout,
                                     host_duties)
        self.admin = AdminServer(self.status, self.ready_report)
        self.admin_tcp = admin_tcp
        self.started_at = time.time()
        self.stopping = asyncio.Event()
        #: set by the config source once its first step is done (the startup config applied or
        #: refused; managed: the last good one applied, or none there): then systemd hears READY=1
        self.source_started = asyncio.Event()
        self.status_hooks: list[Callable[[], dict[str, Any]]] = []
        self.apply_listeners: list[Callable[[ProxyConfig | None, str | None], None]] = []

    # -- config handling -----------------------------------------------------------------
    async def apply(self, cfg: ProxyConfig, source: str) -> ApplyReport | None:
        """Apply a validated config; on failure log it, keep the running one, return None."""
        try:
            report = await self.supervisor.apply(cfg)
        except ApplyError as exc:
            log.error("event=config_rejected source=%s revision=%d error=%s", source, cfg.revision, exc)
            for cb in self.apply_listeners:
                cb(None, str(exc))
            return None
        self.state.save_last_good(cfg)
        log.info(
            "event=config_applied source=%s revision=%d started=%s reconfigured=%s stopped=%s",
            source, cfg.revision, ",".join(report.started) or "-",
            ",".join(report.reconfigured) or "-", ",".join(report.stopped) or "-",
        )
        for cb in self.apply_listeners:
            cb(cfg, None)
        return report

    def reject(self, source: str, exc: ConfigError) -> None:
        self.supervisor.record_failure(f"{source}: {exc}")
        for problem in exc.problems:
            log.error("event=config_invalid source=%s problem=%r", source, problem)

    def status(self) -> dict[str, Any]:
        out = {
            "version": __version__,
            "loop": loop_name(),
            "uptime": round(time.time() - self.started_at, 1),
            "state_dir": str(self.state.root),
            **self.supervisor.status(),
        }
        for hook in self.status_hooks:
            out.update(hook())
        for name, why in degraded(self.state.read_json(RESULT_FILE), out.get("revision")).items():
            entry = out.get("services", {}).get(name)
            if entry is not None and entry.get("state") == "running":
                entry.update(state="degraded", degraded=why)
        return out

    def readiness(self) -> list[str]:
        """Why the proxy must not get traffic now (empty: ready); `/readyz` answers 503 with these."""
        if self.stopping.is_set():
            return ["stopping: established connections are draining"]
        return self.supervisor.readiness()

    def ready_report(self) -> dict[str, Any]:
        """What `/readyz` answers: ready, the revision served, and the reasons when not ready."""
        reasons, cfg = self.readiness(), self.supervisor.config
        out: dict[str, Any] = {"ready": not reasons, "revision": cfg.revision if cfg else None}
        if reasons:
            out["reasons"] = reasons
        return out

    def _systemd_status(self, *_: object) -> None:
        """`systemctl status` shows whether the proxy is ready and, if not, why."""
        r = self.ready_report()
        sdnotify.notify("STATUS=" + ("; ".join(r["reasons"]) if not r["ready"] else f"ready: revision {r['revision']}"))

    async def _announce_ready(self) -> None:
        await self.source_started.wait()
        self._systemd_status()
        sdnotify.notify("READY=1")
        self.apply_listeners.append(self._systemd_status)

    # -- lifecycle -----------------------------------------------------------------------
    async def serve(self, source: Callable[[ConfigHost], Any]) -> None:
        """Run until SIGTERM/SIGINT; `source` is a coroutine function feeding configs."""
        loop = asyncio.get_running_loop()
        await self.admin.start(self.state.control_socket, self.admin_tcp)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal)
        feeder = asyncio.create_task(source(self))
        stop_wait = asyncio.create_task(self.stopping.wait())
        helpers = [asyncio.create_task(self._announce_ready())]
        if (interval := sdnotify.watchdog_interval()) is not None:
            helpers.append(asyncio.create_task(sdnotify.watchdog(interval)))
        await asyncio.wait({feeder, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if feeder.done() and not stop_wait.done():
            stop_wait.cancel()
            feeder.result()  # a feeder that ends on its own has failed: surface it
        log.info("event=shutdown drain_timeout=%.1f", self.supervisor.drain_timeout)
        sdnotify.notify("STOPPING=1", "STATUS=stopping: established connections are draining")
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
        helpers[0].cancel()  # the watchdog keeps pinging while connections drain
        await self.supervisor.shutdown()
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        await self.admin.close()
        with contextlib.suppress(FileNotFoundError):
            self.state.control_socket.unlink()
        log.info("event=stopped")

    def _on_stop_signal(self) -> None:
        if self.stopping.is_set():
            # A second signal: the operator does not want to wait for draining.
            log.warning("event=forced_exit")
            raise SystemExit(1)
        self.stopping.set()


def file_source(path: Path) -> Callable[[ConfigHost], Any]:
    """Standalone mode: the config file, re-read on SIGHUP and when its contents change."""

    async def run(daemon: ConfigHost) -> None:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        loop.add_signal_handler(signal.SIGHUP, wake.set)
        seen = _stamp(path)
        await _load_and_apply(daemon, path, "startup")
        daemon.source_started.set()
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), FILE_POLL_INTERVAL)
            hup = wake.is_set()
            wake.clear()
            stamp = _stamp(path)
            if hup or stamp != seen:
                seen = stamp
                await _load_and_apply(daemon, path, "sighup" if hup else "file_changed")

    return run


def _stamp(path: Path) -> tuple[float, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime, st.st_size)


async def _load_and_apply(daemon: ConfigHost, path: Path, source: str) -> None:
    try:
        cfg = load_file(path)
    except ConfigError as exc:
        daemon.reject(source, exc)
        if daemon.supervisor.config is None:
            last = daemon.state.load_last_good()
            if last is not None:
                log.warning("event=serving_last_good revision=%d", last.revision)
                await daemon.apply(last, "last_good")
        return
    if daemon.supervisor.config is not None and cfg == daemon.supervisor.config:
        if daemon.supervisor.confirm(cfg):
            log.info("event=config_current source=%s revision=%d detail=%r", source, cfg.revision,
                     "the running config is the one asked for again; the failure before no longer stands")
        return
    await daemon.apply(cfg, source)
