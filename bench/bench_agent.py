"""Agent latencies: proxyd start -> online (config applied), and publish -> live over 50 changes.

Uses the stand-in manager from the tests (the real manager adds its save/compile time on top), a
real `proxyd run --state-dir` process and its control socket. Figures on a shared machine are noisy.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import common
from proxyd.admin import fetch_status
from proxyd.agent import state as agent_state
from proxyd.statedir import StateDir
from tests.proxyd.agent.fake_manager import FakeManager
from tests.support import base_config

CHANGES = 50


def wait_revision(sock: Path, revision: int, timeout: float = 20.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            code, body = fetch_status(sock)
            st = json.loads(body)
            if code == 200 and st.get("revision") == revision and st["manager"]["state"] == "online":
                return time.monotonic() - start
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.002)
    raise RuntimeError(f"revision {revision} not live in {timeout}s")


def main() -> None:
    common.guard()
    mgr = FakeManager().start()
    with tempfile.TemporaryDirectory() as tmp:
        state = StateDir(Path(tmp) / "state").ensure()
        agent_state.save(state, agent_state.AgentState(mgr.url, 1, "bench", "key-1"))
        mgr.publish(base_config(revision=1))
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "proxyd", "run", "--state-dir", str(state.root),
                                 "--admin", "off", "--log-level", "WARNING"])
        try:
            wait_revision(state.control_socket, 1, 30)
            online = time.monotonic() - t0
            lat = []
            for rev in range(2, CHANGES + 2):
                mgr.publish(base_config(revision=rev, proxy={"name": f"bench{rev}"}))
                lat.append(wait_revision(state.control_socket, rev))
        finally:
            proc.terminate()
            proc.wait(15)
            mgr.stop()
    q = statistics.quantiles(lat, n=100)
    print(f"start -> online (process start, config applied): {online * 1000:.0f} ms")
    print(f"publish -> live over {CHANGES} changes: p50 {q[49] * 1000:.1f} ms  p95 {q[94] * 1000:.1f} ms  "
          f"max {max(lat) * 1000:.1f} ms")
    common.record("agent publish -> live", None, None, online_ms=online * 1000, p50_ms=q[49] * 1000,
                  p95_ms=q[94] * 1000)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
