"""`proxyd run --workers N` (N > 1): a parent that serves nothing itself and supervises N worker
processes, each a standalone `proxyd run` (see docs/operations.md, "Workers").

- **Config fan-out.** The parent owns the config source: it validates the file once, writes the
  accepted config to `<state>/workers/config.json` and sends every worker SIGHUP, so every worker
  applies the same revision; an invalid file never reaches a worker (the parent logs why and the
  running revision stays). `/status` shows the revision each worker serves and `revision` only
  when all agree.
- **Listeners.** HTTP/TLS and XMPP listen in every worker, sharing each port with SO_REUSEPORT
  (the kernel spreads new connections over the workers). SIP, media and provisioning run in
  worker 0 only: their state (dialogs, transactions, media sessions and port pairs) must be seen
  by one process, and routing PBX-side messages to the owning worker is the next step.
- **Supervision.** A worker that exits is restarted after a backoff (0.5 s doubling to 30 s; back
  to 0.5 s after a worker ran 30 s). SIGTERM/SIGINT: every worker drains (its own
  `--drain-timeout`), then the parent exits; a second signal kills them. A worker ends itself
  when the parent dies (PDEATHSIG).
- **Status.** The parent answers on the usual control socket: per-worker state, pid, restarts
  and revision; per-service counters and gauges summed over the workers.

Managed mode (the manager agent) runs with one worker for now: `--workers` needs `--config`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxyd import __version__
from proxyd.admin import AdminServer, fetch_status
from proxyd.config import ConfigError, ProxyConfig, load_file
from proxyd.loop import loop_name
from proxyd.statedir import StateDir
from proxyd.tls import write_private

log = logging.getLogger("proxyd.workers")

#: services whose state one process must hold; they run in worker 0 only (see the module doc)
SINGLE_WORKER_SERVICES = frozenset({"sip", "media", "provisioning"})
BACKOFF_MIN, BACKOFF_MAX, HEALTHY_AFTER = 0.5, 30.0, 30.0
FILE_POLL_INTERVAL = 1.0
PR_SET_PDEATHSIG = 1


PARENT_ENV = "PFORTE_WORKER_PARENT"


def become_worker() -> None:
    """In a worker: end (SIGTERM: drain) when the parent dies, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    # compared with the pid the parent gave, not with 1: the parent may be a container's init
    if os.environ.get(PARENT_ENV) not in (None, str(os.getppid())):  # it died before the line above
        raise SystemExit(1)


def worker_services(worker: int, names: list[str]) -> list[str]:
    """The services worker `worker` runs, of those installed."""
    return names if worker == 0 else [n for n in names if n not in SINGLE_WORKER_SERVICES]


@dataclass
class Worker:
    id: int
    state: StateDir
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    restarts: int = 0
    backoff: float = BACKOFF_MIN
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def status(self) -> dict[str, Any] | None:
        try:
            code, body = fetch_status(self.state.control_socket, timeout=1.0)
        except OSError:
            return None
        return json.loads(body) if code == 200 else None


class Master:
    def __init__(self, state: StateDir, config: Path, n: int, worker_args: list[str], drain_timeout: float,
                 admin_tcp: tuple[str, int] | None = None):
        self.state, self.config_path, self.n = state.ensure(), config, n
        self.worker_args, self.drain_timeout, self.admin_tcp = worker_args, drain_timeout, admin_tcp
        self.dir = state.root / "workers"
        self.fanout = self.dir / "config.json"
        self.cfg: ProxyConfig | None = None
        self.last_error: str | None = None
        self.workers = [Worker(i, StateDir(self.dir / f"w{i}")) for i in range(n)]
        self.admin = AdminServer(self.status, self.ready_report)
        self.stopping = asyncio.Event()
        self.started_at = time.time()

    # -- config ----------------------------------------------------------------------------
    def load(self, source: str) -> bool:
        """Validate the file; fan an accepted, changed config out to the workers."""
        try:
            cfg = load_file(self.config_path)
        except ConfigError as exc:
            self.last_error = f"{source}: {exc}"
            for problem in exc.problems:
                log.error("event=config_invalid source=%s problem=%r", source, problem)
            if self.cfg is None and (last := self.state.load_last_good()) is not None:
                log.warning("event=serving_last_good revision=%d", last.revision)
                cfg = last
            else:
                return False
        if cfg == self.cfg:
            return False
        self.dir.mkdir(mode=0o700, exist_ok=True)
        tmp = self.fanout.with_suffix(".tmp")
        write_private(tmp, cfg.to_json())  # holds private keys: owner-only, as last-good is
        os.replace(tmp, self.fanout)
        self.state.save_last_good(cfg)
        self.cfg, self.last_error = cfg, None
        log.info("event=config_fanout source=%s revision=%d workers=%d", source, cfg.revision, self.n)
        for w in self.workers:
            if w.proc is not None and w.proc.returncode is None:
                w.proc.send_signal(signal.SIGHUP)
        return True

    async def watch(self) -> None:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        loop.add_signal_handler(signal.SIGHUP, wake.set)
        seen = _stamp(self.config_path)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), FILE_POLL_INTERVAL)
            hup, stamp = wake.is_set(), _stamp(self.config_path)
            wake.clear()
            if hup or stamp != seen:
                seen = stamp
                self.load("sighup" if hup else "file_changed")

    # -- workers ---------------------------------------------------------------------------
    async def supervise(self, w: Worker) -> None:
        w.state.ensure()
        certs = w.state.certs
        if not certs.is_symlink():  # every worker serves the certificates the parent's state dir has
            with contextlib.suppress(OSError):
                certs.rmdir()
            certs.symlink_to(self.state.certs)
        while not self.stopping.is_set():
            w.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "proxyd", "run", "--config", str(self.fanout), "--state-dir", str(w.state.root),
                "--admin", "off", "--drain-timeout", str(self.drain_timeout), "--worker", str(w.id),
                *self.worker_args, env={**os.environ, PARENT_ENV: str(os.getpid())})
            w.started = time.monotonic()
            log.info("event=worker_started worker=%d pid=%d", w.id, w.proc.pid)
            rc = await w.proc.wait()
            if self.stopping.is_set():
                break
            lived = time.monotonic() - w.started
            w.backoff = BACKOFF_MIN if lived >= HEALTHY_AFTER else min(w.backoff * 2, BACKOFF_MAX)
            w.restarts += 1
            log.error("event=worker_exited worker=%d pid=%d code=%s lived=%.1f restart_in=%.1f",
                      w.id, w.proc.pid, rc, lived, w.backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), w.backoff)

    async def shutdown(self) -> None:
        """SIGTERM every worker (each drains), wait for them, kill what outlives the drain."""
        log.info("event=shutdown workers=%d drain_timeout=%.1f", self.n, self.drain_timeout)
        running = [w.proc for w in self.workers if w.proc is not None and w.proc.returncode is None]
        for p in running:
            p.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), self.drain_timeout + 10)
        except TimeoutError:
            for p in running:
                if p.returncode is None:
                    p.kill()
            await asyncio.gather(*(p.wait() for p in running))
        await asyncio.gather(*(w.task for w in self.workers if w.task), return_exceptions=True)

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        if not self.load("startup"):
            raise SystemExit(1)
        await self.admin.start(self.state.control_socket, self.admin_tcp)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal)
        watcher = asyncio.create_task(self.watch())
        for w in self.workers:
            w.task = asyncio.create_task(self.supervise(w))
        await self.stopping.wait()
        watcher.cancel()
        await self.shutdown()
        await self.admin.close()
        with contextlib.suppress(FileNotFoundError):
            self.state.control_socket.unlink()
        log.info("event=stopped")

    def _on_stop_signal(self) -> None:
        if self.stopping.is_set():
            log.warning("event=forced_exit")
            for w in self.workers:
                if w.proc is not None and w.proc.returncode is None:
                    w.proc.kill()
            raise SystemExit(1)
        self.stopping.set()

    # -- status ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        seen = [(w, w.status()) for w in self.workers]
        workers = [{"id": w.id, "pid": w.proc.pid if w.proc else None, "restarts": w.restarts,
                    "state": "running" if st else ("stopped" if self.stopping.is_set() else "starting"),
                    "revision": st.get("revision") if st else None,
                    "services": sorted(st.get("services", {})) if st else []} for w, st in seen]
        revisions = {w["revision"] for w in workers}
        first = seen[0][1] or {}
        return {
            "version": __version__, "loop": loop_name(), "uptime": round(time.time() - self.started_at, 1),
            "state_dir": str(self.state.root), "proxy": first.get("proxy"), "enabled": first.get("enabled"),
            "certificate": first.get("certificate"),
            "revision": revisions.pop() if len(revisions) == 1 else None,
            "revision_wanted": self.cfg.revision if self.cfg else None,
            "last_error": self.last_error or first.get("last_error"),
            "workers": workers, "services": merge_services([st for _, st in seen if st]),
        }

    def ready_report(self) -> dict[str, Any]:
        st = self.status()
        reasons = [f"worker {w['id']}: {w['state']}, revision {w['revision']}" for w in st["workers"]
                   if w["state"] != "running" or w["revision"] != st["revision_wanted"]]
        if self.stopping.is_set():
            reasons.insert(0, "stopping: established connections are draining")
        out: dict[str, Any] = {"ready": not reasons, "revision": st["revision"]}
        if reasons:
            out["reasons"] = reasons
        return out


def merge_services(statuses: list[dict[str, Any]]) -> dict[str, Any]:
    """Per service over the workers: listeners once each, counters and gauges summed (a limit
    gauge is then the sum of per-worker limits), the worst state; histograms are not merged."""
    out: dict[str, Any] = {}
    rank = {"running": 0, "degraded": 1}
    for st in statuses:
        for name, svc in st.get("services", {}).items():
            m = out.setdefault(name, {"state": svc.get("state"), "listeners": [], "counters": {}, "gauges": {},
                                      "workers": 0})
            m["workers"] += 1
            if rank.get(svc.get("state"), 2) > rank.get(m["state"], 2):
                m["state"] = svc.get("state")
            m["listeners"] += [x for x in svc.get("listeners", []) if x not in m["listeners"]]
            for group in ("counters", "gauges"):
                for k, v in (svc.get(group) or {}).items():
                    if isinstance(v, int | float) and not isinstance(v, bool):
                        m[group][k] = m[group].get(k, 0) + v
            if svc.get("last_error"):
                m["last_error"] = svc["last_error"]
    return out


def _stamp(path: Path) -> tuple[float, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime, st.st_size)
