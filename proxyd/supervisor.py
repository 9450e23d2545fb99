"""The supervisor: turns a new ProxyConfig into start/reconfigure/stop calls on services.

One apply at a time (a lock). For every service class the new view is compared with the running
one; unchanged services are not touched. Removed services stop first so that their ports are
free, then changed ones reconfigure, then new ones start. If any step fails, the services already
changed are put back on their previous views and the error is reported: the last good config
keeps running.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from proxyd.acme_task import DEGRADED, AcmeRenewer, acme_spec, kept_pair
from proxyd.config import ProxyConfig
from proxyd.network import NetworkError, NetworkState
from proxyd.service import Service, ServiceContext, ServiceError

log = logging.getLogger("proxyd.supervisor")

ENTRY_POINT_GROUP = "pforte.services"


def discover() -> list[type[Service]]:
    """Service classes registered under the `pforte.services` entry-point group."""
    found = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Service)):
            raise TypeError(f"entry point {ep.name} = {ep.value} is not a Service subclass")
        found.append(cls)
    return sorted(found, key=lambda c: (c.order, c.name))


class ApplyError(RuntimeError):
    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


@dataclass
class ApplyReport:
    revision: int
    started: list[str] = field(default_factory=list)
    reconfigured: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


class Supervisor:
    def __init__(self, ctx: ServiceContext, classes: Iterable[type[Service]], drain_timeout: float = 10.0,
                 host_duties: bool = True):
        """host_duties: this process applies the network config and runs the ACME renewer; a worker
        of `--workers N` does not (its parent does both once, proxyd/workers.py), it serves the
        issued pair it finds in its acme/ directory (the parent's)."""
        self.ctx = ctx
        self.host_duties = host_duties
        self.classes = list(classes)
        self.drain_timeout = drain_timeout
        self.running: dict[str, Service] = {}
        self.views: dict[str, Hashable] = {}
        self.config: ProxyConfig | None = None
        self.applied_at: float | None = None
        self.last_error: str | None = None
        self.failed_at: float | None = None  # when a config was last rejected or failed to apply
        self.apply_failures = 0
        #: services whose start failed in the last apply that tried them: name -> message
        self.failed: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self.network = NetworkState()
        self.acme: AcmeRenewer | None = None
        ctx.lookup = self.running.get

    async def apply(self, cfg: ProxyConfig) -> ApplyReport:
        """Apply `cfg` or raise ApplyError with per-service messages, leaving the old state."""
        async with self._lock:
            try:
                report = await self._apply(cfg)
            except ApplyError as exc:
                self.record_failure(f"revision {cfg.revision}: {exc}")
                raise
            self.config, self.applied_at, self.last_error = cfg, time.time(), None
            for svc in self.running.values():
                svc.last_error = None  # every service now runs this revision's view
            # only now: an apply that fails (and rolls back) must not leave a renewer running or changed
            if self.host_duties:
                self._follow_acme(cfg)
            return report

    def confirm(self, cfg: ProxyConfig) -> bool:
        """`cfg` was asked for again and equals the running config: nothing to apply, but it is
        applied as of now, and a failure of a config asked for in between no longer stands (the
        operator put the file back). True when there was such a failure to clear."""
        assert cfg == self.config
        stale = self.last_error is not None or any(s.last_error for s in self.running.values())
        self.applied_at, self.last_error = time.time(), None
        for svc in self.running.values():
            svc.last_error = None
        for cls in self.classes:
            if cls.name in self.failed and cls.view(cfg) is None:
                del self.failed[cls.name]
        return stale

    def record_failure(self, message: str) -> None:
        """A config was rejected (invalid) or failed to apply; the running one stays."""
        self.last_error, self.failed_at = message, time.time()
        self.apply_failures += 1

    async def _apply(self, cfg: ProxyConfig) -> ApplyReport:
        await self._apply_shared(cfg)
        new_views: dict[str, Hashable | None] = {}
        for cls in self.classes:
            new_views[cls.name] = cls.view(cfg) if cfg.proxy.enabled else None
        report = ApplyReport(cfg.revision)
        to_stop = [n for n in self.running if new_views.get(n) is None]
        to_change = [n for n in self.running if n not in to_stop and new_views[n] != self.views[n]]
        to_start = [c for c in self.classes if c.name not in self.running and new_views[c.name] is not None]
        report.unchanged = [n for n in self.running if n not in to_stop and n not in to_change]

        old_views = dict(self.views)
        for name in reversed(to_stop):
            await self._stop(name)
            report.stopped.append(name)
        for name in [n for n in self.failed if new_views.get(n) is None]:
            del self.failed[name]  # no longer asked to run
        errors: dict[str, str] = {}
        done: list[str] = []
        for name in to_change:
            svc = self.running[name]
            try:
                await svc.reconfigure(new_views[name])
            except Exception as exc:  # noqa: BLE001 - every failure is reported per service
                errors[name] = _describe(exc)
                svc.last_error = f"revision {cfg.revision}: {errors[name]}"  # it keeps its old view
                break
            svc.last_error = None
            self.views[name] = new_views[name]
            done.append(name)
            report.reconfigured.append(name)
        if not errors:
            for cls in to_start:
                svc = cls(self.ctx)
                try:
                    await svc.start(new_views[cls.name])
                except Exception as exc:  # noqa: BLE001
                    errors[cls.name] = _describe(exc)
                    self.failed[cls.name] = f"revision {cfg.revision}: {errors[cls.name]}"
                    await _quiet_stop(svc)
                    break
                self.failed.pop(cls.name, None)
                self.running[cls.name] = svc
                self.views[cls.name] = new_views[cls.name]
                report.started.append(cls.name)
        if errors:
            await self._rollback(report, done, old_views)
            raise ApplyError(errors)
        for name, verb in [(n, "started") for n in report.started] + [
            (n, "reconfigured") for n in report.reconfigured
        ] + [(n, "stopped") for n in report.stopped]:
            log.info("event=service_%s service=%s revision=%d", verb, name, cfg.revision)
        return report

    async def _apply_shared(self, cfg: ProxyConfig) -> None:
        """Things every service shares: the network (before anything binds), certificate, allow-list."""
        try:
            if self.host_duties:
                await self.network.apply(cfg.network)
        except NetworkError as exc:
            raise ApplyError({"network": str(exc)}) from exc
        addresses = cert_addresses(cfg)
        cert, key = cfg.tls.certificate_pem, cfg.tls.key_pem
        spec = acme_spec(cfg)
        if spec is not None:
            # the issued pair while it is valid; self-signed until the CA has answered
            cert, key = kept_pair(self.ctx.state.root / "acme", spec) or (None, None)
        try:
            self.ctx.certs.use(cert, key, cfg.proxy.fqdn, addresses, cfg.tls.key_type)
        except (OSError, ValueError) as exc:
            raise ApplyError({"tls": _describe(exc)}) from exc
        await self.ctx.access.update(cfg.allow_sources)

    async def _rollback(self, report: ApplyReport, done: list[str], old_views: dict[str, Any]) -> None:
        for name in report.started:
            await self._stop(name)
        for name in done:
            try:
                await self.running[name].reconfigure(old_views[name])
                self.views[name] = old_views[name]
            except Exception as exc:  # noqa: BLE001 - we are already reporting the first error
                log.error("event=rollback_failed service=%s error=%s", name, _describe(exc))
        if self.config is not None:
            restart = [c for c in self.classes if c.name in report.stopped]
            for cls in restart:
                view = old_views.get(cls.name)
                if view is None:
                    continue
                svc = cls(self.ctx)
                try:
                    await svc.start(view)
                except Exception as exc:  # noqa: BLE001
                    log.error("event=rollback_failed service=%s error=%s", cls.name, _describe(exc))
                    continue
                self.running[cls.name] = svc
                self.views[cls.name] = view
            await self._apply_shared(self.config)

    async def _stop(self, name: str) -> None:
        svc = self.running.pop(name)
        self.views.pop(name, None)
        await _quiet_stop(svc, self.drain_timeout)

    def _follow_acme(self, cfg: ProxyConfig) -> None:
        """Start, update or stop the renewer to match an applied cfg."""
        spec = acme_spec(cfg)
        if spec is None:
            if self.acme is not None:
                asyncio.get_running_loop().create_task(self.acme.stop())
                self.acme = None
        elif self.acme is None:
            self.acme = AcmeRenewer(self.ctx.state.root / "acme", self.ctx.certs, spec, self.ctx.acme_tokens,
                                    lambda *a: (self.ctx.acme_dns or _no_dns)(*a))
            self.acme.start()
        else:
            self.acme.update(spec)

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop every service (reverse start order), each draining for up to `timeout`."""
        if self.acme is not None:
            await self.acme.stop()
        async with self._lock:
            names = list(self.running)
            drain = timeout if timeout is not None else self.drain_timeout
            await asyncio.gather(*(_quiet_stop(self.running[n], drain) for n in reversed(names)))
            self.running.clear()
            self.views.clear()
            await self.ctx.access.close()

    def readiness(self) -> list[str]:
        """Why this proxy cannot take traffic now (empty: it can): no config applied yet, the proxy
        switched off, or a service the applied config asks for that is not running (a start that
        failed, a rollback that could not restart it). A newer config that failed to apply does
        not make it unready: the applied one is still served in full (`/status` says why)."""
        cfg = self.config
        if cfg is None:
            reasons = ["no configuration applied yet"]
            if self.last_error:
                reasons.append(f"last attempt failed: {self.last_error}")
            return reasons
        if not cfg.proxy.enabled:
            return [f"the proxy is disabled in revision {cfg.revision}"]
        reasons = []
        for cls in self.classes:
            if cls.name not in self.running and cls.view(cfg) is not None:
                why = self.failed.get(cls.name, "stopped")
                reasons.append(f"{cls.name} should run in revision {cfg.revision} but is not running: {why}")
        return reasons

    def status(self) -> dict[str, Any]:
        services = {}
        for cls in self.classes:
            svc = self.running.get(cls.name)
            entry: dict[str, Any] = {"state": "running" if svc else "stopped"}
            if svc is None and cls.name in self.failed:
                entry.update(state="failed", last_error=self.failed[cls.name])
            if svc is not None:
                try:
                    entry.update(svc.stats())
                except Exception as exc:  # noqa: BLE001 - status must always answer
                    entry["stats_error"] = _describe(exc)
                if svc.last_error:
                    entry["last_error"] = svc.last_error
            services[cls.name] = entry
        cfg = self.config
        current = self.ctx.certs.current
        return {
            "revision": cfg.revision if cfg else None,
            "proxy": cfg.proxy.name if cfg else None,
            "enabled": cfg.proxy.enabled if cfg else None,
            "applied_at": self.applied_at,
            "failed_at": self.failed_at,
            "apply_failures": self.apply_failures,
            "last_error": self.last_error,
            "certificate": current.fingerprint if current else None,
            "certificates": [] if current is None else [
                {"name": "server", "fingerprint": current.fingerprint, "self_signed": current.self_signed,
                 "not_after": current.not_after, "issuer": current.issuer}],
            "acme": self.acme.status() if self.acme else None,
            "degraded": [DEGRADED]
            if self.acme and self.acme.status()["degraded"] else [],
            "access_refused": dict(self.ctx.access.refused),
            # a worker's parent applies it (proxyd/workers.py) and reports it
            "network": self.network.last_result if self.host_duties else {"applied_by": "parent"},
            "services": services,
        }


def cert_addresses(cfg: ProxyConfig) -> list[str]:
    """The IP addresses a self-signed certificate names besides the fqdn: the bind address, if one."""
    return [cfg.bind] if cfg.bind not in ("0.0.0.0", "::") else []


def _no_dns(name: str, value: str, present: bool) -> None:
    raise RuntimeError("DNS-01 needs the manager (it holds the DNS account): this proxyd runs unmanaged")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ServiceError):
        return str(exc)
    if isinstance(exc, OSError):
        hints = {
            98: " (is another process using this port? choose another port in the config)",
            13: " (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
            99: " (the bind address is not configured on this host)",
        }
        return f"{exc}{hints.get(exc.errno or 0, '')}"
    return f"{type(exc).__name__}: {exc}"


async def _quiet_stop(svc: Service, timeout: float = 5.0) -> None:
    try:
        await svc.stop(timeout)
    except Exception as exc:  # noqa: BLE001 - stopping must not abort a shutdown
        log.error("event=stop_failed service=%s error=%s", svc.name, _describe(exc))
