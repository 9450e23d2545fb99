"""HTTP router under slow clients: does a slowloris / slow-POST crowd cost anyone but itself?

The normal load is bench_http's wrk run (plain HTTP, keep-alive, 50 connections, from 127.0.0.1).
It runs twice: alone, then while 5,000 connections from another address (127.0.0.2) drip one
byte every 2 s — half of them a request head, half a POST body — and reconnect 2 s after the
proxy closes them. Prints the normal client's req/s and p99 in both runs and their ratio (the
issue's bar: req/s within 10 %, p99 within 2x), the proxy's RSS, and what the slow crowd got
(connections held at the end, closed by the proxy, refused at accept).

The proxy runs alone on core 0, wrk and the backend on core 1. The crowd gets a core of its own
where there is a third one; on a two-core machine it shares core 1 at a lower priority (nice
10), so that what it costs the normal client is more the proxy's work than the crowd's CPU taken
from wrk. A crowd that did not get to hold its share of connections (starved on a loaded machine)
makes the run say so: its ratios then show nothing. The proxy's CPU share is printed for both
runs: at 100 % the proxy is the limit.
`BENCH_HTTP_DURATION` shortens it; `BENCH_HTTP_SLOW` sets the crowd's size.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from bench.bench_http import DURATION, backend_conf, cpu_seconds, pin, wrk_answers  # noqa: E402
from tests.support import ProxydProcess, base_config, free_port  # noqa: E402

SLOW = int(os.environ.get("BENCH_HTTP_SLOW", "5000"))

CROWD = r'''
import asyncio, sys, resource
port, n, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
stats = {"connects": 0, "closed": 0, "held": 0}
HEAD = b"GET /bench/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 4000
POST = b"POST /bench/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n" + b"b" * 100000
async def slot(i):
    data = HEAD if i % 2 else POST
    await asyncio.sleep(i / n * 2)  # spread the connects over 2 s
    while True:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
        except OSError:
            await asyncio.sleep(2)
            continue
        stats["connects"] += 1
        stats["held"] += 1
        try:
            if data is POST:
                w.write(data[:70])  # the head and a few body bytes at once
                k = 70
            else:
                k = 0
            while True:
                w.write(data[k:k + 1])
                k += 1
                await asyncio.sleep(2)
                if w.is_closing() or r.at_eof():
                    break
                await w.drain()
        except (OSError, ConnectionError):
            pass
        stats["held"] -= 1
        stats["closed"] += 1
        w.close()
        await asyncio.sleep(2)
async def main():
    tasks = [asyncio.ensure_future(slot(i)) for i in range(n)]
    await asyncio.sleep(seconds)
    print(stats, flush=True)
    for t in tasks:
        t.cancel()
asyncio.run(main())
'''


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def measured(pid: int, url: str) -> tuple[float, float, int, float]:
    """-> (req/s, p99 ms, answers other than 2xx/3xx, CPU share of the proxy)."""
    before, t0 = cpu_seconds(pid), time.monotonic()
    rps, p99, bad = wrk_answers(url)
    return rps, p99, bad, (cpu_seconds(pid) - before) / (time.monotonic() - t0)


def crowd_command() -> list[str]:
    core = "2" if (os.cpu_count() or 1) >= 3 else "1"
    return ["nice", "-n", "10", "taskset", "-c", core]


def main() -> None:
    common.guard()
    for tool in ("nginx", "wrk", "taskset"):
        if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()):
            print(f"skipped: {tool} not installed")
            return
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        be = free_port()
        backend = subprocess.Popen(["taskset", "-c", "1", nginx, "-c", str(backend_conf(d, be))])
        port = free_port()
        cfg = base_config(applications=[{"name": "plain", "port": port, "tls": False, "public_prefix": "/bench/",
                                         "upstream": f"http://127.0.0.1:{be}/"}])
        (d / "pforte").mkdir()
        px = ProxydProcess(d / "pforte", cfg, ("--log-level", "ERROR"))
        px.start()
        crowd = None
        try:
            assert px.proc is not None
            pin(px.proc.pid, 0)
            time.sleep(1)
            url = f"http://127.0.0.1:{port}/bench/x"
            alone = measured(px.proc.pid, url)
            rss_alone = rss_kib(px.proc.pid)
            crowd = subprocess.Popen([*crowd_command(), sys.executable, "-c", CROWD, str(port), str(SLOW),
                                      str(DURATION + 8)], stdout=subprocess.PIPE, text=True)
            time.sleep(4)  # the crowd is connected and dripping
            crowded = measured(px.proc.pid, url)
            rss_crowded = rss_kib(px.proc.pid)
            http = px.status()["services"]["http"]
            out, _ = crowd.communicate(timeout=DURATION + 60)
            crowd = None
        finally:
            if crowd is not None:
                crowd.kill()
                crowd.wait(10)
            px.stop()
            backend.terminate()
            backend.wait(10)
    print(f"crowd: {' '.join(crowd_command())}; machine: {os.cpu_count()} cores")
    print(f"normal client alone:        {alone[0]:>9.0f} req/s  p99 {alone[1]:.2f} ms  non-2xx {alone[2]}  "
          f"proxy CPU {alone[3]:.0%}  RSS {rss_alone} KiB")
    print(f"with {SLOW} slow connections: {crowded[0]:>9.0f} req/s  p99 {crowded[1]:.2f} ms  non-2xx {crowded[2]}  "
          f"proxy CPU {crowded[3]:.0%}  RSS {rss_crowded} KiB")
    print(f"ratio req/s {crowded[0] / alone[0]:.2f} (bar >= 0.90), p99 {crowded[1] / alone[1]:.2f}x (bar <= 2)")
    got = ast.literal_eval(out.strip() or "{}")
    per_address = http["gauges"].get("connection_limit_per_address", SLOW)
    if got.get("held", 0) < min(SLOW, per_address) * 0.9:
        print(f"NOT MEASURED: the crowd held {got.get('held', 0)} connections, not "
              f"{min(SLOW, per_address)} (starved by the machine's load)")
    print(f"slow crowd: {out.strip()}; proxy: connections_refused={http['counters'].get('connections_refused')} "
          f"refused_408={http['counters'].get('refused_408', 0)} refused_503={http['counters'].get('refused_503', 0)} "
          f"backend_queued={http['counters'].get('backend_queued')} active={http['gauges'].get('active_connections')}")
    common.record(f"http beside {SLOW} slow clients", None, None, rps_ratio=crowded[0] / alone[0],
                  p99_ratio=crowded[1] / alone[1])
    print(json.dumps({"http_slow": {"rps_alone": alone[0], "rps_crowded": crowded[0], "p99_alone_ms": alone[1],
                                    "p99_crowded_ms": crowded[1], "non2xx_alone": alone[2],
                                    "non2xx_crowded": crowded[2], "cpu_alone": alone[3], "cpu_crowded": crowded[3],
                                    "rss_alone_kib": rss_alone,
                                    "rss_crowded_kib": rss_crowded}}))


if __name__ == "__main__":
    main()
