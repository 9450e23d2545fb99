"""The supervisor diffs per-service views and applies only what changed, rolling back on failure."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest

from proxyd.access import AccessList
from proxyd.config import ProxyConfig, parse_config
from proxyd.service import Service, ServiceContext, ServiceError
from proxyd.statedir import StateDir
from proxyd.stats import ServiceStats
from proxyd.supervisor import ApplyError, Supervisor
from proxyd.tls import CertStore
from tests.support import base_config, free_port


@dataclass(frozen=True)
class EchoView:
    port: int
    greeting: str


class EchoService(Service):
    """A real TCP listener whose greeting is its 'route table'."""

    name = "echo"
    calls: list[str] = []

    @classmethod
    def view(cls, cfg: ProxyConfig) -> EchoView | None:
        if cfg.services.web.mode == "off":
            return None
        return EchoView(cfg.services.web.port, cfg.services.web.redirect_url or "hello")

    async def start(self, view: EchoView) -> None:
        self.view_now = view
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", view.port)
        self.calls.append(f"start {view.greeting}")

    async def reconfigure(self, view: EchoView) -> None:
        if view.port != self.view_now.port:
            raise ServiceError("port change needs a restart in this test service")
        self.view_now = view  # swap in place: open connections keep going
        self.calls.append(f"reconfigure {view.greeting}")

    async def stop(self, timeout: float) -> None:
        self.server.close()
        self.calls.append("stop")

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readline():
            writer.write(self.view_now.greeting.encode() + b"\n")
            await writer.drain()
        writer.close()

    def report(self) -> ServiceStats:
        return ServiceStats(listeners=[f"127.0.0.1:{self.view_now.port}"])


class BrokenService(Service):
    name = "broken"
    order = 90

    @classmethod
    def view(cls, cfg: ProxyConfig) -> str | None:
        return cfg.proxy.name

    async def start(self, view: str) -> None:
        if view == "bad":
            raise ServiceError("cannot start for proxy 'bad'")

    async def reconfigure(self, view: str) -> None:
        if view == "bad":
            raise ServiceError("cannot reconfigure to 'bad'")

    async def stop(self, timeout: float) -> None:
        pass


def cfg(port: int, greeting: str, *, mode: str = "web_and_rest", name: str = "test", rev: int = 1) -> ProxyConfig:
    return parse_config(base_config(
        revision=rev, proxy={"name": name},
        services={"web": {"mode": mode, "port": port, "redirect_url": f"https://{greeting}.example/"}},
    ))


@pytest.fixture
def supervisor(tmp_path: Path) -> Supervisor:
    EchoService.calls = []
    state = StateDir(tmp_path).ensure()
    ctx = ServiceContext(state=state, certs=CertStore(state.certs), access=AccessList())
    return Supervisor(ctx, [EchoService, BrokenService])


async def ask(writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> bytes:
    writer.write(b"?\n")
    return await reader.readline()


async def test_reconfigure_swaps_in_place_and_keeps_connections(supervisor: Supervisor) -> None:
    port = free_port()
    report = await supervisor.apply(cfg(port, "one"))
    assert report.started == ["echo", "broken"]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await ask(writer, reader) == b"https://one.example/\n"

    report = await supervisor.apply(cfg(port, "two", rev=2))
    assert report.reconfigured == ["echo"] and report.unchanged == ["broken"]
    # the same connection now sees the new table
    assert await ask(writer, reader) == b"https://two.example/\n"

    report = await supervisor.apply(cfg(port, "two", rev=3))
    assert report.reconfigured == [] and sorted(report.unchanged) == ["broken", "echo"]
    assert EchoService.calls == ["start https://one.example/", "reconfigure https://two.example/"]
    writer.close()
    await supervisor.shutdown()


async def test_failed_apply_rolls_back_and_keeps_the_running_config(supervisor: Supervisor) -> None:
    port = free_port()
    good = cfg(port, "one")
    await supervisor.apply(good)
    with pytest.raises(ApplyError) as info:
        await supervisor.apply(cfg(port, "two", name="bad", rev=2))
    assert info.value.errors == {"broken": "cannot reconfigure to 'bad'"}
    assert supervisor.config is good
    assert supervisor.views["echo"] == EchoView(port, "https://one.example/")
    assert "revision 2" in (supervisor.last_error or "")
    status = supervisor.status()["services"]
    assert status["broken"] == {"state": "running", "last_error": "revision 2: cannot reconfigure to 'bad'",
                                "listeners": [], "counters": {}, "gauges": {}}  # every entry has the stats shape
    assert "last_error" not in status["echo"]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await ask(writer, reader) == b"https://one.example/\n"
    writer.close()
    await supervisor.apply(cfg(port, "three", rev=3))
    assert "last_error" not in supervisor.status()["services"]["broken"]
    await supervisor.shutdown()


async def test_a_service_that_failed_to_start_says_so_until_it_runs(supervisor: Supervisor) -> None:
    port = free_port()
    with pytest.raises(ApplyError):
        await supervisor.apply(cfg(port, "one", name="bad", rev=4))
    status = supervisor.status()["services"]
    assert status["broken"] == {"state": "failed", "last_error": "revision 4: cannot start for proxy 'bad'",
                                "listeners": [], "counters": {}, "gauges": {}}
    assert status["echo"]["state"] == "stopped"  # rolled back with the rest of revision 4
    await supervisor.apply(cfg(port, "one", rev=5))
    assert supervisor.status()["services"]["broken"] == {"state": "running", "listeners": [], "counters": {},
                                                         "gauges": {}}
    await supervisor.shutdown()


async def test_mode_off_and_disabled_proxy_stop_services(supervisor: Supervisor) -> None:
    port = free_port()
    await supervisor.apply(cfg(port, "one"))
    report = await supervisor.apply(cfg(port, "one", mode="off", rev=2))
    assert report.stopped == ["echo"]
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
    disabled = parse_config({**base_config(), "proxy": {"name": "test", "fqdn": "proxy.test", "enabled": False}})
    report = await supervisor.apply(disabled)
    assert report.stopped == ["broken"] and not supervisor.running
    assert supervisor.status()["services"]["echo"]["state"] == "stopped"


async def test_bind_failure_is_reported_with_a_hint(supervisor: Supervisor) -> None:
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = blocker.sockets[0].getsockname()[1]
    with pytest.raises(ApplyError) as info:
        await supervisor.apply(cfg(port, "one"))
    assert "is another process using this port?" in info.value.errors["echo"]
    assert not supervisor.running
    blocker.close()


async def test_an_acme_config_that_fails_to_apply_leaves_no_renewer(supervisor: Supervisor) -> None:
    """The renewer follows only an applied config: a failed apply (rolled back) neither starts
    nor changes it. (The directory is never asked: the apply fails first.)"""
    acme = {"mode": "acme", "acme_directory": "https://127.0.0.1:9/dir", "acme_challenge": "tls-alpn-01"}
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    busy = blocker.sockets[0].getsockname()[1]
    raw = base_config(services={"web": {"mode": "rest_only", "port": busy}}, tls=acme)
    with pytest.raises(ApplyError):
        await supervisor.apply(parse_config(raw))  # the first apply: nothing to roll back to
    assert supervisor.acme is None
    port = free_port()
    await supervisor.apply(cfg(port, "one"))
    with pytest.raises(ApplyError):  # a reconfigure that fails (port change) rolls back to "one"
        await supervisor.apply(parse_config(base_config(services={"web": {"mode": "rest_only", "port": busy}},
                                                        tls=acme)))
    assert supervisor.acme is None and supervisor.config.tls.mode == "self-signed"
    await supervisor.apply(parse_config(base_config(services={"web": {"mode": "rest_only", "port": port}}, tls=acme)))
    assert supervisor.acme is not None and supervisor.acme.spec.challenge == "tls-alpn-01"
    await supervisor.shutdown()
    blocker.close()
