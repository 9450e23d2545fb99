"""The xmpp service inside a real `proxyd run` process: entry point, status, enable/disable."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest

from tests.services.xmpp.conftest import xmpp_config
from tests.support import ProxydProcess


def ask(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
        return out


@pytest.mark.e2e
def test_proxyd_runs_xmpp_and_disables_it(proxyd: Callable[..., ProxydProcess]) -> None:
    cfg: dict[str, Any] = xmpp_config(None)
    port = cfg["services"]["xmpp"]["port"]
    p = proxyd(cfg)
    answer = ask(port, b"<stream:stream to='unknown.test' xmlns='jabber:client' "
                       b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")
    assert b"<host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in answer
    xmpp = p.status()["services"]["xmpp"]
    assert f"tcp:127.0.0.1:{port}" in str(xmpp)
    assert "unknown_domain" in str(xmpp)
    cfg["revision"] = 2
    cfg["services"]["xmpp"]["enabled"] = False
    p.reload(cfg)
    for listen_port in (port, cfg["services"]["xmpp"]["direct_tls_port"]):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", listen_port), timeout=5).close()
