"""`proxyd register`, `proxyd install`, `proxyd uninstall` as real processes against a stand-in manager."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxyd.agent.client import ManagerClient, ManagerError, Unauthorized
from proxyd.agent.state import AgentState
from proxyd.tls import make_self_signed
from tests.proxyd.agent.fake_manager import FakeManager
from tests.support import base_config, free_port


@pytest.fixture
def manager() -> Iterator[FakeManager]:
    m = FakeManager().start()
    yield m
    m.stop()


def proxyd(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxyd", *args], input=stdin, capture_output=True,
                          text=True, timeout=60)


def test_register_from_stdin_stores_key_owner_only(manager: FakeManager, tmp_path: Path) -> None:
    manager.tokens["tok1"] = "fresh"
    state = tmp_path / "state"
    url = f"{manager.url}/api/v1/register/#tok1"
    done = proxyd("register", "-", "--state-dir", str(state), stdin=url + "\n")
    assert done.returncode == 0, done.stderr
    assert "registered as proxy 'edge' (id 7)" in done.stdout
    assert manager.register_paths == ["/api/v1/register/"]  # the token went in the body, not the path
    agent_file = state / "agent.json"
    assert stat.S_IMODE(agent_file.stat().st_mode) == 0o600
    assert json.loads(agent_file.read_text()) == {
        "manager_url": manager.url, "proxy_id": 7, "proxy_name": "edge", "api_key": "key-1", "ca_file": None}
    # A second registration of the same state dir is refused unless forced.
    again = proxyd("register", url, "--state-dir", str(state))
    assert again.returncode == 1 and "already registered" in again.stderr


def test_register_from_url_file(manager: FakeManager, tmp_path: Path) -> None:
    manager.tokens["tok2"] = "fresh"
    f = tmp_path / "url.txt"
    f.write_text(f"{manager.url}/api/v1/register/tok2/\n")  # the older form: the token is sent in the body too
    done = proxyd("register", "--url-file", str(f), "--state-dir", str(tmp_path / "s"))
    assert done.returncode == 0, done.stderr
    assert manager.register_paths == ["/api/v1/register/"]


@pytest.mark.parametrize(("token_state", "message"), [
    ("expired", "has expired"), ("used", "already used"), (None, "unknown registration URL"),
    ("taken", "the manager refused: proxy 'edge' already has a registered agent"),
])
def test_register_failures_are_clear(manager: FakeManager, tmp_path: Path, token_state: str | None,
                                     message: str) -> None:
    if token_state:
        manager.tokens["tok"] = token_state
    done = proxyd("register", f"{manager.url}/api/v1/register/tok/", "--state-dir", str(tmp_path / "s"))
    assert done.returncode == 1
    assert message in done.stderr
    assert not (tmp_path / "s" / "agent.json").exists()


def test_register_unreachable_manager(tmp_path: Path) -> None:
    port = free_port()
    done = proxyd("register", f"http://127.0.0.1:{port}/api/v1/register/tok/", "--state-dir", str(tmp_path / "s"))
    assert done.returncode == 1
    assert f"cannot reach the manager at http://127.0.0.1:{port}" in done.stderr
    assert "tok" not in done.stderr.replace("registration", "")  # the secret token is not echoed


def test_register_garbage_and_missing_url(tmp_path: Path) -> None:
    done = proxyd("register", "hello", "--state-dir", str(tmp_path / "s"))
    assert done.returncode == 1 and "not a registration URL" in done.stderr
    done = proxyd("register", "-", "--state-dir", str(tmp_path / "s"), stdin="")
    assert done.returncode == 1 and "no registration URL" in done.stderr


def test_run_unregistered_state_dir_says_so(tmp_path: Path) -> None:
    done = proxyd("run", "--state-dir", str(tmp_path / "s"), "--admin", "off")
    assert done.returncode == 1 and "not registered" in done.stderr


def test_install_and_uninstall_unit(tmp_path: Path) -> None:
    units, state = tmp_path / "units", tmp_path / "state"
    done = proxyd("install", "--state-dir", str(state), "--unit-dir", str(units))
    assert done.returncode == 0, done.stderr
    text = (units / "pforte-proxyd.service").read_text()
    exec_line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert exec_line.endswith(f"run --state-dir {state}")
    for line in ("Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 f"ReadWritePaths={state}", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
                 "AmbientCapabilities=CAP_NET_BIND_SERVICE"):
        assert line in text.splitlines(), line
    assert "CAP_NET_ADMIN" not in text
    assert proxyd("uninstall", "--unit-dir", str(units)).returncode == 0
    assert not (units / "pforte-proxyd.service").exists()
    again = proxyd("uninstall", "--unit-dir", str(units))
    assert again.returncode == 1 and "nothing to uninstall" in again.stderr


def test_install_grants_net_admin_for_netconf(tmp_path: Path) -> None:
    done = proxyd("install", "--state-dir", str(tmp_path / "s"), "--unit-dir", str(tmp_path), "--net-admin")
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "pforte-proxyd.service").read_text()
    assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_NET_ADMIN" in text
    assert "AF_NETLINK" in text


def test_uninstall_leaves_foreign_units_alone(tmp_path: Path) -> None:
    (tmp_path / "pforte-proxyd.service").write_text("[Service]\nExecStart=/bin/true\n")
    done = proxyd("uninstall", "--unit-dir", str(tmp_path))
    assert done.returncode == 1 and (tmp_path / "pforte-proxyd.service").exists()


def test_register_https_manager_with_private_ca(tmp_path: Path) -> None:
    cert, key = make_self_signed("manager.test", ["127.0.0.1"])
    (tmp_path / "cert.pem").write_text(cert)
    (tmp_path / "key.pem").write_text(key)
    mgr = FakeManager(tls=(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))).start()
    try:
        mgr.tokens["t"] = "fresh"
        url = f"{mgr.url}/api/v1/register/t/"
        untrusted = proxyd("register", url, "--state-dir", str(tmp_path / "s"))
        assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
        done = proxyd("register", url, "--state-dir", str(tmp_path / "s"), "--ca-file", str(tmp_path / "cert.pem"))
        assert done.returncode == 0, done.stderr
        assert json.loads((tmp_path / "s" / "agent.json").read_text())["ca_file"] == str(tmp_path / "cert.pem")
    finally:
        mgr.stop()


async def test_client_uses_the_stored_ca_and_maps_401(tmp_path: Path) -> None:
    cert, key = make_self_signed("manager.test", ["127.0.0.1"])
    (tmp_path / "cert.pem").write_text(cert)
    (tmp_path / "key.pem").write_text(key)
    mgr = FakeManager(tls=(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))).start()
    mgr.publish(base_config(revision=9))
    try:
        good = ManagerClient(AgentState(mgr.url, 7, "edge", "key-1", str(tmp_path / "cert.pem")))
        answer = await good.fetch_config(None, 1)
        assert answer.etag == '"9"' and json.loads(answer.body or b"")["revision"] == 9
        assert (await good.fetch_config('"9"', 1)).body is None  # 304 after the wait
        await good.close()
        bad = ManagerClient(AgentState(mgr.url, 7, "edge", "wrong", str(tmp_path / "cert.pem")))
        with pytest.raises(Unauthorized):
            await bad.heartbeat({})
        await bad.close()
        untrusted = ManagerClient(AgentState(mgr.url, 7, "edge", "key-1"))
        with pytest.raises(ManagerError):
            await untrusted.fetch_config(None, 1)
        await untrusted.close()
    finally:
        mgr.stop()
