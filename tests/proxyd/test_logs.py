"""proxyd under systemd: stderr is the journal stream, so each line starts with its priority."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.support import base_config, stop_process


def test_journald_priority_prefixes(tmp_path: Path) -> None:
    cfg = tmp_path / "proxy.json"
    cfg.write_text(json.dumps(base_config(revision=1)))
    log = tmp_path / "proxyd.out"
    with open(log, "wb") as out:
        st = os.fstat(out.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        proc = subprocess.Popen([sys.executable, "-m", "proxyd", "run", "--config", str(cfg), "--state-dir",
                                 str(tmp_path / "state"), "--admin", "off", "--log-format", "json"],
                                env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while "event=config_applied" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        cfg.write_text("{")  # a broken file: an error line
        deadline = time.monotonic() + 30
        while "config_invalid" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        stop_process(proc)
    lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
    applied = next(ln for ln in lines if "event=config_applied" in ln)
    assert applied.startswith("<6>{") and json.loads(applied[3:])["level"] == "info"
    assert next(ln for ln in lines if "config_invalid" in ln).startswith("<3>")
    assert all(ln[:1] == "<" for ln in lines), lines
