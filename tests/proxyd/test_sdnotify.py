"""proxyd under `Type=notify`: a real proxyd talks to a datagram socket that stands where
systemd's would ($NOTIFY_SOCKET): READY=1 with a STATUS once the startup config is applied,
WATCHDOG=1 at half the $WATCHDOG_USEC interval, STOPPING=1 on SIGTERM; in managed mode READY=1
comes even while the manager is down (the boot must not wait for it)."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from proxyd.agent import state as agent_state
from proxyd.statedir import StateDir
from tests.support import ProxydProcess, base_config, free_port, stop_process


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket in $NOTIFY_SOCKET (a file, or an abstract name as systemd may use)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        name = str(tmp_path / "notify")
        s.bind(name)
    else:
        name = f"@pforte-test-{secrets.token_hex(6)}"
        s.bind("\0" + name[1:])
    s.settimeout(15)
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    yield s
    s.close()


def messages(s: socket.socket, until: Callable[[list[str]], bool], timeout: float = 15) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while not until(got):
        assert time.monotonic() < deadline, got
        got.append(s.recv(4096).decode())
    return got


def test_ready_watchdog_and_stopping(proxyd: Callable[..., ProxydProcess], notify_socket: socket.socket,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    app = {"name": "a", "port": free_port(), "tls": False, "upstream": f"http://127.0.0.1:{free_port()}/"}
    p = proxyd(base_config(applications=[app]), wait=False)
    got = messages(notify_socket, lambda m: "READY=1" in m)
    assert p.status()["revision"] == 1  # READY came after the config was applied
    assert any(x == "STATUS=ready: revision 1" for x in got), got
    t0 = time.monotonic()
    messages(notify_socket, lambda m: m.count("WATCHDOG=1") >= 5)
    assert time.monotonic() - t0 < 2.5  # every 0.1 s (half of WATCHDOG_USEC)
    # a later apply updates the status line
    p.reload(base_config(applications=[app], revision=2))
    messages(notify_socket, lambda m: "STATUS=ready: revision 2" in m)
    assert p.stop() == 0
    rest = messages(notify_socket, lambda m: any(x.startswith("STOPPING=1") for x in m), timeout=5)
    assert "STOPPING=1\nSTATUS=stopping: established connections are draining" in rest, rest


def test_managed_proxyd_is_ready_for_systemd_while_its_manager_is_down(
        tmp_path: Path, notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    state = StateDir(tmp_path / "state").ensure()
    agent_state.save(state, agent_state.AgentState(f"http://127.0.0.1:{free_port()}", 7, "edge", "key-1"))
    proc = subprocess.Popen([sys.executable, "-m", "proxyd", "run", "--state-dir", str(state.root), "--admin", "off",
                             "--backoff-max", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ})
    try:
        got = messages(notify_socket, lambda m: "READY=1" in m)
        assert "STATUS=no configuration applied yet" in got, got
        assert "WATCHDOG=1" not in got  # not asked for
    finally:
        stop_process(proc)


def test_with_workers_only_the_parent_talks_to_systemd(proxyd: Callable[..., ProxydProcess],
                                                       notify_socket: socket.socket) -> None:
    """NotifyAccess=main: a message from a worker would be dropped by systemd (and logged); the
    parent says READY once every worker applied the startup revision."""
    notify_socket.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    app = {"name": "a", "port": free_port(), "tls": False, "upstream": f"http://127.0.0.1:{free_port()}/"}
    p = proxyd(base_config(applications=[app]), wait=False, extra_args=("--workers", "2"))
    senders, got = set(), []
    deadline = time.monotonic() + 30
    while not any("READY=1" in m for m in got):
        assert time.monotonic() < deadline, got
        data, anc, _, _ = notify_socket.recvmsg(4096, socket.CMSG_SPACE(12))
        got.append(data.decode())
        senders |= {int.from_bytes(d[:4], "little") for lvl, typ, d in anc if typ == socket.SCM_CREDENTIALS}
    assert p.proc is not None and senders == {p.proc.pid}, (senders, p.proc.pid)
    assert "STATUS=ready: revision 1, 2 workers" in got, got
    assert [w["revision"] for w in p.status()["workers"]] == [1, 1]
    assert p.stop() == 0
