"""HTTP req/s by worker count: pforte `proxyd run --workers 1` and `--workers 2` and nginx with
`worker_processes 1` and `2`, in the same run, plain HTTP keep-alive through bench_http's wrk (50
connections, wrk on core 1) to the same nginx backend. Nothing is pinned to a core — the workers
are meant to use both — so wrk and the backend share the cores with the proxy under test, the
same for each. Rounds alternate the three (the machine drifts); medians are printed.
`BENCH_WORKERS_PIN=1`: each proxy under test is pinned instead, the one-worker ones to core 0 and
the two-worker ones to cores 0-1 (wrk stays on core 1, the backend on core 1), so one worker gets
exactly one core and two get the second core too — shared with the load generator.
Prints the scaling 2 workers / 1 worker (issue #23's goal: >= 1.8x on a machine where the load
generator does not share the proxy's cores) next to nginx's own scaling here, and pforte/nginx at
2 workers.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from bench.bench_http import backend_conf, measured, nginx_conf  # noqa: E402
from tests.support import ProxydProcess, base_config, free_port  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_WORKERS_ROUNDS", "2"))
PIN = os.environ.get("BENCH_WORKERS_PIN") == "1"


def cores(n: int) -> list[str]:
    """taskset's prefix for a proxy with n workers ([] unpinned)."""
    return ["taskset", "-c", "0" if n == 1 else "0,1"] if PIN else []


def main() -> None:
    common.guard()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not (os.path.exists(nginx) and shutil.which("wrk") and shutil.which("taskset")):
        print("skipped: nginx, wrk or taskset not installed")
        return
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        from proxyd.tls import make_self_signed

        cert, key = make_self_signed("localhost", ["127.0.0.1"])
        (d / "c.pem").write_text(cert)
        (d / "k.pem").write_text(key)
        be = free_port()
        procs = [subprocess.Popen(["taskset", "-c", "1", nginx, "-c", str(backend_conf(d, be))])]
        pids: dict[str, int] = {}
        urls: dict[str, str] = {}
        for n in (1, 2):  # nginx's own scaling on this machine, to judge pforte's by
            (d / f"n{n}").mkdir()
            n_plain = free_port()
            conf = nginx_conf(d / f"n{n}", be, n_plain, free_port(), d / "c.pem", d / "k.pem")
            conf.write_text(conf.read_text().replace("worker_processes 1;", f"worker_processes {n};"))
            procs.append(subprocess.Popen([*cores(n), nginx, "-c", str(conf)]))
            pids[f"nginx x{n}"], urls[f"nginx x{n}"] = procs[-1].pid, f"http://127.0.0.1:{n_plain}/bench/x"
        pfortes = []
        try:
            for n in (1, 2):
                port = free_port()
                cfg = base_config(applications=[{"name": "plain", "port": port, "tls": False,
                                                 "public_prefix": "/bench/", "upstream": f"http://127.0.0.1:{be}/"}])
                (d / f"w{n}").mkdir()
                px = ProxydProcess(d / f"w{n}", cfg, ("--log-level", "WARNING", "--workers", str(n)))
                pfortes.append(px.start(wait=False))
                if PIN:  # before the parent starts its workers (they inherit it): its imports take longer
                    assert px.proc is not None
                    os.sched_setaffinity(px.proc.pid, {0} if n == 1 else {0, 1})
                px.wait_revision(1, timeout=90)  # N workers start one interpreter each: slow on a busy machine
                assert px.proc is not None
                pids[f"pforte x{n}"], urls[f"pforte x{n}"] = px.proc.pid, f"http://127.0.0.1:{port}/bench/x"
            runs: dict[str, list[tuple[float, float, float]]] = {}
            names = list(urls)
            for r in range(ROUNDS):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    m = measured(pids[name], urls[name])
                    runs.setdefault(name, []).append(m)
                    common.progress(f"  round {r + 1} {name:<10} {m[0]:9.0f} req/s  p99 {m[1]:6.2f} ms  "
                                    f"cpu {m[2]:4.0%}")
        finally:
            for px in pfortes:
                px.stop()
            for p in procs:
                p.terminate()
                p.wait(10)
    rps = {name: statistics.median(m[0] for m in ms) for name, ms in runs.items()}
    cpu = {name: statistics.median(m[2] for m in ms) for name, ms in runs.items()}
    for name in names:
        print(f"{name:<10} {rps[name]:9.0f} req/s  cpu {cpu[name]:5.0%}  (median of {ROUNDS})")
    scaling, nginx_scaling = rps["pforte x2"] / rps["pforte x1"], rps["nginx x2"] / rps["nginx x1"]
    print(f"2 workers / 1 worker: pforte {scaling:.2f}x, nginx {nginx_scaling:.2f}x; pforte/nginx at 2 workers: "
          f"{rps['pforte x2'] / rps['nginx x2']:.2f}x ({'pinned: x1 core 0, x2 cores 0-1' if PIN else 'unpinned'}; "
          "wrk and the backend on core 1: shared, noisy machine)")
    for who in ("pforte", "nginx"):
        for n in (1, 2):
            common.record(f"http plain req/s by workers, {who}", None, None, workers=n,
                          throughput=rps[f"{who} x{n}"], unit="req/s", cpu=cpu[f"{who} x{n}"])
    common.record("http plain req/s, 2 workers", "nginx", rps["pforte x2"] / rps["nginx x2"],
                  scaling_2_over_1=scaling, nginx_scaling_2_over_1=nginx_scaling)
    common.record("http plain req/s, 2 workers / 1 worker", "nginx", scaling / nginx_scaling,
                  pforte_scaling=scaling, nginx_scaling=nginx_scaling)


if __name__ == "__main__":
    main()
