"""The manager's log: uvicorn's access lines and django.request errors survive, in text or JSON, and
under systemd (JOURNAL_STREAM names our stderr) every line carries its journald priority."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support import free_port, stop_process


def serve(tmp_path: Path, *args: str, journal: bool) -> str:
    """Run `pforte-manager serve` with stderr in a file, ask for a page and a missing one; its log."""
    env = {"PATH": os.environ["PATH"], "PFORTE_MANAGER_DATA": str(tmp_path / "data")}
    subprocess.run([sys.executable, "-m", "manager.cli", "migrate", "-v0"], env=env, check=True, timeout=120)
    log = tmp_path / "serve.log"
    port = free_port()
    with open(log, "wb") as out:
        if journal:  # what systemd does: JOURNAL_STREAM=<device>:<inode> of the stream it gave as stderr
            st = os.fstat(out.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        proc = subprocess.Popen([sys.executable, "-m", "manager.cli", "serve", "--port", str(port), *args],
                                env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/no-such-page", timeout=5)
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
        time.sleep(0.5)
    finally:
        stop_process(proc)
    return log.read_text()


def test_json_lines_with_access_log_and_request_errors(tmp_path: Path) -> None:
    lines = [json.loads(ln) for ln in serve(tmp_path, "--log-format", "json", journal=False).splitlines()
             if ln.strip()]
    access = [ln for ln in lines if ln["logger"] == "uvicorn.access"]
    assert any("GET /healthz" in ln["msg"] and "200" in ln["msg"] for ln in access), lines
    assert any(ln["logger"] == "django.request" and ln["level"] == "warning" and "/no-such-page" in ln["msg"]
               for ln in lines), lines


def test_journald_priorities_when_stderr_is_the_journal(tmp_path: Path) -> None:
    text = serve(tmp_path, journal=True)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert lines and all(ln[:3] in ("<2>", "<3>", "<4>", "<6>", "<7>") for ln in lines), lines
    assert any(ln.startswith("<6>") and "uvicorn.access" in ln and "/healthz" in ln for ln in lines)
    assert any(ln.startswith("<4>") and "django.request" in ln and "Not Found" in ln for ln in lines)


def test_no_prefix_when_the_journal_stream_is_not_our_stderr(tmp_path: Path) -> None:
    # inherited JOURNAL_STREAM, stderr redirected elsewhere (as a test or a pipe): plain lines
    env = {**os.environ, "JOURNAL_STREAM": "1:1"}
    done = subprocess.run([sys.executable, "-c", "from proxyd.logs import stderr_is_journal as j; print(j())"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == "False"
