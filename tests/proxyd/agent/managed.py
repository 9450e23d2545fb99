"""A real `proxyd run --state-dir` (managed mode) as a subprocess, and its status over the control socket."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from proxyd.admin import fetch_status
from tests.support import stop_process


class ManagedProxyd:
    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = state_dir.parent / "proxyd.out"

    def start(self, *extra: str) -> ManagedProxyd:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "proxyd", "run", "--state-dir", str(self.state_dir), "--admin", "off",
                 "--drain-timeout", "1", "--heartbeat-interval", "30", "--poll-wait", "5", "--backoff-max", "1",
                 *extra],
                stdout=out, stderr=subprocess.STDOUT,
            )
        return self

    def stop(self) -> None:
        stop_process(self.proc, 15)

    def status(self) -> dict[str, Any]:
        code, body = fetch_status(self.state_dir / "proxyd.sock")
        assert code == 200
        return dict(json.loads(body))

    def wait_status(self, pred: Any, timeout: float = 20.0) -> dict[str, Any]:
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            try:
                last = self.status()
                if pred(last):
                    return last
            except (OSError, ValueError, AssertionError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"status never matched; last={last}\n{self.log.read_text()}")
