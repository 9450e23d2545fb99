"""`make run`: the whole system in the foreground — manager, demo backend, a registered proxyd.

Steps: migrate the manager's SQLite DB, create the demo data (`pforte-manager pforte_demo`: admin
user, instance `demo`, proxy `demo` on high ports, a registration URL), start the manager on
127.0.0.1:8000 and the demo backend on 18080, register proxyd into .state/proxy (reused when it is
already registered) and run it. Ctrl-C stops every process this script started, by PID.
Without the manager package it falls back to proxyd standalone on examples/standalone.json.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".state"
MANAGER = "http://127.0.0.1:8000"
BIN = Path(sys.executable).parent


def tool(name: str) -> str | None:
    path = BIN / name
    return str(path) if path.exists() else shutil.which(name)


def main() -> int:
    manager = tool("pforte-manager")
    if manager is None:
        print("pforte-manager is not installed: running proxyd standalone on examples/standalone.json", flush=True)
        return foreground(standalone(), "  instance web UI through the proxy: https://localhost:8443/demo/\n"
                          "  status: .venv/bin/proxyd status --state-dir .state/standalone\n")
    env = {**os.environ, "PFORTE_MANAGER_DATA": os.environ.get("PFORTE_MANAGER_DATA", str(STATE / "manager"))}
    Path(env["PFORTE_MANAGER_DATA"]).mkdir(parents=True, exist_ok=True)
    subprocess.run([manager, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    demo = subprocess.run([manager, "pforte_demo"], env=env, check=True, capture_output=True, text=True).stdout
    procs = [subprocess.Popen([manager, "serve", "--host", "127.0.0.1", "--port", "8000"], env=env)]
    procs.append(subprocess.Popen([sys.executable, "-m", "proxyd.demo_backend", "--port", "18080"]))
    try:
        wait_http(MANAGER + "/", 60)
        register(demo)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"make run: {exc}", file=sys.stderr)
        stop(procs)
        return 1
    procs.append(subprocess.Popen([sys.executable, "-m", "proxyd", "run", "--state-dir", str(STATE / "proxy"),
                                   "--admin", "127.0.0.1:19180"]))
    # pforte_demo's own lines (admin user and password); the one-time URL is already used.
    info = "".join(f"    {line}\n" for line in demo.splitlines() if line.strip() and "REGISTRATION_URL=" not in line)
    return foreground(procs, f"  manager UI: {MANAGER}/\n{info}"
                      "  instance web UI through the proxy: https://localhost:8443/demo/\n"
                      "  proxy status: .venv/bin/proxyd status --state-dir .state/proxy\n"
                      "  metrics: http://127.0.0.1:19180/metrics\n")


def register(demo_output: str) -> None:
    """Register .state/proxy with the URL pforte_demo printed, unless it is registered already."""
    if (STATE / "proxy" / "agent.json").exists():
        print("proxyd in .state/proxy is already registered: reusing it", flush=True)
        return
    match = re.search(r"^REGISTRATION_URL=(\S+)", demo_output, re.M)
    if match is None:
        raise RuntimeError("pforte_demo printed no REGISTRATION_URL")
    # The one-time URL goes through stdin so it never shows up in the process list.
    subprocess.run([sys.executable, "-m", "proxyd", "register", "-", "--state-dir", str(STATE / "proxy")],
                   input=match[1] + "\n", text=True, check=True)


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()  # noqa: S310 - loopback only
            return
        except urllib.error.HTTPError:
            return  # it answers; a 404/302 at / is fine
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"the manager did not answer on {url} within {timeout:.0f} s")


def standalone() -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen([sys.executable, "-m", "proxyd.demo_backend", "--port", "18080"]),
        subprocess.Popen([sys.executable, "-m", "proxyd", "run", "--config", str(ROOT / "examples/standalone.json"),
                          "--state-dir", str(STATE / "standalone"), "--admin", "127.0.0.1:19180"]),
    ]


def foreground(procs: list[subprocess.Popen], urls: str) -> int:
    print(f"\npforte is starting:\n{urls}Ctrl-C stops everything.\n", flush=True)
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        print("make run: a process exited; stopping the others", file=sys.stderr)
    except KeyboardInterrupt:
        # The terminal's Ctrl-C reached the children too; a second signal would make proxyd skip
        # draining, so give them a moment before signalling the ones still running.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(p.poll() is None for p in procs):
            time.sleep(0.1)
    stop(procs)
    return 0


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


if __name__ == "__main__":
    raise SystemExit(main())
