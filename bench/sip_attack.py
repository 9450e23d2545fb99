"""`bench_sip --attack`: a spoofed-source flood against a running proxyd, in a private network
namespace with only `lo` up (re-executes itself under `unshare -n`: the spoofed sources and the
relay's answers to them never leave the namespace).

A legitimate phone (127.0.0.1) sends an OPTIONS every 10 ms to an instance's domain; a small
PBX answers 200. Its round trip is measured idle, then while a raw socket sends OPTIONS from
`--sources` distinct spoofed addresses (random in 127.1.0.0-127.255.255.255, one message each,
at `--rate` a second). Printed: the phone's p50/p99 and unanswered count idle and under the
flood, and proxyd's RSS before and after (issue 20 §1 budget: p99 ≤ 2× idle, RSS ≤ +64 MiB).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _rss_kib(pid: int) -> int:
    total = 0
    for child in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _pbx(sock: socket.socket, stop: Any) -> None:
    """Answer every OPTIONS 200 (Via, From, To, Call-ID, CSeq copied)."""
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            data, addr = sock.recvfrom(65535)
        except TimeoutError:
            continue
        head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        keep = [h for h in head[1:] if h.split(b":", 1)[0].lower() in (b"via", b"from", b"to", b"call-id", b"cseq")]
        sock.sendto(b"SIP/2.0 200 OK\r\n" + b"\r\n".join(keep) + b"\r\nContent-Length: 0\r\n\r\n", addr)


def _options(call_id: str, src: str, sport: int) -> bytes:
    return (f"OPTIONS sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP {src}:{sport};branch=z9hG4bK{call_id}\r\n"
            f"From: <sip:a@pbx.test>;tag=1\r\nTo: <sip:pbx.test>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()


def _phone(port: int, seconds: float) -> tuple[list[float], int]:
    """OPTIONS every 10 ms for `seconds`: (round trips in ms, unanswered)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(2.0)
    me = s.getsockname()[1]
    rtts, lost, end, n = [], 0, time.monotonic() + seconds, 0
    while time.monotonic() < end:
        n += 1
        cid = f"legit{n}"
        t0 = time.perf_counter()
        s.sendto(_options(cid, "127.0.0.1", me), ("127.0.0.1", port))
        while True:
            try:
                data = s.recv(65535)
            except TimeoutError:
                lost += 1
                break
            if cid.encode() in data:
                rtts.append((time.perf_counter() - t0) * 1000)
                break
        time.sleep(max(0.0, 0.01 - (time.perf_counter() - t0)))
    s.close()
    return rtts, lost


def _flood(port: int, sources: int, rate: int) -> float:
    """One spoofed OPTIONS from each of `sources` addresses at `rate`/s; seconds it took."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    dst = socket.inet_aton("127.0.0.1")
    rng = random.Random(20)
    addrs = rng.sample(range(1 << 16, 1 << 24), sources)  # 127.1.0.0 and up: never the phone's 127.0.0.x
    t0 = time.perf_counter()
    for i, a in enumerate(addrs):
        src = f"127.{a >> 16}.{a >> 8 & 255}.{a & 255}"
        payload = _options(f"spoof{i}", src, 5060)
        udp = struct.pack("!HHHH", 5060, port, 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, socket.inet_aton(src), dst)
        raw.sendto(ip + udp, ("127.0.0.1", 0))
        if i % 200 == 0:
            ahead = i / rate - (time.perf_counter() - t0)
            if ahead > 0:
                time.sleep(ahead)
    raw.close()
    return time.perf_counter() - t0


def _summary(rtts: list[float], lost: int) -> dict[str, float]:
    if len(rtts) < 2:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "answered": len(rtts), "unanswered": lost}
    q = statistics.quantiles(rtts, n=100)
    return {"p50_ms": round(q[49], 3), "p99_ms": round(q[98], 3), "answered": len(rtts), "unanswered": lost}


def inside(sources: int, rate: int) -> dict[str, object]:
    sys.path.insert(0, str(ROOT))
    from tests.support import free_tcp_udp_port

    pbx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pbx.bind(("127.0.0.1", 0))
    stop = multiprocessing.Event()
    pbx_proc = multiprocessing.Process(target=_pbx, args=(pbx, stop), daemon=True)  # own process: no GIL shared
    pbx_proc.start()
    port = free_tcp_udp_port()
    cfg = {"version": 1, "revision": 1, "proxy": {"name": "bench", "fqdn": "proxy.test", "enabled": True},
           "bind": "127.0.0.1", "instances": [{"name": "pbx", "sip": f"udp:127.0.0.1:{pbx.getsockname()[1]}",
                                               "sip_domains": ["pbx.test"]}],
           "services": {"web": {"mode": "off"}, "sip": {"mode": "udp", "udp_port": port},
                        "media": {"mode": "rtp", "port_min": 20000, "port_max": 20999},
                        "provisioning": {"mode": "off"}, "xmpp": {"enabled": False}}}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "proxy.json").write_text(json.dumps(cfg))
        taskset = ["taskset", "-c", "1"] if shutil.which("taskset") else []
        proc = subprocess.Popen([*taskset, sys.executable, "-m", "proxyd", "run", "--config", f"{tmp}/proxy.json",
                                 "--state-dir", f"{tmp}/state", "--admin", "off"], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/pforte.log", "wb"))  # noqa: SIM115
        try:
            time.sleep(2.0)
            if proc.poll() is not None:
                raise RuntimeError("proxyd exited: " + Path(f"{tmp}/pforte.log").read_text()[-2000:])
            _phone(port, 1.0)  # warm-up
            idle = _summary(*_phone(port, 5.0))
            rss_before = _rss_kib(proc.pid)
            t0 = time.monotonic()
            flooding = multiprocessing.Process(target=_flood, args=(port, sources, rate), daemon=True)
            flooding.start()
            rtts, lost = [], 0
            while flooding.is_alive():
                r, n = _phone(port, 2.0)
                rtts += r
                lost += n
            flooding.join()
            seconds = time.monotonic() - t0
            under = _summary(rtts, lost)
            rss_after = _rss_kib(proc.pid)
            time.sleep(12.0)  # the relay's 5 s tick expires the per-source windows
            after = _summary(*_phone(port, 5.0))
            rss_settled = _rss_kib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)
            stop.set()
            pbx_proc.join(5)
    return {"sources": sources, "rate_target": rate, "flood_seconds": round(seconds, 1),
            "idle": idle, "flood": under, "rss_before_mib": round(rss_before / 1024, 1),
            "rss_after_mib": round(rss_after / 1024, 1), "rss_growth_mib": round((rss_after - rss_before) / 1024, 1),
            "after": after, "rss_settled_mib": round(rss_settled / 1024, 1)}


def main(sources: int = 1_000_000, rate: int = 2_000) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        print("sip attack bench skipped: needs root and unshare for a private network namespace")
        return
    script = (f"ip link set lo up && exec {sys.executable} -m bench.sip_attack --inside "
              f"--sources {sources} --rate {rate}")
    res = subprocess.run(["unshare", "-n", "--", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True,
                         timeout=sources / rate * 3 + 300)
    if res.returncode != 0:
        print("sip attack bench failed:", res.stderr[-2000:])
        return
    r = json.loads(res.stdout.strip().splitlines()[-1])
    idle, under = r["idle"], r["flood"]
    print(f"spoofed-source flood: {r['sources']:,} sources, target {r['rate_target']:,}/s, took {r['flood_seconds']} s")
    print(f"legit OPTIONS idle:  p50 {idle['p50_ms']} ms  p99 {idle['p99_ms']} ms  unanswered {idle['unanswered']}")
    print(f"legit OPTIONS flood: p50 {under['p50_ms']} ms  p99 {under['p99_ms']} ms  unanswered {under['unanswered']}"
          f" of {under['answered'] + under['unanswered']}")
    after = r["after"]
    print(f"legit OPTIONS after: p50 {after['p50_ms']} ms  p99 {after['p99_ms']} ms  unanswered {after['unanswered']}")
    print(f"proxyd RSS {r['rss_before_mib']} -> {r['rss_after_mib']} MiB (+{r['rss_growth_mib']});"
          " budget: p99 <= 2x idle, RSS <= +64 MiB;"
          f" {r['rss_settled_mib']} MiB 12 s after the flood")


if __name__ == "__main__":
    args = sys.argv[1:]
    opts = {k: int(v) for k, v in zip(args[::2], args[1::2], strict=False) if k in ("--sources", "--rate")}
    if "--inside" in args:
        args.remove("--inside")
        opts = {k: int(v) for k, v in zip(args[::2], args[1::2], strict=False)}
        print(json.dumps(inside(opts.get("--sources", 1_000_000), opts.get("--rate", 2_000))))
    else:
        main(opts.get("--sources", 1_000_000), opts.get("--rate", 2_000))
