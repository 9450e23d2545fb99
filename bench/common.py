"""What every bench shares: no process outlives the bench that started it, and every result is kept
for the run's JSON as well as printed.

`guard()` (first line of each bench's `main()`, and of the `make bench` driver) makes the process
the child subreaper of everything it starts — a child that detaches (`start_new_session=True`, a
daemonising fork) is re-parented to it, not to init — and ends all of its descendants at exit, on
an exception, on SIGINT / SIGTERM / SIGHUP, and when its own parent dies (PDEATHSIG). Descendants
are found by walking /proc, so a bench that starts its peers with plain `subprocess.Popen` is
covered without changing how it starts them.

`record()` keeps one result: a workload, the anchor it is compared with (nginx, kamailio,
rtpengine, haproxy, or None for an absolute figure), pforte/anchor and the figures behind it. When
the driver runs the bench, `BENCH_RESULTS` names the JSON-lines file it collects them from.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

#: a process as the kernel knows it: (pid, start time in clock ticks since boot) — a pid alone may
#: be reused by the time it is signalled or asserted on
Proc = tuple[int, int]

_guarded = False
_stopping = False
RESULTS: list[dict[str, Any]] = []


def _prctl(option: int, arg: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, arg, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option})")


# -- processes -----------------------------------------------------------------------------------
def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (field 3, the state, is index 0)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(p: Proc) -> bool:
    """The same process still exists and is not a zombie."""
    f = _stat(p[0])
    return f is not None and int(f[19]) == p[1] and f[0] not in ("Z", "X")


def descendants(root: int | None = None) -> list[Proc]:
    """Every live descendant of `root` (default: this process), parents before their children."""
    children: dict[int, list[Proc]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (f := _stat(int(d.name))) is not None and f[0] not in ("Z", "X"):
            children.setdefault(int(f[1]), []).append((int(d.name), int(f[19])))
    out: list[Proc] = []
    todo = [os.getpid() if root is None else root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child[0])
    return out


def ancestors() -> set[int]:
    """This process and its parents up to init."""
    out, pid = set(), os.getpid()
    while pid > 1 and pid not in out and (f := _stat(pid)) is not None:
        out.add(pid)
        pid = int(f[1])
    return out


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _reap() -> None:
    """Collect exited children (re-parented orphans included) so they do not stay zombies."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def _signal(procs: Iterable[Proc], sig: int) -> None:
    mine = {pid for pid, _ in procs}
    own_group = os.getpgrp()
    for p in procs:
        if not alive(p):
            continue
        with contextlib.suppress(OSError):
            group = os.getpgid(p[0])
            # its whole group, when that group is one of ours (a child started in its own session)
            if group != own_group and group in mine:
                os.killpg(group, sig)
            os.kill(p[0], sig)


def end_all(grace: float = 5.0) -> list[Proc]:
    """End every descendant: SIGTERM to each (and its process group), SIGKILL after `grace` s to
    what is left; repeated until none is left, since orphans keep arriving while parents die.
    Returns what it found alive at the first look."""
    first = descendants()
    found = first
    for _ in range(5):
        if not found:
            break
        _signal(found, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(alive(p) for p in found):
            _reap()
            time.sleep(0.05)
        _signal(found, signal.SIGKILL)
        _reap()
        found = descendants()
    return first


def _on_signal(sig: int, _frame: object) -> None:
    global _stopping
    if _stopping:  # a second signal: no more waiting for the bench's own clean-up
        end_all(grace=0.5)
        os._exit(128 + sig)
    _stopping = True
    print(f"\n{signal.Signals(sig).name}: ending every process of this bench", file=sys.stderr, flush=True)
    # SystemExit runs the bench's `finally` blocks (each stops what it started), then atexit
    raise SystemExit(128 + sig)


def guard() -> None:
    """Own every process this one starts, and end them all when it ends (see the module doc).
    Idempotent; call first thing in `main()`."""
    global _guarded
    if _guarded:
        return
    _guarded = True
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    with contextlib.suppress(OSError):
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    for sig in STOP_SIGNALS:
        signal.signal(sig, _on_signal)
    atexit.register(end_all)


def spawn(args: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    """A child in its own session and process group: a terminal's Ctrl-C reaches only the driver,
    which then ends the child in order (its `finally` blocks run) instead of every process at once."""
    return subprocess.Popen(args, start_new_session=True, **kw)


def stop(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM to a child started by `spawn`, time for its own clean-up (a guarded bench ends
    what it started), then SIGKILL to its whole group."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_proxyd(state_dir: Path, revision: int = 1, timeout: float = 30.0) -> float:
    """Wait until a `proxyd run --state-dir` applied `revision` (its control socket says so) and
    return how long that took: a bench that sends load after a fixed sleep measures start-up on a
    busy machine (sipp's calls into a proxy not yet listening fail, and wait out sipp's timeout)."""
    from proxyd.admin import fetch_status

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            code, body = fetch_status(state_dir / "proxyd.sock")
            if code == 200 and json.loads(body).get("revision") == revision:
                return time.monotonic() - t0
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"proxyd in {state_dir} did not apply revision {revision} in {timeout:.0f} s")


def udp_range(sizes: tuple[int, ...] = (2000, 1000, 400), after: int = 10_000) -> tuple[int, int]:
    """The first even-aligned UDP port range free now, of the largest size that fits (a relay's
    ports: other processes on a shared machine hold ranges of their own), said when smaller."""
    from tests.support import free_udp_range

    for size in sizes:
        try:
            lo = free_udp_range(size, after=after)
        except RuntimeError:
            continue
        if size != sizes[0]:
            progress(f"  note: only {size} free UDP ports in a row from {after} on (wanted {sizes[0]})")
        return lo, lo + size - 2
    raise RuntimeError(f"no {sizes[-1]} free UDP ports in a row from {after} to 32000")


# -- results -------------------------------------------------------------------------------------
def record(workload: str, anchor: str | None, ratio: float | None, *, better: str = "higher",
           **figures: Any) -> dict[str, Any]:
    """Keep one result. `ratio` is pforte/anchor in the bench's own unit; `better` says which way
    is good ("lower" for latency or memory per session), so plots and docs can read it right."""
    item = {"workload": workload, "anchor": anchor, "ratio": None if ratio is None else round(float(ratio), 4),
            "better": better, **figures}
    RESULTS.append(item)
    if path := os.environ.get("BENCH_RESULTS"):
        with open(path, "a") as f:
            f.write(json.dumps(item, default=str) + "\n")
    return item


def progress(line: str) -> None:
    """A row as soon as it is measured (flushed: the driver's output is a pipe or a log file)."""
    print(line, flush=True)
