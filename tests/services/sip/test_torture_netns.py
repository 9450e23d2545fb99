"""All RFC 4475 torture messages through a running proxyd, inside a network namespace with only
`lo` up (the messages name non-loopback hosts)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services.sip.torture import cases, relay_outcome

pytestmark = pytest.mark.netns
ROOT = Path(__file__).resolve().parents[3]


def test_torture_through_running_relay() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private network namespace")
    script = f"ip link set lo up && exec {sys.executable} -m tests.services.sip.netns_torture"
    res = subprocess.run(["unshare", "-n", "--", "sh", "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    want = {c["name"]: relay_outcome(c["name"]) for c in cases()}
    assert got == want
