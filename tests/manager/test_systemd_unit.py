"""contrib/systemd/pforte-manager.service: systemd accepts it, its hardening scores well, and the
manager really starts under its system-call filter and memory policy, says READY=1 only once its
/readyz answers (STATUS= tells why not before), then keeps the watchdog fed (manager/sdready.py)."""

from __future__ import annotations

import configparser
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.proxyd.agent.test_unit import SANDBOX
from tests.support import IN_CI, free_port, require_peer, stop_process

ROOT = Path(__file__).parents[2]
UNIT = ROOT / "contrib" / "systemd" / "pforte-manager.service"
INSTALLED = "/opt/pforte/bin/pforte-manager"  # where docs/operations.md installs the package
MAX_EXPOSURE = 1.5  # `systemd-analyze security`: 1.1 when written (10 = no hardening at all)


def manager_cmd() -> str:
    local = Path(sys.executable).parent / "pforte-manager"
    assert local.exists(), "run from the venv (make venv) so that pforte-manager is installed next to python"
    return str(local)


def unit_here(tmp_path: Path) -> Path:
    """The unit with this checkout's pforte-manager in place of the installed path (verify checks it exists)."""
    text = UNIT.read_text()
    assert text.count(INSTALLED) == 2
    out = tmp_path / UNIT.name
    out.write_text(text.replace(INSTALLED, manager_cmd()))
    return out


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            out.setdefault(key, []).append(value)
    return out


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    exe = require_peer("systemd-analyze")
    res = subprocess.run([exe, "verify", str(unit_here(tmp_path))], capture_output=True, text=True, timeout=60)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")


def test_systemd_analyze_security_exposure(tmp_path: Path) -> None:
    exe = require_peer("systemd-analyze")
    res = subprocess.run([exe, "security", "--offline=yes", "--no-pager", str(unit_here(tmp_path))],
                         capture_output=True, text=True, timeout=60)
    if "--offline" in res.stderr and "unrecognized" in res.stderr:
        pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", res.stdout)
    assert score, res.stdout + res.stderr
    print(f"manager exposure: {score[1]}")
    assert float(score[1]) <= MAX_EXPOSURE, res.stdout


def test_documentation_is_what_the_package_installs_and_the_limits_fit_agents() -> None:
    d = directives(UNIT.read_text())
    (doc,) = d["Documentation"]
    prefix = Path(INSTALLED).parents[1]
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    installed = {f"share/doc/pforte/{Path(f).name}" for f in cfg["options.data_files"]["share/doc/pforte"].split()}
    assert doc.startswith(f"file://{prefix}/") and doc.removeprefix(f"file://{prefix}/") in installed
    assert (ROOT / "docs" / Path(doc).name).is_file()
    # two connections per agent (long-poll + heartbeat): room for 30,000 proxies and the rest
    assert int(d["LimitNOFILE"][0]) >= 2 * 30_000
    assert d["Type"] == ["notify"] and d["WatchdogSec"] and d["Restart"] == ["on-failure"]
    assert d["CapabilityBoundingSet"] == [""] and d["NoNewPrivileges"] == ["yes"]
    assert d["ProtectSystem"] == ["strict"] and d["StateDirectory"] == ["pforte-manager"]
    assert d["Environment"][0] == "PFORTE_MANAGER_DATA=/var/lib/pforte-manager"


def readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_the_manager_runs_under_the_units_filter_and_says_ready_when_readyz_does(tmp_path: Path) -> None:
    if not list(Path("/usr/lib/python3/dist-packages").glob("seccomp.cpython-311-*.so")):
        msg = "python3-seccomp is not installed (.ci/run installs it)"
        pytest.fail(msg) if IN_CI else pytest.skip(msg)
    require_peer("systemd-analyze")
    unit = unit_here(tmp_path)
    port = free_port()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(30)
    env = {**os.environ, "PFORTE_MANAGER_DATA": str(tmp_path / "data"), "NOTIFY_SOCKET": str(tmp_path / "notify"),
           "WATCHDOG_USEC": "1000000", "PYTHONUNBUFFERED": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    sandboxed = [sys.executable, str(SANDBOX), str(unit), manager_cmd()]
    log = tmp_path / "manager.out"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*sandboxed, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        # not listening yet, then not migrated: not ready, and systemd is told why
        status = [notify.recv(4096).decode()]
        while "database" not in status[-1]:
            status.append(notify.recv(4096).decode())
        assert all(m.startswith("STATUS=not ready: ") for m in status), status
        assert readyz(port) == 503
        migrate = subprocess.run([*sandboxed, "migrate", "--noinput"], env={**env, "NOTIFY_SOCKET": ""},
                                 capture_output=True, text=True, timeout=300)
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        got: list[str] = []
        deadline = time.monotonic() + 30
        while "WATCHDOG=1" not in got:
            assert time.monotonic() < deadline, got
            got.append(notify.recv(4096).decode())
        ready = next(i for i, m in enumerate(got) if m.startswith("READY=1"))
        assert got[ready] == "READY=1\nSTATUS=ready" and got.index("WATCHDOG=1") > ready, got
        assert readyz(port) == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert json.loads(r.read()) == {"status": "ok"}
    finally:
        code = stop_process(proc)
        notify.close()
    text = log.read_text()
    assert code in (0, -15), text  # uvicorn re-raises the SIGTERM it handled; systemd counts that a clean stop
    assert "Finished server process" in text
    for bad in ("Traceback", "Operation not permitted", "PermissionError"):
        assert bad not in text, text
