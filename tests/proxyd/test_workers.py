"""`proxyd run --workers 2`: a parent supervising two real workers — both accept connections on
the shared HTTP port (SO_REUSEPORT), a reload reaches both (and an invalid one neither), a killed
worker is restarted, SIGTERM drains both (a request in flight completes) and nothing is left."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from proxyd import cpus
from proxyd.admin import fetch_status
from proxyd.workers import merge_services, worker_services
from tests.support import ProxydProcess, base_config, free_port


class Backend(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/slow":
            time.sleep(1.5)
        body = b"hello\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[int]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def get(port: int, path: str = "/app/x") -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path, headers={"Connection": "close"})
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def worker_status(px: ProxydProcess, i: int) -> dict[str, Any]:
    code, body = fetch_status(px.state_dir / "workers" / f"w{i}" / "proxyd.sock")
    assert code == 200
    return dict(json.loads(body))


def wait(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, KeyError, ValueError, AssertionError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_two_workers_share_the_port_reload_together_restart_and_drain(
        proxyd: Callable[..., ProxydProcess], backend: int) -> None:
    port = free_port()
    cfg = base_config(applications=[{"name": "app", "port": port, "tls": False, "public_prefix": "/app/",
                                     "upstream": f"http://127.0.0.1:{backend}/"}])
    px = proxyd(cfg, extra_args=("--workers", "2"), wait=False)
    px.wait_revision(1, timeout=60)  # two interpreters start: slow on a busy machine
    st = px.status()
    assert [w["state"] for w in st["workers"]] == ["running", "running"] and st["revision"] == 1
    assert "http" in st["workers"][1]["services"] and "media" not in st["workers"][1]["services"]
    assert "media" in st["workers"][0]["services"]
    # one self-signed certificate, made by the parent before the workers started: both serve it
    assert len({worker_status(px, i)["certificate"] for i in (0, 1)}) == 1 and st["certificate"]

    # both accept: 60 connections from 60 source ports, spread by the kernel over the two sockets
    assert [get(port) for _ in range(60)] == [200] * 60
    per_worker = [worker_status(px, i)["services"]["http"]["counters"].get("requests", 0) for i in (0, 1)]
    assert all(n > 0 for n in per_worker) and sum(per_worker) == 60, per_worker
    assert px.status()["services"]["http"]["counters"]["requests"] == 60
    # /metrics on the parent: counters summed, the request-duration histograms merged bucket by bucket
    _, metrics = fetch_status(px.state_dir / "proxyd.sock", "/metrics")
    lines = metrics.decode().splitlines()
    count = [line for line in lines if line.startswith("pforte_http_request_duration_seconds_count")]
    assert count and float(count[0].rsplit(" ", 1)[1]) == 60, count
    inf = [x for x in lines if x.startswith("pforte_http_request_duration_seconds_bucket") and 'le="+Inf"' in x]
    assert inf and float(inf[0].rsplit(" ", 1)[1]) == 60

    # a reload reaches both workers; an invalid file reaches neither
    px.reload(base_config(revision=2, proxy={"name": "two"}, applications=cfg["applications"]), wait=False)
    px.wait_revision(2, timeout=60)
    assert [worker_status(px, i)["revision"] for i in (0, 1)] == [2, 2]
    px.config_path.write_text('{"version": 1, "revision": 3, "bind": 7}')
    assert px.proc is not None
    px.proc.send_signal(signal.SIGHUP)
    wait(lambda: px.status()["last_error"] is not None, "the invalid config reported")
    assert px.status()["revision"] == 2 and [worker_status(px, i)["revision"] for i in (0, 1)] == [2, 2]
    assert "config_invalid" in px.output()

    # a killed worker is restarted and serves the current revision
    victim = px.status()["workers"][1]["pid"]
    os.kill(victim, signal.SIGKILL)
    wait(lambda: (w := px.status()["workers"][1])["pid"] != victim and w["state"] == "running"
         and w["restarts"] == 1 and w["revision"] == 2, "worker 1 restarted")
    assert "event=worker_exited worker=1" in px.log_path.read_text()
    assert get(port) == 200

    # SIGTERM: a request in flight completes, both workers and the parent exit
    pids = [w["pid"] for w in px.status()["workers"]]
    slow: list[int] = []
    threads = [threading.Thread(target=lambda: slow.append(get(port, "/app/slow"))) for _ in range(6)]
    for t in threads:
        t.start()
    wait(lambda: px.status()["services"]["http"]["gauges"]["active_connections"] >= 6, "slow requests in flight")
    px.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(15)
    assert slow == [200] * 6
    assert px.proc.wait(20) == 0
    assert not any(alive(pid) for pid in pids)


def test_workers_after_the_first_run_no_single_process_service() -> None:
    names = ["http", "xmpp", "sip", "media", "provisioning"]
    assert worker_services(0, names) == names
    assert worker_services(1, names) == ["http", "xmpp"]


def test_merge_sums_counters_and_keeps_the_worst_state() -> None:
    a = {"services": {"http": {"state": "running", "listeners": ["http://127.0.0.1:1"],
                               "counters": {"requests": 3}, "gauges": {"active_connections": 1}}}}
    b = {"services": {"http": {"state": "failed", "listeners": ["http://127.0.0.1:1"], "last_error": "boom",
                               "counters": {"requests": 4}, "gauges": {"active_connections": 2}}}}
    m = merge_services([a, b])["http"]
    assert m["state"] == "failed" and m["listeners"] == ["http://127.0.0.1:1"] and m["workers"] == 2
    assert m["counters"] == {"requests": 7} and m["gauges"] == {"active_connections": 3} and m["last_error"] == "boom"


def test_cpus_the_tightest_cgroup_quota_on_the_path_bounds_the_affinity_mask(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    (root / "a" / "b").mkdir(parents=True)
    (root / "cpu.max").write_text("max 100000\n")
    (root / "a" / "cpu.max").write_text("150000 100000\n")  # the parent's limit binds the child
    (root / "a" / "b" / "cpu.max").write_text("400000 100000\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/a/b\n")
    n, why = cpus.available(proc, root, affinity=8)
    assert n == 2 and "1.5" in why and str(root / "a" / "cpu.max") in why
    assert cpus.available(proc, root, affinity=1) == (1, "1 CPU in the affinity mask")
    (root / "a" / "cpu.max").write_text("max 100000\n")
    assert cpus.available(proc, root, affinity=2) == (2, "2 CPUs in the affinity mask")


def test_cpus_cgroup_v1_quota(tmp_path: Path) -> None:
    d = tmp_path / "cg" / "cpu,cpuacct" / "svc"
    d.mkdir(parents=True)
    (d / "cpu.cfs_quota_us").write_text("50000\n")
    (d / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "cgroup"
    proc.write_text("4:memory:/svc\n2:cpu,cpuacct:/svc\n")
    assert cpus.available(proc, tmp_path / "cg", affinity=4)[0] == 1
    (d / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpus.available(proc, tmp_path / "cg", affinity=4) == (4, "4 CPUs in the affinity mask")
    assert cpus.available(tmp_path / "missing", tmp_path / "cg", affinity=3)[0] == 3


def test_the_default_is_one_worker_per_available_cpu_and_status_says_why(
        proxyd: Callable[..., ProxydProcess], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PFORTE_WORKERS")  # the suite's one-process setting (tests/conftest.py)
    n, why = cpus.available()
    px = proxyd(base_config(), wait=False)
    st = px.wait_revision(1, timeout=60)
    assert st["worker_count"] == n and st["workers_why"] == f"auto: {why}"
    if n > 1:
        assert len(st["workers"]) == n
    shown = subprocess.run([sys.executable, "-m", "proxyd", "status", "--state-dir", str(px.state_dir)],
                           capture_output=True, text=True, timeout=30).stdout
    assert f"workers: {n} (auto: {why})" in shown


def test_workers_one_is_one_process(proxyd: Callable[..., ProxydProcess]) -> None:
    st = proxyd(base_config(), extra_args=("--workers", "1")).status()
    assert st["worker_count"] == 1 and "workers" not in st and st["workers_why"] == "--workers 1: one process"


def test_workers_refuses_a_bad_count(tmp_path: Path) -> None:
    from proxyd.cli import main

    assert main(["run", "--state-dir", str(tmp_path / "s"), "--workers", "0"]) == 2
    assert main(["run", "--state-dir", str(tmp_path / "s"), "--workers", "many"]) == 2
