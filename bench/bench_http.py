"""HTTP router: wrk against pforte and against nginx as the same reverse proxy, plain and TLS.

One backend (its own nginx process answering a small static body, on core 1 with wrk) serves
every proxy. Each proxy does what pforte does to a request: strip the prefix, set
X-Forwarded-For/-Proto/-Host/-Prefix, keep backend connections alive. Each proxy under test runs
alone on core 0 (taskset); 10 s per run, keep-alive, 50 connections. Prints req/s, p99 and the
ratio pforte/nginx (and pforte/HAProxy when installed), and how many backend connections pforte opened.

This VM's speed drifts by a third within minutes, so one run per proxy compares different
machines. The proxies therefore take turns: ROUNDS rounds, each running every proxy once in a
rotated order, a ratio per round from runs minutes apart at most, and the median of those ratios.
`BENCH_HTTP_DURATION` / `BENCH_HTTP_ROUNDS` shorten it while developing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from tests.support import ProxydProcess, base_config, free_port  # noqa: E402

DURATION = int(os.environ.get("BENCH_HTTP_DURATION", "10"))
ROUNDS = int(os.environ.get("BENCH_HTTP_ROUNDS", "3"))
CONNS, THREADS = 50, 2


def backend_conf(d: Path, backend_port: int) -> Path:
    conf = d / "backend.conf"
    conf.write_text(f"""
worker_processes 1; daemon off; pid {d}/backend.pid; error_log {d}/backend.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{backend_port}; location / {{ return 200 "hello from the backend\\n"; }} }}
}}
""")
    return conf


def haproxy_conf(d: Path, backend_port: int, plain: int, tls: int, pem: Path) -> Path:
    conf = d / "haproxy.cfg"
    conf.write_text(f"""
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:{plain}
  bind 127.0.0.1:{tls} ssl crt {pem}
  option forwardfor
  http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}
  http-request set-header X-Forwarded-Proto http if !{{ ssl_fc }}
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Forwarded-Prefix /bench
  use_backend be if {{ path_beg /bench/ }}
backend be
  http-request replace-path /bench/(.*) /\\1
  server s1 127.0.0.1:{backend_port}
""")
    return conf


def nginx_conf(d: Path, backend_port: int, plain: int, tls: int, cert: Path, key: Path) -> Path:
    conf = d / "nginx.conf"
    conf.write_text(f"""
worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off; keepalive_requests 1000000;
  upstream be {{ server 127.0.0.1:{backend_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{plain}; listen 127.0.0.1:{tls} ssl;
    ssl_certificate {cert}; ssl_certificate_key {key};
    location /bench/ {{ proxy_pass http://be/; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $remote_addr; proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host; proxy_set_header X-Forwarded-Prefix /bench; }}
  }}
}}
""")
    return conf


def tree(pid: int) -> list[int]:
    out = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in task.read_text().split():
            out += tree(int(child))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (nginx's workers), in seconds."""
    total = 0
    for p in tree(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def measured(pid: int, url: str) -> tuple[float, float, float]:
    """-> (req/s, p99 ms, CPU share of the proxy during the run)."""
    before, t0 = cpu_seconds(pid), time.monotonic()
    rps, p99 = wrk(url)
    return rps, p99, (cpu_seconds(pid) - before) / (time.monotonic() - t0)


def wrk(url: str) -> tuple[float, float]:
    rps, p99, _ = wrk_answers(url)
    return rps, p99


def wrk_answers(url: str) -> tuple[float, float, int]:
    """-> (req/s, p99 ms, answers other than 2xx/3xx: a 503 is fast, and must not count as served)."""
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t", str(THREADS), "-c", str(CONNS), "-d", f"{DURATION}s",
                          "--latency", url], capture_output=True, text=True, timeout=DURATION + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    p99 = float(m.group(1)) * scale[m.group(2)] if m else float("nan")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rps, p99, int(bad.group(1)) if bad else 0


def pin(pid: int, core: int) -> None:
    subprocess.run(["taskset", "-a", "-pc", str(core), str(pid)], capture_output=True, check=False)


def main() -> None:
    common.guard()
    for tool in ("nginx", "wrk", "taskset"):
        if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()):
            print(f"skipped: {tool} not installed")
            return
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    haproxy = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        from proxyd.tls import make_self_signed

        cert, key = make_self_signed("localhost", ["127.0.0.1"])
        (d / "c.pem").write_text(cert)
        (d / "k.pem").write_text(key)
        (d / "both.pem").write_text(cert + key)
        be = free_port()
        procs.append(subprocess.Popen(["taskset", "-c", "1", nginx, "-c", str(backend_conf(d, be))]))
        ports = {name: (free_port(), free_port()) for name in ("nginx", "haproxy")}
        pids: dict[str, int] = {}
        procs.append(subprocess.Popen(["taskset", "-c", "0", nginx, "-c", str(
            nginx_conf(d, be, *ports["nginx"], d / "c.pem", d / "k.pem"))]))
        pids["nginx"] = procs[-1].pid
        if haproxy:
            procs.append(subprocess.Popen(["taskset", "-c", "0", haproxy, "-f", str(
                haproxy_conf(d, be, *ports["haproxy"], d / "both.pem"))], stdout=subprocess.DEVNULL))
            pids["haproxy"] = procs[-1].pid
        p_tls, p_plain = free_port(), free_port()
        cfg = base_config(
            instances=[{"name": "bench", "web": f"http://127.0.0.1:{be}"}],
            applications=[{"name": "plain", "port": p_plain, "tls": False, "public_prefix": "/bench/",
                           "upstream": f"http://127.0.0.1:{be}/"}],
            services={"web": {"mode": "web_and_rest", "port": p_tls}},
        )
        work = d / "pforte"
        work.mkdir()
        px = ProxydProcess(work, cfg, ("--log-level", "WARNING"))
        px.start()
        assert px.proc is not None
        pin(px.proc.pid, 0)
        time.sleep(1)
        urls = {"pforte": {"plain": f"http://127.0.0.1:{p_plain}/bench/x",
                           "tls": f"https://127.0.0.1:{p_tls}/bench/x"}}
        for name in pids:
            urls[name] = {"plain": f"http://127.0.0.1:{ports[name][0]}/bench/x",
                          "tls": f"https://127.0.0.1:{ports[name][1]}/bench/x"}
        pids["pforte"] = px.proc.pid
        runs: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        try:
            names = ["pforte", *[n for n in pids if n != "pforte"]]
            for r in range(ROUNDS):
                order = names[r % len(names):] + names[:r % len(names)]
                for mode in ("plain", "tls"):
                    for name in order:
                        m = measured(pids[name], urls[name][mode])
                        runs.setdefault((mode, name), []).append(m)
                        common.progress(f"  round {r + 1} {mode:<5} {name:<8} {m[0]:9.0f} req/s  p99 {m[1]:6.2f} ms"
                                        f"  cpu {m[2]:4.0%}")
            connects = px.status()["services"]["http"]["counters"].get("backend_connects")
        finally:
            px.stop()
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(10)
    report(runs, [n for n in ("pforte", "nginx", "haproxy") if ("plain", n) in runs])
    print(f"pforte backend connects during the run: {connects} ({CONNS} client connections per proxy run)")


def report(runs: dict[tuple[str, str], list[tuple[float, float, float]]], names: list[str]) -> None:
    """Per mode and proxy: the median run; per reference: the median of the per-round ratios."""
    print(f"{ROUNDS} rounds x {DURATION} s per proxy and mode; ratios are medians of per-round ratios")
    print(f"{'mode':<6} {'proxy':<8} {'req/s':>9} {'p99 ms':>8} {'CPU':>5} {'req/core-s':>11} {'pforte/x':>9}"
          f" {'per core':>9}   per-round pforte/x")
    summary = []
    for mode in ("plain", "tls"):
        pf = runs[(mode, "pforte")]
        row: dict[str, object] = {"mode": mode}
        for name in names:
            mine = runs[(mode, name)]
            ratios = [a[0] / b[0] for a, b in zip(pf, mine, strict=True)]
            per_core = [(a[0] / a[2]) / (b[0] / b[2]) for a, b in zip(pf, mine, strict=True)]
            rps = statistics.median(m[0] for m in mine)
            p99 = statistics.median(m[1] for m in mine)
            cpu = statistics.median(m[2] for m in mine)
            print(f"{mode:<6} {name:<8} {rps:>9.0f} {p99:>8.2f} {cpu:>5.0%} {rps / cpu:>11.0f} "
                  f"{statistics.median(ratios):>9.2f} {statistics.median(per_core):>9.2f}   "
                  + " ".join(f"{x:.2f}" for x in ratios))
            row[f"{name}_rps"] = rps
            row[f"{name}_p99_ms"] = p99
            row[f"{name}_cpu"] = cpu
            if name != "pforte":
                row[f"ratio_{name}"] = statistics.median(ratios)
                row[f"ratio_{name}_per_core"] = statistics.median(per_core)
                common.record(f"http {mode} req/s per core", name, statistics.median(per_core),
                              absolute=statistics.median(ratios), pforte_rps=row["pforte_rps"], anchor_rps=rps,
                              pforte_p99_ms=row["pforte_p99_ms"], anchor_p99_ms=p99)
        summary.append(row)
    print(json.dumps({"http": summary}))


if __name__ == "__main__":
    main()
