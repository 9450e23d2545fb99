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
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxyd.admin import fetch_status
from proxyd.agent import state as agent_state
from proxyd.statedir import StateDir
from tests.e2e.secrets_in_logs import leaks, log_files
from tests.support import free_port, free_udp_range, stop_process

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
                httpx.get(self.url + "/", timeout=2)
                return
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.3)
        raise AssertionError(f"manager did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        stop_process(self.proc, 15)


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


class Ctl:
    """tests/e2e/manager_ctl.py as a long-lived helper process (Django ORM of the manager)."""

    def __init__(self, env: dict[str, str]):
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("manager_ctl.py"))], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def __call__(self, op: str, **kw: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(15)
        self.proc.stdout.close()


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Manager]:
    m = Manager(tmp_path / "mgr", free_port())
    m.manage("migrate")
    m.start()
    yield m
    m.stop()


@pytest.fixture
def backend() -> Iterator[int]:
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "proxyd.demo_backend", "--port", str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield port
    p.terminate()
    p.wait(15)


def get(url: str) -> int:
    try:
        return httpx.get(url, verify=False, timeout=5).status_code  # noqa: S501 - self-signed proxy cert
    except httpx.HTTPError:
        return 0


def wait_for(pred: Any, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout}s")


def test_register_run_outage_and_recovery(manager: Manager, backend: int, tmp_path: Path) -> None:
    ctl = Ctl(manager.env)
    web_port = free_port()
    ctl("setup", web_port=web_port, backend_port=backend, media_min=free_udp_range(100))
    token = ctl("registration")["token"]
    reg = f"{manager.url}/api/v1/register/#{token}"  # as the manager shows it
    state = tmp_path / "proxy"

    # Registration failures: expired, unknown token, wrong manager URL — then success, then reuse.
    expired = f"{manager.url}/api/v1/register/{ctl('registration', expired=True)['token']}/"
    done = proxyd("register", expired, "--state-dir", str(tmp_path / "p1"))
    assert done.returncode == 1 and "has expired" in done.stderr
    unknown = proxyd("register", f"{manager.url}/api/v1/register/nosuchtoken/", "--state-dir", str(tmp_path / "p3"))
    assert unknown.returncode == 1 and "unknown registration URL" in unknown.stderr
    wrong = proxyd("register", reg.replace(f":{manager.port}/", f":{free_port()}/"),
                   "--state-dir", str(tmp_path / "p4"))
    assert wrong.returncode == 1 and "cannot reach the manager" in wrong.stderr
    ok = proxyd("register", "-", "--state-dir", str(state), stdin=reg)
    assert ok.returncode == 0, ok.stderr
    reused = proxyd("register", reg, "--state-dir", str(tmp_path / "p2"))
    assert reused.returncode == 1 and "already used" in reused.stderr
    # a fresh URL does not take the proxy from the registered agent either (until an admin allows it)
    again = proxyd("register", f"{manager.url}/api/v1/register/{ctl('registration')['token']}/",
                   "--state-dir", str(tmp_path / "p5"))
    assert again.returncode == 1 and "already has a registered agent" in again.stderr, again.stderr
    assert token not in manager.log.read_text()  # not in an access log line: it never was in a request path
    # what an operator's terminal (or a provisioning script's log) shows is a log too
    runs = (done, unknown, wrong, ok, reused, again)
    (tmp_path / "register.out").write_text("".join(r.stdout + r.stderr for r in runs))

    args = [sys.executable, "-m", "proxyd", "run", "--state-dir", str(state), "--admin", "off",
            "--drain-timeout", "1", "--backoff-max", "1"]
    log = open(tmp_path / "proxyd.out", "ab")  # noqa: SIM115 - closed below
    t0 = time.monotonic()
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: ctl("status")["status"] == "Online", 15)  # a process start on a loaded CI machine
        print(f"\nstart -> Online in the manager: {time.monotonic() - t0:.2f} s")
        base = f"https://127.0.0.1:{web_port}/e2e"
        wait_for(lambda: get(base + "/") == 200, 5)

        ctl("set", web_mode="rest_only")
        wait_for(lambda: get(base + "/") >= 400 and get(base + "/services") == 200, 2 + 1)  # +1: DB re-check
        measure_latency(ctl, state)

        manager.stop()
        wait_status(state, lambda s: s["manager"]["state"] == "unreachable", 30)
        assert p.poll() is None and get(base + "/services") == 200

        p.terminate()
        p.wait(15)
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: get(base + "/services") == 200 and get(base + "/") >= 400, 15)  # last good config

        manager.start()
        wait_for(lambda: ctl("status")["status"] == "Online", 15)

        # a clean stop tells the manager (goodbye): Offline within 5 s, not after the heartbeat grace
        t0 = time.monotonic()
        p.terminate()
        wait_for(lambda: ctl("status")["status"] == "Offline", 5)
        print(f"proxyd stopped -> Offline in the manager: {time.monotonic() - t0:.2f} s")
        assert p.wait(15) == 0
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: ctl("status")["status"] == "Online", 15)  # its next heartbeat outweighs the goodbye
        ctl("set", enabled=False)
        assert ctl("status")["status"] == "Disabled"  # switched off: not Online, whatever the agent says
    finally:
        if p.poll() is None:
            p.terminate()
            p.wait(15)
        log.close()
        ctl.close()
    used = {"registration URL": reg, "expired registration URL": expired,
            "API key": agent_state.load(StateDir(state)).api_key}
    files = log_files(tmp_path)
    assert {tmp_path / "register.out", tmp_path / "proxyd.out", manager.log} <= set(files)
    assert leaks(used, files) == []


def measure_latency(ctl: Ctl, state: Path) -> None:
    """Save -> live (the new revision applied on the proxy); 50 changes with PFORTE_MEASURE=1, else 5."""
    lat = []
    for i in range(50 if os.environ.get("PFORTE_MEASURE") else 5):
        saved = ctl("set", redirect_url=f"https://example.com/{i}")
        wait_status(state, lambda s, r=saved["revision"]: s["revision"] == r, 10)
        lat.append(time.time() - saved["saved_at"])
    lat.sort()
    print(f"save -> live over {len(lat)} changes: p50 {lat[len(lat) // 2]:.3f} s  "
          f"p95 {lat[min(len(lat) - 1, int(len(lat) * 0.95))]:.3f} s  max {lat[-1]:.3f} s")
