"""The XMPP row of the interop matrix (issue #19): go-sendxmpp sends a message through a real proxyd
to a user of each of two prosody hosts, over STARTTLS (the 5222-style port) and Direct TLS (the
5223-style port, routed by SNI); a slixmpp client logged in through the same proxy receives it.

Both clients check certificates: the prosody hosts' certificates come from a test CA
(tests/services/xmpp/prosody.py); slixmpp gets it as its CA file, go-sendxmpp (Go's crypto/x509)
through SSL_CERT_FILE, which replaces the system roots, so a wrong or missing CA fails the
handshake. pforte only routes (it never terminates XMPP TLS), so the names checked are the domains'.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.services.xmpp.conftest import Backends, backends, xmpp_config  # noqa: F401 - `backends` is a fixture
from tests.services.xmpp.prosody import PASSWORD
from tests.services.xmpp.test_prosody import login, logout
from tests.support import ProxydProcess, require_peer

pytestmark = [pytest.mark.e2e, pytest.mark.peer]
Proxyd = Callable[..., ProxydProcess]


async def sendxmpp(program: str, sender: str, to: str, port: int, body: str, *, direct: bool,
                   env: dict[str, str]) -> tuple[int, str]:
    args = ["-u", sender, "-p", PASSWORD, "-j", f"127.0.0.1:{port}", "--timeout", "10", *(["-t"] if direct else []), to]
    proc = await asyncio.create_subprocess_exec(program, *args, env=env, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(body.encode()), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return int(proc.returncode or 0), out.decode(errors="replace")


def client_env(tmp_path: Path, ca: Path | None) -> dict[str, str]:
    """go-sendxmpp's environment: an empty HOME (no sendxmpprc of the user's) and the test CA as the
    only trusted root (or, without `ca`, a file with no roots at all)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    if ca is None:
        ca = tmp_path / "no-roots.pem"
        ca.write_text("")
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "SSL_CERT_FILE": str(ca),
            "SSL_CERT_DIR": str(tmp_path / "no-cert-dir")}


@pytest.mark.parametrize("direct", [False, True], ids=["starttls", "direct-tls"])
@pytest.mark.parametrize(("sender", "receiver"), [("alice@a.test", "bob@a.test"), ("carol@b.test", "dave@b.test")],
                         ids=["a.test", "b.test"])
async def test_go_sendxmpp_message_reaches_a_slixmpp_client_through_pforte(
        proxyd: Proxyd, backends: Backends, tmp_path: Path, sender: str, receiver: str,  # noqa: F811
        direct: bool) -> None:
    program = require_peer("go-sendxmpp")
    cfg = xmpp_config(backends)
    proxyd(cfg)
    xmpp = cfg["services"]["xmpp"]
    port = xmpp["direct_tls_port"] if direct else xmpp["port"]
    client, inbox = await login(receiver, port, backends, direct=direct)
    try:
        assert client.boundjid.domain == receiver.split("@")[1]
        body = f"go-sendxmpp-{'direct' if direct else 'starttls'}-to-{receiver}"
        code, out = await sendxmpp(program, sender, receiver, port, body, direct=direct,
                                   env=client_env(tmp_path, backends.ca.path))
        assert code == 0, out
        assert (await asyncio.wait_for(inbox.get(), 20)).strip() == body
    finally:
        await logout(client)


@pytest.mark.parametrize("direct", [False, True], ids=["starttls", "direct-tls"])
async def test_go_sendxmpp_refuses_a_backend_certificate_it_cannot_verify(
        proxyd: Proxyd, backends: Backends, tmp_path: Path, direct: bool) -> None:  # noqa: F811
    """The check above is real: without the test CA among its roots, go-sendxmpp does not send."""
    program = require_peer("go-sendxmpp")
    cfg = xmpp_config(backends)
    proxyd(cfg)
    xmpp = cfg["services"]["xmpp"]
    port = xmpp["direct_tls_port"] if direct else xmpp["port"]
    code, out = await sendxmpp(program, "alice@a.test", "bob@a.test", port, "never-sent", direct=direct,
                               env=client_env(tmp_path, None))
    assert code != 0 and "x509: certificate signed by unknown authority" in out, out
