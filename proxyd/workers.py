"""`proxyd run --workers N` (N > 1): a parent that serves no traffic itself and supervises N
worker processes, each a standalone `proxyd run` (see docs/operations.md, "Workers").

- **Config source in the parent.** The config file (standalone) or the manager agent (managed)
  lives in the parent only; workers read the parent's fan-out file. An accepted config is
  written to `<state>/workers/config.json` and every worker gets SIGHUP. The apply succeeds only
  when every worker reports it applied that file; when one refuses it (or does not answer within
  `APPLY_TIMEOUT`), the previous config is fanned out again, so all workers run the same
  revision, and the apply fails as a whole (the agent reports it to the manager as for one
  process). An invalid file never reaches a worker.
- **Listeners.** HTTP/TLS and XMPP listen in every worker, sharing each port with SO_REUSEPORT
  (the kernel spreads new connections over the workers). SIP, media and provisioning run in
  worker 0 only (docs/operations.md has the design for spreading them).
- **Supervision.** A worker that exits is restarted after a backoff (0.5 s doubling to 30 s; back
  to 0.5 s after a worker ran 30 s). SIGTERM/SIGINT: every worker drains (its own
  `--drain-timeout`), then the parent exits; a second signal kills them. A worker ends itself
  when the parent dies (PDEATHSIG). systemd hears READY/STATUS/STOPPING and the watchdog from
  the parent only.
- **Host duties in the parent, once.** The network config (netconf) is applied by the parent
  before a config is fanned out (so before any worker binds) and put back on a rollback; the one
  ACME renewer runs in the parent, its challenges and issued pair reach every worker through
  proxyd/workers_acme.py. Workers do neither (Supervisor host_duties=False).
- **Status.** The parent answers on the usual control socket: per-worker state, pid, restarts
  and revision; per service counters, gauges and histograms summed over the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proxyd import __version__, sdnotify
from proxyd.acme_client import AcmeError
from proxyd.acme_task import DEGRADED, AcmeRenewer, acme_spec
from proxyd.admin import AdminServer, fetch_status
from proxyd.config import ConfigError, Network, ProxyConfig
from proxyd.loop import loop_name
from proxyd.network import NetworkError, NetworkState
from proxyd.statedir import StateDir
from proxyd.supervisor import cert_addresses
from proxyd.tls import CertStore, write_private
from proxyd.workers_acme import WorkerFanout

log = logging.getLogger("proxyd.workers")

#: services whose state one process must hold; they run in worker 0 only (see the module doc)
SINGLE_WORKER_SERVICES = frozenset({"sip", "media", "provisioning"})
BACKOFF_MIN, BACKOFF_MAX, HEALTHY_AFTER = 0.5, 30.0, 30.0
#: how long a worker may take to apply a fanned-out config (start listeners, make a self-signed
#: certificate) before the apply counts as failed and is rolled back
APPLY_TIMEOUT = 30.0
PR_SET_PDEATHSIG = 1
PARENT_ENV = "PFORTE_WORKER_PARENT"
#: systemd talks to the parent only (NotifyAccess=main)
SYSTEMD_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


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

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)

    def status(self) -> dict[str, Any] | None:
        try:
            code, body = fetch_status(self.state.control_socket, timeout=1.0)
        except OSError:
            return None
        return json.loads(body) if code == 200 else None


@dataclass
class Applied:
    """What the parent has fanned out and every worker applied; the agent reads `config`."""
    config: ProxyConfig | None = None
    applied_at: float | None = None
    failed_at: float | None = None
    apply_failures: int = 0
    last_error: str | None = None

    def record_failure(self, message: str) -> None:
        self.last_error, self.failed_at = message, time.time()
        self.apply_failures += 1

    def confirm(self, cfg: ProxyConfig) -> bool:
        stale, self.last_error, self.applied_at = self.last_error is not None, None, time.time()
        return stale


@dataclass
class AgentContext:
    """The part of a ServiceContext the agent sets: DNS-01 through the manager, for the parent's
    renewer."""
    acme_dns: Callable[[str, str, bool], None] | None = None


class Master:
    """The parent; it offers the agent and `file_source` what a Daemon offers them."""

    def __init__(self, state: StateDir, n: int, why: str, worker_args: list[str], drain_timeout: float,
                 admin_tcp: tuple[str, int] | None = None):
        self.state, self.n, self.why = state.ensure(), n, why
        self.worker_args, self.drain_timeout, self.admin_tcp = worker_args, drain_timeout, admin_tcp
        self.dir = state.root / "workers"
        self.fanout = self.dir / "config.json"
        self.acme_file = self.dir / "acme.json"
        with contextlib.suppress(FileNotFoundError):  # a generation of an earlier run means nothing now
            self.acme_file.unlink()
        self.network = NetworkState()
        self.certs = CertStore(state.certs)  # no listener of its own: it makes the shared self-signed pair
        self.acme: AcmeRenewer | None = None
        self.supervisor = Applied()
        self.ctx = AgentContext()
        self.workers = [Worker(i, StateDir(self.dir / f"w{i}")) for i in range(n)]
        self.admin = AdminServer(self.status, self.ready_report)
        self.stopping = asyncio.Event()
        self.source_started = asyncio.Event()
        self.have_config = asyncio.Event()  # workers start once there is a config to give them
        self.status_hooks: list[Callable[[], dict[str, Any]]] = []
        self.apply_listeners: list[Callable[[ProxyConfig | None, str | None], None]] = []
        self.started_at = time.time()
        self._lock = asyncio.Lock()

    # -- config ----------------------------------------------------------------------------
    async def apply(self, cfg: ProxyConfig, source: str) -> ProxyConfig | None:
        """Fan `cfg` out and wait for every worker; on a refusal fan the previous config out
        again. Returns cfg when all applied it, None when it failed (logged, reported)."""
        async with self._lock:
            previous = self.supervisor.config
            # before any worker binds: an address the network part adds must exist first
            error = await self._network(cfg.network) or self._self_signed(cfg)
            if error is None:
                error = await self._fan_out(cfg)
                if error is not None and previous is not None:
                    log.warning("event=config_rollback revision=%d back_to=%d", cfg.revision, previous.revision)
                    if (again := await self._fan_out(previous)) is not None:
                        log.error("event=rollback_failed revision=%d error=%s", previous.revision, again)
                if error is not None and previous is not None and (back := await self._network(previous.network)):
                    log.error("event=rollback_failed revision=%d error=%s", previous.revision, back)
            if error is not None:
                self.supervisor.record_failure(f"revision {cfg.revision}: {error}")
                log.error("event=config_rejected source=%s revision=%d error=%s", source, cfg.revision, error)
                for cb in self.apply_listeners:
                    cb(None, error)
                return None
            self.state.save_last_good(cfg)
            self.supervisor.config, self.supervisor.applied_at, self.supervisor.last_error = cfg, time.time(), None
            self._follow_acme(cfg)
            log.info("event=config_applied source=%s revision=%d workers=%d", source, cfg.revision, self.n)
            for cb in self.apply_listeners:
                cb(cfg, None)
            return cfg

    def reject(self, source: str, exc: ConfigError) -> None:
        self.supervisor.record_failure(f"{source}: {exc}")
        for problem in exc.problems:
            log.error("event=config_invalid source=%s problem=%r", source, problem)

    async def _network(self, net: Network) -> str | None:
        try:
            await self.network.apply(net)
        except NetworkError as exc:
            return f"network: {exc}"
        return None

    def _self_signed(self, cfg: ProxyConfig) -> str | None:
        """Make the self-signed pair a worker falls back to (no certificate configured, ACME not yet
        issued) here, once: workers that each made their own would serve different ones."""
        if cfg.tls.certificate_pem and cfg.tls.key_pem:
            return None
        try:
            self.certs.use(None, None, cfg.proxy.fqdn, cert_addresses(cfg), cfg.tls.key_type)
        except (OSError, ValueError) as exc:
            return f"tls: {exc}"
        return None

    def _follow_acme(self, cfg: ProxyConfig) -> None:
        """The one renewer, in the parent, to match an applied cfg (as Supervisor._follow_acme)."""
        spec = acme_spec(cfg)
        if spec is None:
            if self.acme is not None:
                asyncio.get_running_loop().create_task(self.acme.stop())
                self.acme = None
        elif self.acme is None:
            fan = WorkerFanout(self.acme_file, self.workers, asyncio.get_running_loop())
            self.acme = AcmeRenewer(self.state.root / "acme", fan, spec, fan.tokens, self._acme_dns, fan, "parent")
            self.acme.start()
        else:
            self.acme.update(spec)

    def _acme_dns(self, name: str, value: str, present: bool) -> None:
        if self.ctx.acme_dns is None:
            raise AcmeError("DNS-01 needs the manager (it holds the DNS account): this proxyd runs unmanaged")
        self.ctx.acme_dns(name, value, present)

    async def _fan_out(self, cfg: ProxyConfig) -> str | None:
        """Write cfg for the workers, wake them, wait for each; the first refusal, or None."""
        self.dir.mkdir(mode=0o700, exist_ok=True)
        asked = time.time()
        tmp = self.fanout.with_suffix(".tmp")
        write_private(tmp, cfg.to_json())  # holds private keys: owner-only, as last-good is
        os.replace(tmp, self.fanout)
        self.have_config.set()
        log.info("event=config_fanout revision=%d workers=%d", cfg.revision, self.n)
        for w in self.workers:
            if w.alive():
                assert w.proc is not None
                w.proc.send_signal(signal.SIGHUP)
        results = await asyncio.gather(*(self._outcome(w, asked, cfg.revision) for w in self.workers))
        return next((r for r in results if r is not None), None)

    async def _outcome(self, w: Worker, asked: float, revision: int) -> str | None:
        """None once worker `w` applied the file written at `asked`; else why not. A worker
        that is (re)starting reads the file when it starts and is waited for the same way."""
        deadline = time.monotonic() + APPLY_TIMEOUT
        while time.monotonic() < deadline and not self.stopping.is_set():
            st = await asyncio.to_thread(w.status)
            if st is not None:
                if (st.get("failed_at") or 0) >= asked:
                    return f"worker {w.id}: {st.get('last_error')}"
                if st.get("revision") == revision and (st.get("applied_at") or 0) >= asked:
                    return None
            await asyncio.sleep(0.05)
        return f"worker {w.id}: revision {revision} not applied within {APPLY_TIMEOUT:g} s"

    # -- workers ---------------------------------------------------------------------------
    async def supervise(self, w: Worker) -> None:
        w.state.ensure()
        # every worker serves the certificates the parent's state dir has, the issued one included
        (self.state.root / "acme").mkdir(mode=0o700, exist_ok=True)
        for mine, parents in ((w.state.certs, self.state.certs), (w.state.root / "acme", self.state.root / "acme")):
            if not mine.is_symlink():
                if mine.is_dir():  # an earlier version's own renewer state: the parent's replaces it
                    shutil.rmtree(mine)
                mine.symlink_to(parents)
        env = {k: v for k, v in os.environ.items() if k not in SYSTEMD_ENV} | {PARENT_ENV: str(os.getpid())}
        await self.have_config.wait()
        while not self.stopping.is_set():
            w.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "proxyd", "run", "--config", str(self.fanout), "--state-dir", str(w.state.root),
                "--admin", "off", "--drain-timeout", str(self.drain_timeout), "--workers", "1",
                "--worker", str(w.id), "--acme-fanout", str(self.acme_file), *self.worker_args, env=env)
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
        if self.acme is not None:
            await self.acme.stop()
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
        for w in self.workers:
            if w.task is not None:
                w.task.cancel()
        await asyncio.gather(*(w.task for w in self.workers if w.task), return_exceptions=True)

    async def serve(self, source: Callable[[Master], Any]) -> None:
        """Run until SIGTERM/SIGINT; `source` feeds configs (daemon.file_source or the agent's)."""
        loop = asyncio.get_running_loop()
        await self.admin.start(self.state.control_socket, self.admin_tcp)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal)
        feeder = asyncio.create_task(source(self))
        for w in self.workers:
            w.task = asyncio.create_task(self.supervise(w))
        helpers = [asyncio.create_task(self._announce_ready())]
        if (interval := sdnotify.watchdog_interval()) is not None:
            helpers.append(asyncio.create_task(sdnotify.watchdog(interval)))
        stop_wait = asyncio.create_task(self.stopping.wait())
        await asyncio.wait({feeder, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if feeder.done() and not stop_wait.done():
            stop_wait.cancel()
            feeder.result()  # a feeder that ends on its own has failed: surface it
        sdnotify.notify("STOPPING=1", "STATUS=stopping: established connections are draining")
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder  # the agent says goodbye to the manager
        await self.shutdown()
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        await self.admin.close()
        with contextlib.suppress(FileNotFoundError):
            self.state.control_socket.unlink()
        log.info("event=stopped")

    async def _announce_ready(self) -> None:
        await self.source_started.wait()
        self._systemd_status()
        sdnotify.notify("READY=1")
        self.apply_listeners.append(self._systemd_status)

    def _systemd_status(self, *_: object) -> None:
        r = self.ready_report()
        sdnotify.notify("STATUS=" + ("; ".join(r.get("reasons", [])) if not r["ready"]
                                     else f"ready: revision {r['revision']}, {self.n} workers"))

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
        up = [st for _, st in seen if st]
        first = seen[0][1] or {}
        applied = self.supervisor
        refused: dict[str, int] = {}
        for st in up:
            _add_numbers(refused, st.get("access_refused") or {})
        out = {
            "version": __version__, "loop": loop_name(), "uptime": round(time.time() - self.started_at, 1),
            "state_dir": str(self.state.root), "proxy": first.get("proxy"), "enabled": first.get("enabled"),
            "worker_count": self.n, "workers_why": self.why,
            "revision": revisions.pop() if len(revisions) == 1 else None,
            "revision_wanted": applied.config.revision if applied.config else None,
            "applied_at": applied.applied_at, "failed_at": applied.failed_at,
            "apply_failures": applied.apply_failures,
            "last_error": applied.last_error or first.get("last_error"),
            # one certificate store (the workers' certs/ is the parent's)
            **{k: first.get(k) for k in ("certificate", "certificates")},
            "acme": self.acme.status() if self.acme else None, "network": self.network.last_result,
            "degraded": sorted({d for st in up for d in st.get("degraded") or []} | set(self._acme_degraded())),
            "access_refused": refused,
            "workers": workers, "services": merge_services(up),
        }
        for hook in self.status_hooks:
            out.update(hook())
        return out

    def _acme_degraded(self) -> list[str]:
        if self.acme is None or not self.acme.status()["degraded"]:
            return []
        return [DEGRADED]

    def ready_report(self) -> dict[str, Any]:
        st = self.status()
        wanted = st["revision_wanted"]
        reasons = [] if wanted is not None else ["no configuration applied yet"]
        reasons += [f"worker {w['id']}: {w['state']}, revision {w['revision']}" for w in st["workers"]
                    if wanted is not None and (w["state"] != "running" or w["revision"] != wanted)]
        if self.stopping.is_set():
            reasons.insert(0, "stopping: established connections are draining")
        out: dict[str, Any] = {"ready": not reasons, "revision": st["revision"]}
        if reasons:
            out["reasons"] = reasons
        return out


def merge_services(statuses: list[dict[str, Any]]) -> dict[str, Any]:
    """Per service over the workers: listeners once each, the worst state; counters, gauges,
    per-instance/per-reason tables and histogram buckets summed. A summed limit gauge is the sum
    of per-worker limits, which is what the workers together hold."""
    out: dict[str, Any] = {}
    rank = {"running": 0, "degraded": 1}
    for st in statuses:
        for name, svc in st.get("services", {}).items():
            m = out.setdefault(name, {"state": svc.get("state"), "listeners": [], "workers": 0})
            m["workers"] += 1
            if rank.get(svc.get("state"), 2) > rank.get(m["state"], 2):
                m["state"] = svc.get("state")
            m["listeners"] += [x for x in svc.get("listeners", []) if x not in m["listeners"]]
            for key, value in svc.items():
                if key == "histograms":
                    hs = m.setdefault("histograms", {})
                    for hname, h in value.items():
                        hs[hname] = merge_histogram(hs[hname], h) if hname in hs else h
                elif isinstance(value, dict):
                    _add_numbers(m.setdefault(key, {}), value)
            if svc.get("last_error"):
                m["last_error"] = svc["last_error"]
    return out


def merge_histogram(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two cumulative histograms with the same bounds as one (bounds differ: a version skew
    between workers; then the first is kept rather than a wrong sum shown)."""
    if [le for le, _ in a["buckets"]] != [le for le, _ in b["buckets"]]:
        return a
    return {"buckets": [[le, x + y] for (le, x), (_, y) in zip(a["buckets"], b["buckets"], strict=True)],
            "sum": a["sum"] + b["sum"], "count": a.get("count", 0) + b.get("count", 0)}


def _add_numbers(into: dict[str, Any], src: dict[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, bool):
            into.setdefault(k, v)
        elif isinstance(v, int | float):
            into[k] = into.get(k, 0) + v
        elif isinstance(v, dict):
            _add_numbers(into.setdefault(k, {}), v)
