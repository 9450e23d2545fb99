"""HTTP router: wrk against pforte and against nginx as the same reverse proxy, plain and TLS.

One backend (nginx answering a small static body) serves both proxies. Each proxy is pinned to
core 0 with taskset, wrk runs on core 1; 10 s per run, keep-alive, 50 connections. Prints req/s,
p99 and the ratio pforte/nginx, and how many backend connections pforte opened. Figures on a
shared 2-core machine are noisy: compare ratios measured in the same run.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import ProxydProcess, base_config, free_port  # noqa: E402

DURATION, CONNS, THREADS = 10, 50, 2


def nginx_conf(d: Path, backend_port: int, plain: int, tls: int, cert: Path, key: Path) -> Path:
    conf = d / "nginx.conf"
    conf.write_text(f"""
worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  upstream be {{ server 127.0.0.1:{backend_port}; keepalive 64; }}
  server {{ listen 127.0.0.1:{backend_port}; location / {{ return 200 "hello from the backend\\n"; }} }}
  server {{
    listen 127.0.0.1:{plain}; listen 127.0.0.1:{tls} ssl;
    ssl_certificate {cert}; ssl_certificate_key {key};
    location /bench/ {{ proxy_pass http://be/; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $remote_addr; }}
  }}
}}
""")
    return conf


def wrk(url: str) -> tuple[float, float]:
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t", str(THREADS), "-c", str(CONNS), "-d", f"{DURATION}s",
                          "--latency", url], capture_output=True, text=True, timeout=DURATION + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    p99 = float(m.group(1)) * scale[m.group(2)] if m else float("nan")
    return rps, p99


def main() -> None:
    for tool in ("nginx", "wrk", "taskset"):
        if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()):
            print(f"skipped: {tool} not installed")
            return
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        from proxyd.tls import make_self_signed

        cert, key = make_self_signed("localhost", ["127.0.0.1"])
        (d / "c.pem").write_text(cert)
        (d / "k.pem").write_text(key)
        be, n_plain, n_tls = free_port(), free_port(), free_port()
        ng = subprocess.Popen(["taskset", "-c", "0", nginx, "-c", str(nginx_conf(d, be, n_plain, n_tls, d / "c.pem",
                                                                                  d / "k.pem"))])
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
        subprocess.run(["taskset", "-pc", "0", str(px.proc.pid)], capture_output=True, check=False)
        time.sleep(1)
        rows = []
        try:
            for name, pf_url, ng_url in [
                ("plain", f"http://127.0.0.1:{p_plain}/bench/x", f"http://127.0.0.1:{n_plain}/bench/x"),
                ("tls", f"https://127.0.0.1:{p_tls}/bench/x", f"https://127.0.0.1:{n_tls}/bench/x"),
            ]:
                pf, ngx = wrk(pf_url), wrk(ng_url)
                rows.append((name, pf, ngx))
            connects = px.status()["services"]["http"]["counters"].get("backend_connects")
        finally:
            px.stop()
            ng.terminate()
            ng.wait(10)
    print(f"{'mode':<6} {'pforte req/s':>13} {'p99 ms':>8} {'nginx req/s':>12} {'p99 ms':>8} {'ratio':>6}")
    for name, (prps, pp99), (nrps, np99) in rows:
        print(f"{name:<6} {prps:>13.0f} {pp99:>8.2f} {nrps:>12.0f} {np99:>8.2f} {prps / nrps:>6.2f}")
    print(f"pforte backend connects during the run: {connects} (pool keeps them; {CONNS} client connections)")
    print(json.dumps({"http": [{"mode": n, "pforte_rps": p[0], "nginx_rps": g[0], "ratio": p[0] / g[0]}
                               for n, p, g in rows]}))


if __name__ == "__main__":
    main()
