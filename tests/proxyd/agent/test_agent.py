"""A real `proxyd run --state-dir` (managed mode) against the stand-in manager.

Covers: first config applied and acknowledged in a heartbeat, long-poll picks up a new revision,
an invalid revision is reported while the previous one keeps running, manager down -> keep serving,
restart without the manager -> last good config, manager back -> online, revoked key -> stop asking.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxyd.admin import fetch_status
from proxyd.agent import state as agent_state
from proxyd.statedir import StateDir
from tests.proxyd.agent.fake_manager import FakeManager
from tests.proxyd.agent.managed import ManagedProxyd
from tests.support import base_config


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[FakeManager, ManagedProxyd]]:
    mgr = FakeManager().start()
    state = StateDir(tmp_path / "state").ensure()
    agent_state.save(state, agent_state.AgentState(mgr.url, 7, "edge", "key-1"))
    p = ManagedProxyd(state.root)
    yield mgr, p
    p.stop()
    mgr.stop()


def test_managed_lifecycle(setup: tuple[FakeManager, ManagedProxyd]) -> None:
    mgr, p = setup
    mgr.publish(base_config(revision=1))
    p.start()
    st = p.wait_status(lambda s: s["revision"] == 1 and s["manager"]["state"] == "online")
    assert st["manager"]["url"] == mgr.url and st["manager"]["last_contact"]
    mgr.wait_heartbeat(lambda hb: hb["applied_revision"] == 1)

    # A new revision arrives through the long poll and is acknowledged at once.
    mgr.publish(base_config(revision=2, proxy={"name": "edge2"}))
    p.wait_status(lambda s: s["revision"] == 2 and s["proxy"] == "edge2")
    mgr.wait_heartbeat(lambda hb: hb["applied_revision"] == 2 and hb["last_error"] is None)

    # An invalid revision is reported with its problem; revision 2 keeps running.
    bad = base_config(revision=3)
    bad["services"]["web"]["mode"] = "bogus"
    mgr.publish(bad)
    hb = mgr.wait_heartbeat(lambda hb: hb["last_error"] is not None)
    assert hb["applied_revision"] == 2 and "services.web.mode" in hb["last_error"]
    assert p.status()["revision"] == 2
    shown = subprocess.run([sys.executable, "-m", "proxyd", "status", "--state-dir", str(p.state_dir)],
                           capture_output=True, text=True, timeout=30).stdout
    assert f"manager: {mgr.url}  state: online" in shown and "revision applied: 2" in shown
    assert "rejected revision: revision 3: services.web.mode" in shown
    # ... and /metrics says so too: the manager is online, heartbeats go through, one apply failed
    assert p.status()["manager"]["last_heartbeat_at"] > time.time() - 60
    _, metrics = fetch_status(p.state_dir / "proxyd.sock", "/metrics")
    assert b'\npforte_manager_state{state="online"} 1.0\n' in metrics
    assert b'\npforte_manager_state{state="unreachable"} 0.0\n' in metrics
    assert b"\npforte_config_apply_failures_total 1.0\n" in metrics

    # Manager down: proxyd keeps serving revision 2 and says the manager is unreachable.
    port = mgr.port
    mgr.stop()
    st = p.wait_status(lambda s: s["manager"]["state"] == "unreachable")
    assert st["revision"] == 2 and p.proc is not None and p.proc.poll() is None

    # Restart proxyd without a manager: the last good config (revision 2) is served.
    p.stop()
    p.start()
    st = p.wait_status(lambda s: s["revision"] == 2 and s["manager"]["state"] == "unreachable")
    assert st["proxy"] == "edge2"

    # Manager back on the same address: online again, heartbeat acknowledges revision 2.
    mgr2 = FakeManager(port)
    mgr2.config, mgr2.revision = mgr.config, mgr.revision
    mgr2.publish(base_config(revision=4, proxy={"name": "edge4"}))
    mgr2.start()
    try:
        p.wait_status(lambda s: s["manager"]["state"] == "online" and s["revision"] == 4)
        mgr2.wait_heartbeat(lambda hb: hb["applied_revision"] == 4)
    finally:
        mgr2.stop()


def test_a_manager_back_with_the_same_revision_hears_a_heartbeat_while_the_poll_waits(
    setup: tuple[FakeManager, ManagedProxyd],
) -> None:
    """The restarted manager parks the agent's long-poll (the proxy has its revision) and says nothing
    for the whole wait: the heartbeat, retried on its own backoff, is what reports the proxy back."""
    mgr, p = setup
    mgr.publish(base_config(revision=1))
    p.start("--poll-wait", "30")  # far longer than the heartbeat retry (backoff capped at 1 s)
    p.wait_status(lambda s: s["revision"] == 1 and s["manager"]["state"] == "online")
    port = mgr.port
    mgr.stop()
    p.wait_status(lambda s: s["manager"]["state"] == "unreachable")
    mgr2 = FakeManager(port)
    mgr2.publish(base_config(revision=1))
    mgr2.start()
    try:
        mgr2.wait_parked_poll()
        mgr2.wait_heartbeat(lambda hb: hb["applied_revision"] == 1, timeout=10)
        assert mgr2.parked_polls == 1 and mgr2.config_requests == 1  # the poll is still waiting
        p.wait_status(lambda s: s["manager"]["state"] == "online", 5)
    finally:
        mgr2.stop()


def test_revoked_key_stops_asking_and_keeps_serving(setup: tuple[FakeManager, ManagedProxyd]) -> None:
    mgr, p = setup
    mgr.publish(base_config(revision=5))
    p.start()
    p.wait_status(lambda s: s["revision"] == 5 and s["manager"]["state"] == "online")
    mgr.wait_parked_poll()
    # the heartbeat after an apply is jittered (0-3 s): it must not be the one that meets the revoked key
    mgr.wait_heartbeat(lambda hb: hb["applied_revision"] == 5, timeout=10)
    mgr.api_keys.clear()
    # The long poll already in flight still delivers revision 6; the heartbeat after it gets 401.
    mgr.publish(base_config(revision=6))
    st = p.wait_status(lambda s: s["manager"]["state"] == "revoked")
    assert st["revision"] == 6
    count = len(mgr.heartbeats)
    mgr.api_keys.add("key-1")  # even if the key worked again, a revoked agent does not ask any more
    mgr.publish(base_config(revision=7))
    time.sleep(1.5)
    assert len(mgr.heartbeats) == count
    assert p.status()["revision"] == 6
    assert "event=manager_state state=revoked" in p.log.read_text()


def test_first_start_without_manager_serves_nothing_but_keeps_trying(
    setup: tuple[FakeManager, ManagedProxyd],
) -> None:
    mgr, p = setup
    mgr.stop()
    p.start()
    st = p.wait_status(lambda s: s["manager"]["state"] == "unreachable")
    assert st["revision"] is None
    time.sleep(2.5)  # several retries (backoff capped at 1 s) ...
    log = p.log.read_text()
    assert log.count("state=unreachable") == 1  # ... but logged once per state change


def test_manager_ignoring_etag_does_not_cause_a_busy_loop(setup: tuple[FakeManager, ManagedProxyd]) -> None:
    mgr, p = setup
    mgr.ignore_etag = True
    mgr.publish(base_config(revision=1))
    p.start()
    p.wait_status(lambda s: s["revision"] == 1 and s["manager"]["state"] == "online")
    before = mgr.config_requests
    time.sleep(3)
    assert mgr.config_requests - before <= 5  # about one per second, not thousands
