"""Whoever answers in the manager's place: a real `proxyd run` against a hostile HTTP server on loopback.

Each answer below made proxyd exit or balloon before: deeply nested JSON (RecursionError), a
256 MiB body (read whole into memory, then decoded), a body announced larger than any config, a
gzip bomb, a body dripped forever. Now each is one logged error and `last_error` in the status,
the last good revision keeps running, and the agent retries with backoff.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from proxyd.agent import state as agent_state
from proxyd.statedir import StateDir
from proxyd.wirejson import MAX_CONFIG_BYTES
from tests.proxyd.agent.fake_manager import FakeManager
from tests.proxyd.agent.managed import ManagedProxyd
from tests.support import base_config

MiB = 1024 * 1024


def _head(h: Any, headers: dict[str, str]) -> None:
    h.send_response(200)
    for k, v in headers.items():
        h.send_header(k, v)
    h.end_headers()


def deep_json(h: Any) -> None:
    body = b"[" * 30_000 + b"]" * 30_000  # within the small-answer bound: only its depth is wrong
    _head(h, {"Content-Length": str(len(body)), "ETag": '"9"'})
    h.wfile.write(body)


def deep_object(h: Any) -> None:
    body = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
    _head(h, {"Content-Length": str(len(body)), "ETag": '"9"'})
    h.wfile.write(body)


def huge_stream(h: Any) -> None:
    """256 MiB without a length (ends with the connection): the agent must stop reading at its bound."""
    _head(h, {"Connection": "close", "ETag": '"9"'})
    h.close_connection = True
    chunk = b'{"x": "' + b"a" * (MiB - 8) + b'"'
    try:
        for _ in range(256):
            h.wfile.write(chunk)
    except OSError:
        pass  # the agent hung up at its bound: what we wanted


def announced_huge(h: Any) -> None:
    _head(h, {"Content-Length": str(300 * MiB), "ETag": '"9"'})
    try:
        h.wfile.write(b"{" * 4096)
    except OSError:
        pass


def gzip_bomb(h: Any) -> None:
    body = gzip.compress(b"[" + b" " * (64 * MiB) + b"]")
    _head(h, {"Content-Length": str(len(body)), "Content-Encoding": "gzip", "ETag": '"9"'})
    h.wfile.write(body)


def drip(h: Any) -> None:
    """One byte every second, forever: httpx's per-read timeout alone would never fire."""
    _head(h, {"Content-Length": str(MiB), "ETag": '"9"'})
    try:
        while h.server.dripping:
            h.wfile.write(b" ")
            h.wfile.flush()
            time.sleep(1.0)
    except OSError:
        pass


def valid_json_wrong_shape(h: Any) -> None:
    body = json.dumps({f"k{i}": [] for i in range(100_000)}).encode()
    _head(h, {"Content-Length": str(len(body)), "ETag": '"9"'})
    h.wfile.write(body)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[FakeManager, ManagedProxyd]]:
    mgr = FakeManager().start()
    assert mgr.server is not None
    mgr.server.dripping = True  # type: ignore[attr-defined]
    state = StateDir(tmp_path / "state").ensure()
    agent_state.save(state, agent_state.AgentState(mgr.url, 7, "edge", "key-1"))
    p = ManagedProxyd(state.root)
    yield mgr, p
    mgr.server.dripping = False  # type: ignore[attr-defined]
    p.stop()
    mgr.stop()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _good_then(mgr: FakeManager, p: ManagedProxyd, hostile: Callable[[Any], None]) -> int:
    """Revision 1 applied from a well-behaved manager, revision 2 through the poll parked before,
    then `hostile` answers every config request."""
    mgr.publish(base_config(revision=1, proxy={"name": "edge1"}))
    p.start()
    p.wait_status(lambda s: s["revision"] == 1 and s["manager"]["state"] == "online")
    mgr.wait_parked_poll()
    assert p.proc is not None
    before = rss_kib(p.proc.pid)
    mgr.hostile_config = hostile
    mgr.publish(base_config(revision=2, proxy={"name": "edge2"}))  # wakes the parked poll: hostile from now on
    p.wait_status(lambda s: s["revision"] == 2)
    return before


@pytest.mark.parametrize(("hostile", "reason"), [
    (deep_json, "nested deeper than 32 levels"),
    (deep_object, "nested deeper than 32 levels"),
    (huge_stream, f"larger than {MAX_CONFIG_BYTES} bytes"),
    (announced_huge, f"larger than {MAX_CONFIG_BYTES} bytes"),
    (gzip_bomb, "Content-Encoding 'gzip'"),
    (valid_json_wrong_shape, "unknown field"),
])
def test_hostile_config_answer_is_one_error_and_the_last_good_keeps_running(
    setup: tuple[FakeManager, ManagedProxyd], hostile: Callable[[Any], None], reason: str,
) -> None:
    mgr, p = setup
    before = _good_then(mgr, p, hostile)
    st = p.wait_status(lambda s: reason in (s["manager"]["last_error"] or ""), timeout=30)
    assert st["revision"] == 2 and st["proxy"] == "edge2"  # the last good config keeps running
    assert p.proc is not None
    requests = mgr.config_requests
    time.sleep(4)
    assert p.proc.poll() is None
    # retried with backoff (capped at 1 s here), not in a busy loop
    assert 1 <= mgr.config_requests - requests <= 8
    # a bound on what one answer may cost: far below the 256 MiB the body would have been
    assert rss_kib(p.proc.pid) - before < 64 * 1024, (before, rss_kib(p.proc.pid))
    log = p.log.read_text()
    assert "RecursionError" not in log and "Traceback" not in log
    # once per reason while it stays the same, however often it is retried
    lines = [ln for ln in log.splitlines() if reason.split(" ")[0] in ln and "event=" in ln]
    assert 1 <= len(lines) <= 2 + (50 if hostile is valid_json_wrong_shape else 0), lines[:5]
    assert len(log) < 200_000  # never the body, never a line per retry

    # the manager behaves again: the next good revision is applied and the error is gone
    mgr.hostile_config = None
    mgr.hostile_heartbeat = None
    mgr.publish(base_config(revision=3, proxy={"name": "edge3"}))
    st = p.wait_status(lambda s: s["revision"] == 3, timeout=30)
    assert st["manager"]["last_error"] is None and st["manager"]["state"] == "online"


def test_dripped_answer_ends_at_the_request_deadline(setup: tuple[FakeManager, ManagedProxyd]) -> None:
    mgr, p = setup
    _good_then(mgr, p, drip)
    # poll-wait 5 s + 3 x connect timeout 10 s: the whole answer has a deadline, not each read
    st = p.wait_status(lambda s: s["manager"]["state"] == "unreachable", timeout=60)
    assert "no complete answer within" in (st["manager"]["reason"] or "")
    assert st["revision"] == 2
    mgr.server.dripping = False  # type: ignore[union-attr]


def test_hostile_heartbeat_answer(setup: tuple[FakeManager, ManagedProxyd]) -> None:
    mgr, p = setup
    mgr.hostile_heartbeat = deep_json
    mgr.publish(base_config(revision=1))
    p.start()
    st = p.wait_status(lambda s: "heartbeat: HTTP 200 answer is nested deeper" in (s["manager"]["last_error"] or ""))
    assert st["revision"] == 1
    time.sleep(3)  # heartbeats come again (every apply and state change): still one line
    assert p.proc is not None and p.proc.poll() is None
    log = p.log.read_text()
    assert "Traceback" not in log and log.count("event=manager_answer_refused") == 1
    mgr.hostile_heartbeat = None
