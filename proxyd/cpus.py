"""How many CPUs this process may use: the affinity mask, bounded by a cgroup CPU quota.

`os.cpu_count()` counts the machine's CPUs; a container or a systemd unit with `CPUQuota=` may
use fewer. The quota is read at every level of the process's cgroup path, from the leaf up, and
the tightest one counts (a parent's limit binds its children): cgroup v2 `cpu.max` ("max 100000"
or "<quota> <period>"), cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us` (-1: none). A quota of
1.5 CPUs gives 2 workers: the fraction is still time the kernel grants.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def available(proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT,
              affinity: int | None = None) -> tuple[int, str]:
    """(CPUs, why) — why names what bounded the figure."""
    n = affinity if affinity is not None else len(os.sched_getaffinity(0))
    why = f"{n} CPU{'s' if n != 1 else ''} in the affinity mask"
    quota = cgroup_quota(proc_cgroup, root)
    if quota is not None and math.ceil(quota[0]) < n:
        n = max(1, math.ceil(quota[0]))
        why = f"cgroup CPU quota {quota[0]:g} ({quota[1]}) of {why}"
    return n, why


def cgroup_quota(proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> tuple[float, str] | None:
    """The tightest CPU quota over the cgroup path in CPUs, and the file it came from; None: no quota."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    best: tuple[float, str] | None = None
    for line in lines:
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hid == "0" and controllers == "":
            candidates = [(root, "cpu.max")]
        elif "cpu" in controllers.split(","):
            candidates = [(root / controllers, "cpu.cfs_quota_us"), (root / "cpu", "cpu.cfs_quota_us"),
                          (root / "cpu,cpuacct", "cpu.cfs_quota_us")]
        else:
            continue
        for base, name in candidates:
            for level in _levels(base, path):
                cpus = _read_quota(level, name)
                if cpus is not None and (best is None or cpus < best[0]):
                    best = (cpus, str(level / name))
            if base.is_dir():
                break
    return best


def _levels(base: Path, path: str) -> list[Path]:
    parts = [p for p in path.split("/") if p and p not in (".", "..")]
    return [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _read_quota(directory: Path, name: str) -> float | None:
    try:
        if name == "cpu.max":
            quota, _, period = (directory / name).read_text().strip().partition(" ")
        else:
            quota = (directory / name).read_text().strip()
            period = (directory / "cpu.cfs_period_us").read_text().strip()
        if quota in ("max", "-1"):
            return None
        q, p = int(quota), int(period or "100000")
    except (OSError, ValueError):
        return None
    return q / p if q > 0 and p > 0 else None
