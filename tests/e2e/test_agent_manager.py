"""End to end with real processes: the Django manager (`pforte-manager`) and a managed proxyd.

Skipped while the manager package is not installed (it is built on the `manager` branch).
Covers: registration via the demo command's one-time URL, proxyd run online, reused/unknown token
and wrong manager URL fail clearly with exit 1, manager down -> proxy keeps serving, proxyd restart
without the manager -> last good config, manager back -> online again.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxyd.admin import fetch_status
from tests.support import free_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(importlib.util.find_spec("manager") is None or shutil.which("pforte-manager") is None
                       and not (Path(sys.executable).parent / "pforte-manager").exists(),
                       reason="the manager package (pforte-manager) is not installed in this tree"),
]


def manager_cmd() -> str:
    local = Path(sys.executable).parent / "pforte-manager"
    return str(local) if local.exists() else str(shutil.which("pforte-manager"))


class Manager:
    def __init__(self, data: Path, port: int):
        self.env = {**os.environ, "PFORTE_MANAGER_DATA": str(data)}
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data / "manager.out"
        data.mkdir(parents=True, exist_ok=True)

    def manage(self, *args: str) -> str:
        done = subprocess.run([manager_cmd(), *args], env=self.env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([manager_cmd(), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                import httpx

                httpx.get(self.url + "/", timeout=2)
                return
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.3)
        raise AssertionError(f"manager did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def proxyd(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxyd", *args], input=stdin, capture_output=True,
                          text=True, timeout=60)


def status(state: Path) -> dict[str, Any]:
    code, body = fetch_status(state / "proxyd.sock")
    assert code == 200
    return dict(json.loads(body))


def wait_status(state: Path, pred: Any, timeout: float) -> tuple[dict[str, Any], float]:
    start, last = time.monotonic(), None
    while time.monotonic() - start < timeout:
        try:
            last = status(state)
            if pred(last):
                return last, time.monotonic() - start
        except (OSError, ValueError, AssertionError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"status never matched in {timeout}s: {last}")


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Manager]:
    m = Manager(tmp_path / "mgr", free_port())
    m.manage("migrate")
    m.start()
    yield m
    m.stop()


def test_register_run_outage_and_recovery(manager: Manager, tmp_path: Path) -> None:
    demo = manager.manage("pforte_demo")
    url = re.search(r"^REGISTRATION_URL=(\S+)", demo, re.M)
    assert url is not None, demo
    # The demo prints the URL for its own port; point it at this test's manager.
    reg = re.sub(r"^https?://[^/]+", manager.url, url[1])
    state = tmp_path / "proxy"
    done = proxyd("register", "-", "--state-dir", str(state), stdin=reg)
    assert done.returncode == 0, done.stderr

    # Registration failures: reused URL, unknown token, wrong manager URL.
    reused = proxyd("register", reg, "--state-dir", str(tmp_path / "p2"))
    assert reused.returncode == 1 and "already used" in reused.stderr
    unknown = proxyd("register", re.sub(r"/register/[^/]+/", "/register/nosuchtoken/", reg),
                     "--state-dir", str(tmp_path / "p3"))
    assert unknown.returncode == 1 and "unknown registration URL" in unknown.stderr
    wrong = proxyd("register", re.sub(r":\d+/", f":{free_port()}/", reg), "--state-dir", str(tmp_path / "p4"))
    assert wrong.returncode == 1 and "cannot reach the manager" in wrong.stderr

    args = [sys.executable, "-m", "proxyd", "run", "--state-dir", str(state), "--admin", "off",
            "--drain-timeout", "1", "--poll-wait", "5", "--backoff-max", "1"]
    log = open(tmp_path / "proxyd.out", "ab")  # noqa: SIM115 - closed below
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        st, took = wait_status(state, lambda s: s["manager"]["state"] == "online" and s["revision"], 5)
        revision = st["revision"]
        print(f"start -> online: {took:.2f} s")

        manager.stop()
        wait_status(state, lambda s: s["manager"]["state"] == "unreachable", 30)
        assert p.poll() is None and status(state)["revision"] == revision

        p.terminate()
        p.wait(15)
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_status(state, lambda s: s["revision"] == revision, 15)

        manager.start()
        wait_status(state, lambda s: s["manager"]["state"] == "online", 15)
    finally:
        if p.poll() is None:
            p.terminate()
            p.wait(15)
        log.close()
