"""bench/run.py, the `make bench` driver: interrupted or with a bench that crashes, no process of
the run survives — checked by PID (and start time) against every descendant seen while it ran."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import common
from tests.support import require_peer

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.peer


def start_http_bench(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    for peer in ("nginx", "wrk", "taskset"):
        require_peer(peer)
    log = tmp_path / "bench.out"
    with open(log, "wb") as out:
        driver = subprocess.Popen([sys.executable, "bench/run.py", "--quick", "--out", str(tmp_path), "http"],
                                  cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    return driver, log


def wait_for_load(driver: subprocess.Popen[bytes], log: Path) -> list[common.Proc]:
    """Every descendant of the driver once wrk runs against pforte (nginx, haproxy and proxyd are up)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert driver.poll() is None, log.read_text()
        procs = common.descendants(driver.pid)
        cmds = [common.command(pid) for pid, _ in procs]
        if any("wrk" in c for c in cmds) and any("proxyd run" in c for c in cmds):
            return procs
        time.sleep(0.1)
    raise AssertionError(f"the bench never got to load:\n{log.read_text()}")


def survivors(procs: list[common.Proc]) -> list[str]:
    return [f"{pid} {common.command(pid)}" for pid, start in procs if common.alive((pid, start))]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_bench_leaves_no_process_behind(tmp_path: Path, sig: int) -> None:
    driver, log = start_http_bench(tmp_path)
    try:
        seen = wait_for_load(driver, log)
        kinds = " ".join(common.command(pid) for pid, _ in seen)
        assert "nginx" in kinds and "proxyd run" in kinds and "bench.run --one http" in kinds
        driver.send_signal(sig)
        assert driver.wait(60) == 128 + sig
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert survivors(seen) == []
    run = json.loads(next(tmp_path.glob("*-quick.json")).read_text())
    assert run["complete"] is False  # the partial run is still written, and says it is partial


def test_a_bench_killed_outright_has_its_orphans_ended_by_the_driver(tmp_path: Path) -> None:
    """SIGKILL gives the bench no chance to clean up: its children are re-parented to the driver
    (the subreaper), which names and ends them, then goes on."""
    driver, log = start_http_bench(tmp_path)
    try:
        seen = wait_for_load(driver, log)
        (bench,) = [p for p in seen if "bench.run --one http" in common.command(p[0])]
        subprocess.run(["kill", "-KILL", str(bench[0])], check=True)
        assert driver.wait(60) == 1  # the bench failed
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert survivors(seen) == []
    out = log.read_text()
    assert "bench http left pid" in out and "failed (exit -9)" in out


def test_the_run_total_holds_when_a_bench_overruns() -> None:
    from bench.plans import Plan
    from bench.run import allowance

    a, b, c = Plan("a", 100), Plan("b", 100), Plan("c", 40)
    assert allowance(a, 600, [b, c]) == 150  # room: 1.5x its budget
    assert allowance(a, 200, [b, c]) == 95  # the later ones keep 3/4 of their budgets
    assert allowance(a, 120, [b, c]) == 50  # at least half its own budget ...
    assert allowance(a, 30, [b, c]) == 30  # ... but never past the run's end
    assert allowance(c, 0, []) == 0
