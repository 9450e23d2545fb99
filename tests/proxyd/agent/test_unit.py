"""The unit `proxyd install` writes: systemd accepts it, its hardening scores well, and proxyd
really runs under its system-call filter and memory policy."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proxyd.agent import unit
from tests.support import (
    IN_CI,
    ProxydProcess,
    base_config,
    free_port,
    free_tcp_udp_port,
    require_peer,
    stop_process,
)

SANDBOX = Path(__file__).with_name("unit_sandbox.py")
MAX_EXPOSURE = 2.5  # `systemd-analyze security`: 1.9 when written (10 = no hardening at all)


def install(tmp_path: Path, *extra: str) -> str:
    done = subprocess.run([sys.executable, "-m", "proxyd", "install", "--state-dir", str(tmp_path / "state"),
                           "--unit-dir", str(tmp_path), *extra], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return (tmp_path / unit.DEFAULT_UNIT_NAME).read_text()


def systemd_analyze() -> str:
    return require_peer("systemd-analyze")  # package systemd; no running systemd needed


@pytest.mark.parametrize("extra", [(), ("--net-admin",)])
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path, extra: tuple[str, ...]) -> None:
    exe = systemd_analyze()
    install(tmp_path, *extra)
    res = subprocess.run([exe, "verify", str(tmp_path / unit.DEFAULT_UNIT_NAME)], capture_output=True, text=True,
                         timeout=60)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")


@pytest.mark.parametrize("extra", [(), ("--net-admin",)])
def test_systemd_analyze_security_exposure(tmp_path: Path, extra: tuple[str, ...]) -> None:
    exe = systemd_analyze()
    install(tmp_path, *extra)
    res = subprocess.run([exe, "security", "--offline=yes", "--no-pager", str(tmp_path / unit.DEFAULT_UNIT_NAME)],
                         capture_output=True, text=True, timeout=60)
    if "--offline" in res.stderr and "unrecognized" in res.stderr:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", res.stdout)
    assert score, res.stdout + res.stderr
    print(f"exposure {extra}: {score[1]}")
    assert float(score[1]) <= MAX_EXPOSURE, res.stdout


def test_documentation_points_to_an_existing_guide(tmp_path: Path) -> None:
    text = install(tmp_path)
    docs = [ln.partition("=")[2] for ln in text.splitlines() if ln.startswith("Documentation=")]
    assert docs and all(d.startswith("file:///") for d in docs)
    assert Path(docs[0].removeprefix("file://")).is_file()
    assert "example.invalid" not in text


def test_capabilities_and_address_families_follow_net_admin(tmp_path: Path) -> None:
    plain = install(tmp_path).splitlines()
    assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE" in plain
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in plain
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" in plain
    assert "ProtectKernelTunables=yes" in plain
    admin = install(tmp_path, "--net-admin").splitlines()
    assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_NET_ADMIN" in admin
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK" in admin
    assert "ProtectKernelTunables=no" in admin
    assert f"LimitNOFILE={unit.NOFILE}" in admin


def test_protect_home_hides_homes_unless_something_needed_lives_there() -> None:
    opt = unit.UnitSpec(state_dir=Path("/var/lib/pforte"), proxyd=["/opt/pforte/bin/proxyd"])
    home = unit.UnitSpec(state_dir=Path("/home/ops/pforte"), proxyd=["/opt/pforte/bin/proxyd"])
    venv = unit.UnitSpec(state_dir=Path("/var/lib/pforte"), proxyd=["/root/venv/bin/proxyd"])
    assert "ProtectHome=read-only" in unit.render(home).splitlines()
    assert "ProtectHome=read-only" in unit.render(venv).splitlines()
    under_home = unit._under_home([Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()])
    assert ("ProtectHome=read-only" if under_home else "ProtectHome=yes") in unit.render(opt).splitlines()


def test_proxyd_runs_under_the_units_syscall_filter_and_mdwe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every service up (TLS contexts, the C scanner, SRTP library, uvloop), READY=1 and watchdog
    pings sent to $NOTIFY_SOCKET, a request forwarded, a SIP request answered, /metrics read
    (process metrics come from /proc), then a clean stop."""
    if not list(Path("/usr/lib/python3/dist-packages").glob("seccomp.cpython-311-*.so")):
        msg = "python3-seccomp is not installed (.ci/run installs it)"
        pytest.fail(msg) if IN_CI else pytest.skip(msg)
    systemd_analyze()
    unit_file = tmp_path / unit.DEFAULT_UNIT_NAME
    install(tmp_path)
    backend = socket.create_server(("127.0.0.1", 0))
    sip_port, app_port, admin = free_tcp_udp_port(), free_port(), free_port()
    cfg = base_config(
        applications=[{"name": "a", "port": app_port, "tls": False,
                       "upstream": f"http://127.0.0.1:{backend.getsockname()[1]}/"}],
        services={"web": {"mode": "web_and_rest", "port": free_port()},
                  "sip": {"mode": "udp", "udp_port": sip_port, "tls_port": free_port()},
                  "provisioning": {"mode": "http_and_https", "http_port": free_port(), "https_port": free_port()},
                  "xmpp": {"enabled": True, "port": free_port(), "direct_tls_port": free_port()},
                  "media": {"mode": "srtp"}})
    p = ProxydProcess(tmp_path / "run", cfg, ("--admin", f"127.0.0.1:{admin}"))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(15)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "500000")
    p.workdir.mkdir()
    p.write_config(cfg)
    log = open(p.log_path, "wb")  # noqa: SIM115 - closed below
    p.proc = subprocess.Popen(
        [sys.executable, str(SANDBOX), str(unit_file), sys.executable, "-m", "proxyd", "run", "--config",
         str(p.config_path), "--state-dir", str(p.state_dir), "--admin", f"127.0.0.1:{admin}",
         "--drain-timeout", "2"], stdout=log, stderr=subprocess.STDOUT)
    try:
        st = p.wait_revision(1, timeout=30)
        assert {n: s["state"] for n, s in st["services"].items()} == dict.fromkeys(
            ("http", "provisioning", "sip", "media", "xmpp"), "running"), st
        got = [notify.recv(4096) for _ in range(4)]
        assert b"READY=1" in got and b"WATCHDOG=1" in got, got
        with socket.create_connection(("127.0.0.1", app_port), timeout=10) as c:
            c.sendall(b"GET /api/x HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\n\r\n")
            conn, _ = backend.accept()
            with conn:
                conn.settimeout(10)
                assert conn.recv(65536).startswith(b"GET /x HTTP/1.1")
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            assert c.recv(65536).startswith(b"HTTP/1.1 200 ")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
            phone.settimeout(10)
            phone.sendto(b"OPTIONS sip:nobody.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1\r\n"
                         b"From: <sip:a@nobody.test>;tag=1\r\nTo: <sip:nobody.test>\r\nCall-ID: sandbox\r\n"
                         b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", ("127.0.0.1", sip_port))
            assert phone.recv(65536).startswith(b"SIP/2.0 404 ")
        with socket.create_connection(("127.0.0.1", admin), timeout=10) as c:
            c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            scraped = b""
            while chunk := c.recv(65536):
                scraped += chunk
        assert b"\nprocess_open_fds " in scraped and b"\nprocess_start_time_seconds " in scraped
        time.sleep(0.2)
    finally:
        code = stop_process(p.proc)
        log.close()
        backend.close()
        notify.close()
    out = p.output()
    assert code == 0, out
    for bad in ("Traceback", "Operation not permitted", "PermissionError"):
        assert bad not in out, out


def test_the_unit_waits_for_ready_and_watches_the_loop(tmp_path: Path) -> None:
    """proxyd speaks sd_notify (tests/proxyd/test_sdnotify.py), so the unit asks for it."""
    lines = install(tmp_path).splitlines()
    assert "Type=notify" in lines and "NotifyAccess=main" in lines
    assert "WatchdogSec=30s" in lines and "Restart=on-failure" in lines  # on-failure covers the watchdog
