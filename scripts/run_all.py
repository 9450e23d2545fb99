"""`make run`: start the demo backend and proxyd on examples/standalone.json in the foreground.

(The agent issue grows this into manager + registered proxyd + demo backend.) Ctrl-C stops
every process this script started, by PID.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    state = ROOT / ".state" / "standalone"
    procs = [
        subprocess.Popen([sys.executable, "-m", "proxyd.demo_backend", "--port", "18080"]),
        subprocess.Popen([sys.executable, "-m", "proxyd", "run", "--config", str(ROOT / "examples/standalone.json"),
                          "--state-dir", str(state), "--admin", "127.0.0.1:19180"]),
    ]
    print("\npforte is starting:\n"
          "  instance web UI through the proxy: https://localhost:8443/demo/\n"
          "  status: .venv/bin/proxyd status --state-dir .state/standalone\n"
          "  metrics: http://127.0.0.1:19180/metrics\n"
          "Ctrl-C stops everything.\n", flush=True)
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
