"""A real `proxyd run` process: reload on SIGHUP/file change, bad configs kept out, state dir."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from proxyd.statedir import StateDir
from proxyd.tls import fingerprint
from tests.support import ProxydProcess, base_config


def test_sighup_with_broken_config_keeps_the_running_one(proxyd: Callable[..., ProxydProcess]) -> None:
    p = proxyd(base_config(revision=1))
    broken = base_config(revision=2, services={"web": {"mode": "sideways"}})
    p.reload(broken, wait=False)
    deadline = time.monotonic() + 10
    while "sideways" not in (p.status().get("last_error") or "") and time.monotonic() < deadline:
        time.sleep(0.05)
    st = p.status()
    assert st["revision"] == 1
    assert "services.web.mode: expected one of web_and_rest, rest_only, off" in st["last_error"]
    assert "problem='services.web.mode: expected one of" in p.output()
    # last good config on disk is still revision 1
    assert json.loads((p.state_dir / "config" / "last-good.json").read_text())["revision"] == 1
    p.reload(base_config(revision=3))
    assert p.status()["last_error"] is None


def test_putting_back_the_running_config_after_a_broken_one_clears_the_failure(
        proxyd: Callable[..., ProxydProcess]) -> None:
    """The operator fixes a typo by restoring the file as it was: nothing needs applying, but the
    config asked for is the one running again, so the failure must stop showing (`last_error`,
    and the `last apply > last failed apply` comparison the PforteConfigApplyFailing alert makes)."""
    good = base_config(revision=1)
    p = proxyd(good)
    p.reload(base_config(revision=2, services={"web": {"mode": "sideways"}}), wait=False)
    deadline = time.monotonic() + 10
    while not p.status().get("failed_at") and time.monotonic() < deadline:
        time.sleep(0.05)
    failed = p.status()
    assert failed["failed_at"] > failed["applied_at"] and failed["last_error"]
    p.reload(good, wait=False)
    deadline = time.monotonic() + 10
    while p.status()["applied_at"] <= failed["failed_at"] and time.monotonic() < deadline:
        time.sleep(0.05)
    st = p.status()
    assert st["revision"] == 1 and st["applied_at"] > st["failed_at"] and st["last_error"] is None
    assert st["apply_failures"] == 1  # the failure is still counted
    assert "event=config_current source=sighup revision=1" in p.output()


def test_file_change_is_picked_up_without_a_signal(proxyd: Callable[..., ProxydProcess]) -> None:
    p = proxyd(base_config(revision=1))
    p.write_config(base_config(revision=5))
    p.wait_revision(5, timeout=10)


def test_state_dir_layout_permissions_and_reused_self_signed_cert(proxyd: Callable[..., ProxydProcess]) -> None:
    p = proxyd(base_config(revision=1, proxy={"fqdn": "mobydick.example.com"}))
    first = p.status()["certificate"]
    state = StateDir(p.state_dir)
    for sub in (state.certs, state.config_dir, state.logs):
        assert sub.is_dir()
    for secret in (state.certs / "self-signed.key", state.certs / "current.key", state.last_good_path):
        assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600, secret
    assert first == fingerprint((state.certs / "self-signed.pem").read_text())
    assert (state.logs / "proxyd.log").read_text().count("event=config_applied") == 1
    assert p.stop() == 0
    p.start()
    assert p.status()["certificate"] == first  # generated once, then reused


def test_status_command_and_sigterm(proxyd: Callable[..., ProxydProcess]) -> None:
    p = proxyd(base_config(revision=4))
    res = subprocess.run([sys.executable, "-m", "proxyd", "status", "--state-dir", str(p.state_dir)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "revision applied: 4" in res.stdout
    assert p.stop() == 0
    res = subprocess.run([sys.executable, "-m", "proxyd", "status", "--state-dir", str(p.state_dir)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and "not running" in res.stderr


def test_invalid_config_at_start_exits_1_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(base_config(services={"sip": {"mode": "tcp"}})))
    res = subprocess.run([sys.executable, "-m", "proxyd", "run", "--config", str(path),
                          "--state-dir", str(tmp_path / "s"), "--admin", "off"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1
    assert "services.sip.mode: expected one of tls, udp, off" in res.stderr


def test_json_logs_and_metrics_on_the_admin_port(proxyd: Callable[..., ProxydProcess]) -> None:
    import socket

    from tests.support import free_port

    port = free_port()
    p = proxyd(base_config(revision=2), extra_args=("--log-format", "json", "--admin", f"127.0.0.1:{port}"))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert b"200 OK" in data.split(b"\r\n", 1)[0]
    assert b"\npforte_config_revision 2.0\n" in data
    line = next(ln for ln in p.output().splitlines() if "config_applied" in ln)
    assert json.loads(line)["level"] == "info"


def test_reload_with_a_backend_pointing_at_the_proxy_keeps_the_running_config(
        proxyd: Callable[..., ProxydProcess]) -> None:
    """Issue #19 (4): the derived Direct TLS default (xmpp port + 1) lands on pforte's own listener."""
    from tests.support import free_port

    xmpp = {"enabled": True, "port": free_port(), "direct_tls_port": free_port()}
    p = proxyd(base_config(revision=1, services={"xmpp": xmpp}))
    loop = base_config(revision=2, services={"xmpp": xmpp}, instances=[
        {"name": "a", "xmpp": f"127.0.0.1:{xmpp['port'] - 1}", "xmpp_domains": ["a.test"]}])
    p.reload(loop, wait=False)
    deadline = time.monotonic() + 10
    while "xmpp_direct_tls" not in (p.status().get("last_error") or "") and time.monotonic() < deadline:
        time.sleep(0.05)
    st = p.status()
    assert st["revision"] == 1
    assert f"instances[0].xmpp_direct_tls: points at this proxy's own XMPP STARTTLS listener " \
           f"127.0.0.1:{xmpp['port']}" in st["last_error"]


def test_sighup_with_a_hostile_file_keeps_the_running_one(proxyd: Callable[..., ProxydProcess]) -> None:
    """A config file goes through the same bounded loader as a manager's answer: nesting that made
    json recurse to death and a file larger than any config are each one error, never an exit."""
    p = proxyd(base_config(revision=1))
    for body, reason in ((b"[" * 200_000 + b"]" * 200_000, "nested deeper than 32 levels"),
                         (b'{"x": "' + b"a" * (9 * 1024 * 1024) + b'"}', "larger than 8388608 bytes")):
        p.config_path.write_bytes(body)
        assert p.proc is not None
        p.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while reason not in (p.status().get("last_error") or "") and time.monotonic() < deadline:
            time.sleep(0.05)
        st = p.status()
        assert reason in (st["last_error"] or "") and st["revision"] == 1
        assert p.proc.poll() is None and "Traceback" not in p.output()
    p.reload(base_config(revision=2))
    assert p.status()["last_error"] is None
