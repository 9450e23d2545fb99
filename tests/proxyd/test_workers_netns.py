"""`network` (netconf) with `--workers 2`, in a network namespace this test makes: the parent
applies it once, before any worker binds (both workers listen on the address it adds), and a
network part that cannot be applied is refused before a worker sees the revision."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from proxyd.admin import fetch_status
from tests.netconf.test_netns import OUTSIDE, P1, host, sh  # noqa: F401 - host is the namespace fixture
from tests.support import base_config, stop_process

pytestmark = pytest.mark.netns


def status(sock: Path) -> dict[str, Any]:
    code, body = fetch_status(sock)
    assert code == 200
    return dict(json.loads(body))


def wait_for(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            if (last := check()):
                return last
        except (OSError, KeyError, ValueError, AssertionError) as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what} (last: {last!r})")


def test_the_parent_applies_the_network_once_before_the_workers_bind(host: str, tmp_path: Path) -> None:  # noqa: F811
    cfg = base_config(bind="0.0.0.0", network={"mode": "manual", **P1},
                      services={"web": {"mode": "web_and_rest", "port": 8443}})
    path, state, out = tmp_path / "p.json", tmp_path / "s", tmp_path / "proxyd.out"
    path.write_text(json.dumps(cfg))
    with open(out, "wb") as log:
        proc = subprocess.Popen(["ip", "netns", "exec", host, sys.executable, "-m", "proxyd", "run", "--config",
                                 str(path), "--state-dir", str(state), "--admin", "off", "--workers", "2",
                                 "--drain-timeout", "1"], stdout=log, stderr=subprocess.STDOUT)
    try:
        st = wait_for(lambda: (s := status(state / "proxyd.sock"))["revision"] == 1 and s, "revision 1 in both")
        assert st["network"]["mode"] == "manual" and st["network"]["interface"] == "eth1", st["network"]
        assert st["network"]["changes"] and st["network"]["changes"][0] == "link_up"
        for i in (0, 1):
            w = status(state / "workers" / f"w{i}" / "proxyd.sock")
            assert w["services"]["http"]["listeners"] == ["https://10.1.0.10:8443"]
            assert w["network"] == {"applied_by": "parent"}
        assert out.read_text().count("event=network_applied") == 1  # once, not once per worker
        assert "via 10.1.0.254 dev eth1 table 101" in sh("ip", "-n", host, "route", "get", OUTSIDE, "from", "10.1.0.10")

        # a network part that fails (no such interface) is refused in the parent: no worker saw it
        path.write_text(json.dumps(base_config(revision=2, bind="0.0.0.0", services=cfg["services"],
                                               network={"mode": "manual", **P1, "interface": "eth9"})))
        st = wait_for(lambda: (s := status(state / "proxyd.sock"))["last_error"] and s, "revision 2 refused")
        assert "network" in st["last_error"] and "eth9" in st["last_error"], st["last_error"]
        assert st["revision"] == 1 and st["revision_wanted"] == 1
        text = out.read_text()
        assert "event=config_fanout revision=2" not in text and text.count("event=network_applied") == 1
        assert [status(state / "workers" / f"w{i}" / "proxyd.sock")["revision"] for i in (0, 1)] == [1, 1]
    finally:
        assert stop_process(proc, 20) == 0
