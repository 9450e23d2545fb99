"""bench/common.py: a guarded bench ends every process it started, however it ends — normally, by
an exception, or by a signal — including children that detached (own session, daemonising fork)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench import common

ROOT = Path(__file__).resolve().parents[2]

# A stand-in bench: three kinds of children, then it ends the way argv[1] says.
BENCH = """
import json, subprocess, sys, time
from bench import common
common.guard()
subprocess.Popen(["sleep", "300"])
subprocess.Popen(["sleep", "301"], start_new_session=True)
subprocess.Popen(["sh", "-c", "sleep 302 & exit 0"]).wait()  # the sleep is orphaned: re-parented to us
time.sleep(0.2)
try:
    print(json.dumps(common.descendants()), flush=True)
    if sys.argv[1] == "raise":
        raise RuntimeError("the bench failed half-way")
    if sys.argv[1] == "exit":
        sys.exit(0)
    time.sleep(120)
finally:
    print("finally ran", flush=True)
"""


def start(how: str) -> tuple[subprocess.Popen[str], list[common.Proc]]:
    proc = subprocess.Popen([sys.executable, "-c", BENCH, how], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    children = [tuple(p) for p in json.loads(proc.stdout.readline())]
    return proc, children  # type: ignore[return-value]


def commands(children: list[common.Proc]) -> list[str]:
    return sorted(common.command(pid) for pid, _ in children)


@pytest.mark.parametrize("how", ["exit", "raise"])
def test_every_child_ends_when_the_bench_ends(how: str) -> None:
    proc, children = start(how)
    assert commands(children) == ["sleep 300", "sleep 301", "sleep 302"]
    proc.wait(30)
    assert [p for p in children if common.alive(p)] == []
    if how == "raise":
        assert "the bench failed half-way" in proc.stderr.read()  # type: ignore[union-attr]
    proc.stdout.close()  # type: ignore[union-attr]
    proc.stderr.close()  # type: ignore[union-attr]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_every_child_ends_on_a_stop_signal_and_finally_blocks_run(sig: int) -> None:
    proc, children = start("wait")
    assert len(children) == 3 and all(common.alive(p) for p in children)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + sig
    assert "finally ran" in out
    assert f"{signal.Signals(sig).name}: ending every process" in err
    assert [p for p in children if common.alive(p)] == []


def test_alive_tells_a_reused_pid_from_the_process_it_was() -> None:
    with subprocess.Popen(["sleep", "30"]) as p:
        (me,) = [c for c in common.descendants() if c[0] == p.pid]
        assert common.alive(me)
        assert not common.alive((me[0], me[1] + 1))
        p.kill()
        p.wait()
        assert not common.alive(me)


def test_record_appends_json_lines_for_the_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_RESULTS", str(tmp_path / "r.jsonl"))
    common.record("xmpp bulk MB/s", "haproxy", 0.8412345, pforte_mbps=900.0)
    common.record("xmpp RSS per idle session", "haproxy", 1.5, better="lower")
    lines = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert lines == [
        {"workload": "xmpp bulk MB/s", "anchor": "haproxy", "ratio": 0.8412, "better": "higher", "pforte_mbps": 900.0},
        {"workload": "xmpp RSS per idle session", "anchor": "haproxy", "ratio": 1.5, "better": "lower"},
    ]
    common.RESULTS.clear()


def test_end_all_in_a_guarded_process_leaves_nothing(tmp_path: Path) -> None:
    """Through the driver's own path: a child that ignores SIGTERM is SIGKILLed after the grace."""
    script = ("import subprocess, time, json; from bench import common; common.guard();"
              "subprocess.Popen(['sh', '-c', 'trap \"\" TERM; sleep 303']); time.sleep(0.3);"
              "kids = common.descendants(); t = time.monotonic(); common.end_all(grace=1.0);"
              "print(json.dumps([kids, common.descendants(), time.monotonic() - t]))")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=True).stdout
    kids, after, took = json.loads(out)
    assert len(kids) >= 1 and after == [] and took < 10
    assert not any(common.alive(tuple(k)) for k in kids)  # type: ignore[arg-type]
