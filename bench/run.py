"""`make bench` (≤ 10 min here) and `make bench QUICK=1` (≤ 2 min): every bench of the profile in
bench/plans.py, or those named (`bench/run.py sip http`), each in its own process group.

Before anything runs it says what the machine offers (cores, load, file descriptors, free UDP
ports, peers missing, processes of earlier bench runs still alive) and what each bench needs. Each
bench prints its rows as it measures them; one that overruns its budget by half is stopped. After
each bench, any process it left behind is named and ended (the driver is their subreaper, so even
a detached one comes back to it). At the end: the same-run ratios to the anchors and the wall
times, and the whole run as one JSON file in bench/results/ (`make bench-docs` turns the newest
into docs/benchmarks.md's figures and plots).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import common, plans  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"
TOTAL_BUDGET = {False: 600.0, True: 120.0}
#: the window the benches take UDP ports from (below the ephemeral range)
UDP_WINDOW = (10_000, 32_000)


def program(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)),
                                      None)


def free_udp_ports(lo: int, hi: int) -> int:
    free = 0
    for port in range(lo, hi):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
                free += 1
            except OSError:
                pass
    return free


def strays() -> list[tuple[int, str]]:
    """Processes of earlier bench runs (not ours) that may still hold ports and CPU."""
    mine = {pid for pid, _ in common.descendants()} | common.ancestors()
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) not in mine:
            cmd = common.command(int(d.name))
            if "bench.bench_" in cmd or "bench/run.py" in cmd or ("proxyd run" in cmd and "/tmp/tmp" in cmd):
                out.append((int(d.name), cmd[:120]))
    return out


def machine() -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # every bench inherits the raised limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return {"cores": os.cpu_count(), "loadavg_before": os.getloadavg(), "nofile": hard,
            "udp_free": free_udp_ports(*UDP_WINDOW), "python": sys.version.split()[0],
            "git": subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                                  text=True).stdout.strip()}


def preflight(todo: list[plans.Plan], m: dict[str, Any]) -> None:
    print(f"machine: {m['cores']} cores, load average {' '.join(f'{x:.1f}' for x in m['loadavg_before'])} "
          f"(figures from a busy machine are noisy: compare the same-run ratios), fd limit {m['nofile']}, "
          f"{m['udp_free']} of {UDP_WINDOW[1] - UDP_WINDOW[0]} UDP ports free in {UDP_WINDOW[0]}-{UDP_WINDOW[1]}",
          flush=True)
    for pid, cmd in strays():
        print(f"  warning: pid {pid} from another bench run is alive and may hold ports: {cmd}", flush=True)
    for plan in todo:
        missing = [p for p in plan.needs if program(p) is None]
        notes = [f"budget {plan.budget:.0f} s"]
        if missing:
            notes.append(f"missing {', '.join(missing)}: its rows are skipped")
        if plan.udp_sockets and plan.udp_sockets > min(m["nofile"], m["udp_free"]):
            notes.append(f"wants {plan.udp_sockets} UDP sockets at once, has room for "
                         f"{min(m['nofile'], m['udp_free'])}: the bench skips what does not fit")
        print(f"  {plan.name}: {'; '.join(notes)}", flush=True)


def allowance(plan: plans.Plan, left: float, later: list[plans.Plan]) -> float:
    """Seconds a bench may run: up to 1.5x its budget, less when the run's total would not leave
    the benches after it three quarters of theirs (the total is the promise: 10 or 2 minutes)."""
    reserve = 0.75 * sum(p.budget for p in later)
    return max(0.0, min(plan.budget * 1.5, max(left - reserve, plan.budget * 0.5), left))


def run_one(plan: plans.Plan, quick: bool, results: Path, limit: float) -> dict[str, Any]:
    """The bench in its own process group, stopped after `limit` s; what it left behind ended."""
    print(f"\n=== bench {plan.name} ===", flush=True)
    argv = [sys.executable, "-m", "bench.run", "--one", plan.name, *(["--quick"] if quick else [])]
    t0 = time.monotonic()
    child = common.spawn(argv, cwd=ROOT, env={**os.environ, "BENCH_RESULTS": str(results)})
    outcome = "ok"
    try:
        rc = child.wait(limit)
        outcome = "ok" if rc == 0 else f"failed (exit {rc})"
    except subprocess.TimeoutExpired:
        outcome = f"stopped after {limit:.0f} s (budget {plan.budget:.0f} s)"
        print(f"bench {plan.name}: {outcome}", flush=True)
    finally:
        if child.poll() is None:  # a timeout or this driver interrupted: let the bench clean up first
            common.stop(child, grace=10.0)
        left = common.end_all()
        for pid, _ in left:
            print(f"bench {plan.name} left pid {pid} behind, ended it: {common.command(pid)[:120]}", flush=True)
    wall = time.monotonic() - t0
    items = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    return {"name": plan.name, "outcome": outcome, "wall_s": round(wall, 1), "budget_s": plan.budget,
            "left_behind": len(left), "results": items}


def summary(run: dict[str, Any]) -> None:
    print("\n=== same-run ratios (pforte / anchor; noisy shared machine) ===")
    for b in run["benches"]:
        for r in b["results"]:
            if r.get("anchor") and r.get("ratio") is not None:
                note = " (lower is better)" if r.get("better") == "lower" else ""
                print(f"  {r['workload']:<44} vs {r['anchor']:<10} {r['ratio']:6.2f}x{note}")
    print("\n=== wall times ===")
    for b in run["benches"]:
        print(f"  {b['name']:<12} {b['wall_s']:6.1f} s  (budget {b['budget_s']:.0f} s)  {b['outcome']}")
    print(f"  total        {run['wall_s']:6.1f} s  (budget {run['budget_s']:.0f} s)")


def drive(names: list[str], quick: bool, out_dir: Path) -> int:
    common.guard()
    todo = plans.plans(quick, names)
    started = datetime.datetime.now(datetime.UTC)
    t0 = time.monotonic()
    m = machine()
    preflight(todo, m)
    run: dict[str, Any] = {"started": started.isoformat(timespec="seconds"), "quick": quick, "machine": m,
                           "benches": [], "budget_s": TOTAL_BUDGET[quick], "complete": False}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{started:%Y%m%dT%H%M%SZ}-{'quick' if quick else 'full'}.json"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i, plan in enumerate(todo):
                # kept for stopping a bench that overran (10 s of grace) and for the summary
                limit = allowance(plan, t0 + run["budget_s"] * 0.9 - time.monotonic(), todo[i + 1:])
                if limit < 5:
                    print(f"\n=== bench {plan.name}: skipped, the run's {run['budget_s']:.0f} s are spent ===",
                          flush=True)
                    run["benches"].append({"name": plan.name, "outcome": "skipped (time spent)", "wall_s": 0.0,
                                           "budget_s": plan.budget, "left_behind": 0, "results": []})
                    continue
                run["benches"].append(run_one(plan, quick, Path(tmp) / f"{plan.name}.jsonl", limit))
        run["complete"] = True
    finally:
        run["wall_s"] = round(time.monotonic() - t0, 1)
        run["machine"]["loadavg_after"] = os.getloadavg()
        path.write_text(json.dumps(run, indent=1) + "\n")
        summary(run)
        print(f"results: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}", flush=True)
    return 0 if all(b["outcome"] == "ok" for b in run["benches"]) else 1


def one(name: str, quick: bool) -> None:
    """Inside the bench's own process: its knobs, then its main()."""
    common.guard()
    (plan,) = plans.plans(quick, [name])
    os.environ.update(plan.env)  # before the import: benches read some knobs at import time
    module = importlib.import_module(plan.target)
    plans.apply(plan, module)
    if plan.argv is not None:
        module.main(plan.argv)
    else:
        module.main()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="benches to run (default: the profile's)")
    ap.add_argument("--quick", action="store_true", default=os.environ.get("QUICK", "") not in ("", "0"),
                    help="the 2-minute profile (also QUICK=1)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the run's JSON goes")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        one(args.one, args.quick)
        return 0
    return drive(args.names, args.quick, args.out)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
