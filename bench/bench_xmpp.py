"""XMPP passthrough: 10,000 idle sessions (RSS per session) and bulk relay MB/s, pforte vs HAProxy.

Both proxies run as separate processes in front of the same sink backend (its own process), on
loopback; HAProxy in `mode tcp`. pforte routes each session by its stream header, HAProxy just
forwards. Figures on a shared machine are noisy: compare the ratios, not the absolute values.
"""

from __future__ import annotations

import asyncio
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from tests.support import ProxydProcess, base_config, free_port  # noqa: E402

SESSIONS = 10_000
BULK_MB = 256
CHUNK = 256 * 1024
HEADER = (b"<?xml version='1.0'?><stream:stream to='a.test' xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")

# A sink: counts bytes until EOF, answers "ok", closes. Idle sessions just stay open.
BACKEND = """
import asyncio, sys, uvloop
class Sink(asyncio.Protocol):
    def connection_made(self, t): self.t = t
    def data_received(self, d): pass
    def eof_received(self):
        self.t.write(b"ok"); self.t.close()
async def main():
    srv = await asyncio.get_running_loop().create_server(Sink, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    await srv.serve_forever()
uvloop.run(main())
"""


def raise_nofile(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in (max(want, hard), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
            return limit
        except (ValueError, OSError):
            continue
    return soft


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def established_to(port: int) -> int:
    """Established TCP connections whose remote port is `port` (the proxy's side to the backend)."""
    n = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(name).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "01" and int(f[2].rsplit(":", 1)[1], 16) == port:
                n += 1
    return n


def wait_port(port: int, timeout: float = 20.0) -> None:
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


async def open_idle(port: int, n: int, backend_port: int) -> list[asyncio.StreamWriter]:
    sem = asyncio.Semaphore(200)
    writers: list[asyncio.StreamWriter] = []

    async def one() -> None:
        async with sem:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(HEADER)
            writers.append(w)

    await asyncio.gather(*(one() for _ in range(n)))
    for _ in range(600):  # up to two minutes for the proxy to open every backend connection
        if established_to(backend_port) >= n:
            break
        await asyncio.sleep(0.2)
    return writers


async def bulk(port: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    block = b"\x17" * CHUNK
    start = time.perf_counter()
    writer.write(HEADER)
    for _ in range(BULK_MB * 1024 * 1024 // CHUNK):
        writer.write(block)
        await writer.drain()
    writer.write_eof()
    assert await reader.read() == b"ok"
    elapsed = time.perf_counter() - start
    writer.close()
    return BULK_MB / elapsed


def measure(name: str, port: int, pid: int, backend_port: int, sessions: int) -> tuple[float, float]:
    async def run() -> tuple[float, float]:
        mbps = await bulk(port)
        before = rss_kib(pid)
        writers = await open_idle(port, sessions, backend_port)
        reached = established_to(backend_port)
        after = rss_kib(pid)
        for w in writers:
            w.close()
        await asyncio.sleep(1)
        per = (after - before) * 1024 / max(reached, 1)
        print(f"  {name:8s} bulk {mbps:8.1f} MB/s   idle sessions {reached:6d}   RSS {before // 1024} -> "
              f"{after // 1024} MiB = {per:7.0f} B/session", flush=True)
        return mbps, per
    return uvloop.run(run())


def main() -> None:
    common.guard()
    limit = raise_nofile(4 * SESSIONS + 1000)
    # each relayed session costs a proxy two descriptors; stay below the limit for both proxies
    sessions = min(SESSIONS, (limit - 300) // 2)
    if sessions < SESSIONS:
        print(f"  note: RLIMIT_NOFILE is {limit} here (cannot raise the hard limit): {sessions} sessions")
    backend_port, haproxy_port = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            procs.append(subprocess.Popen([sys.executable, "-c", BACKEND, str(backend_port)]))
            wait_port(backend_port)
            cfg = base_config(
                instances=[{"name": "a", "xmpp": f"127.0.0.1:{backend_port}", "xmpp_domains": ["a.test"]}],
                services={"xmpp": {"enabled": True, "port": free_port(), "direct_tls_port": free_port()}})
            workdir = Path(tmp) / "pforte"
            workdir.mkdir()
            pforte = ProxydProcess(workdir, cfg).start()
            assert pforte.proc is not None
            results = {"pforte": measure(
                "pforte", cfg["services"]["xmpp"]["port"], pforte.proc.pid, backend_port, sessions)}
            pforte.stop()
            haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
            hcfg = Path(tmp) / "haproxy.cfg"
            hcfg.write_text(
                f"global\n  maxconn {sessions + 50}\ndefaults\n  mode tcp\n  timeout connect 5s\n"
                f"  timeout client 10m\n  timeout server 10m\nfrontend f\n  bind 127.0.0.1:{haproxy_port}\n"
                f"  maxconn {sessions + 50}\n  default_backend b\nbackend b\n  server s 127.0.0.1:{backend_port}\n")
            hp = subprocess.Popen([haproxy, "-f", str(hcfg), "-db"], stdout=subprocess.DEVNULL)
            procs.append(hp)
            wait_port(haproxy_port)
            results["haproxy"] = measure("haproxy", haproxy_port, hp.pid, backend_port, sessions)
        finally:
            for p in procs:
                p.terminate()
                p.wait(10)
    (pm, pr), (hm, hr) = results["pforte"], results["haproxy"]
    print(f"  ratio pforte/haproxy: throughput {pm / hm:.2f}x, RSS per idle session {pr / max(hr, 1):.2f}x")
    common.record("xmpp bulk MB/s", "haproxy", pm / hm, pforte_mbps=pm, anchor_mbps=hm)
    common.record(f"xmpp RSS per idle session ({sessions})", "haproxy", pr / max(hr, 1), better="lower",
                  pforte_bytes=pr, anchor_bytes=hr)


if __name__ == "__main__":
    main()
