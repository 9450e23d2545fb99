"""Fixtures: two real prosody servers (a.test, b.test) and an in-process XmppService in front."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from proxyd.access import AccessList
from proxyd.config import parse_config
from proxyd.service import ServiceContext
from proxyd.statedir import StateDir
from proxyd.tls import CertStore
from services.xmpp.relay import Session
from services.xmpp.service import XmppService
from tests.services.xmpp.prosody import Prosody, TestCA, new_prosody
from tests.support import base_config, free_port, require_peer


@dataclass
class Backends:
    ca: TestCA
    a: Prosody
    b: Prosody


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backends]:
    program = require_peer("prosody")
    base = tmp_path_factory.mktemp("prosody")
    ca = TestCA(base)
    started: list[Prosody] = []
    try:
        for domain, users in (("a.test", ("alice", "bob")), ("b.test", ("carol", "dave"))):
            started.append(new_prosody(domain, base).start(program, ca, users))
        yield Backends(ca, *started)
    finally:
        for p in started:
            p.stop()


def xmpp_config(backends: Backends | None, **xmpp: Any) -> dict[str, Any]:
    """A config routing a.test/b.test to the prosody servers (or dead ports without them)."""
    ports = [backends.a.port, backends.b.port] if backends else [free_port(), free_port()]
    direct = [backends.a.direct_port, backends.b.direct_port] if backends else [free_port(), free_port()]
    return base_config(
        instances=[
            {"name": "inst-a", "xmpp": f"127.0.0.1:{ports[0]}", "xmpp_domains": ["a.test", "chat.a.test"],
             "xmpp_direct_tls": f"127.0.0.1:{direct[0]}"},
            {"name": "inst-b", "xmpp": f"127.0.0.1:{ports[1]}", "xmpp_domains": ["B.test"],
             "xmpp_direct_tls": f"127.0.0.1:{direct[1]}"},
        ],
        services={"xmpp": {"enabled": True, "port": free_port(), "direct_tls_port": free_port(), **xmpp}},
    )


@dataclass
class Proxy:
    service: XmppService
    cfg: dict[str, Any]
    #: per session, per direction: the chunks the proxy relayed (the first client chunk is the peek buffer)
    seen: dict[Session, dict[str, list[bytes]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))

    @property
    def port(self) -> int:
        return int(self.cfg["services"]["xmpp"]["port"])

    @property
    def direct_port(self) -> int:
        return int(self.cfg["services"]["xmpp"]["direct_tls_port"])

    async def apply(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        await self.service.reconfigure(XmppService.view(parse_config(cfg)))


async def start_proxy(tmp_path: Path, cfg: dict[str, Any]) -> Proxy:
    state = StateDir(tmp_path / "state").ensure()
    ctx = ServiceContext(state=state, certs=CertStore(state.certs), access=AccessList())
    service = XmppService(ctx)
    proxy = Proxy(service, cfg)
    service.tap = lambda s, direction, data: proxy.seen[s][direction].append(bytes(data))
    await service.start(XmppService.view(parse_config(cfg)))
    return proxy


@pytest.fixture
async def proxy(tmp_path: Path, backends: Backends) -> AsyncIterator[Proxy]:
    p = await start_proxy(tmp_path, xmpp_config(backends))
    yield p
    await p.service.stop(2.0)


@pytest.fixture
async def bare_proxy(tmp_path: Path) -> AsyncIterator[Proxy]:
    """The service with backends that are never reached (refusal tests; no prosody needed)."""
    p = await start_proxy(tmp_path, xmpp_config(None))
    yield p
    await p.service.stop(2.0)


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)

