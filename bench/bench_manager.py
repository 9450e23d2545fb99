"""Manager load: 1,000 simulated proxies long-polling config and heartbeating every 60 s (SQLite).

The proxies are created through the ORM in a fresh data dir; the manager is `pforte-manager
serve` (one uvicorn process). Each simulated proxy keeps one config long-poll open (wait=30)
and sends a heartbeat at a random moment of every 60 s window. Prints heartbeat p50/p99
latency, long-poll answers, and the manager's CPU share over the run.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from tests.support import free_port, stop_process  # noqa: E402

PROXIES = 1000
DURATION = 60.0


def make_proxies(data: str) -> list[str]:
    os.environ["PFORTE_MANAGER_DATA"] = data
    os.environ["DJANGO_SETTINGS_MODULE"] = "manager.settings"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from manager.proxies.models import Proxy

    keys = []
    for i in range(PROXIES):
        p = Proxy(name=f"p{i}", fqdn=f"p{i}.example.com")
        p.save()
        keys.append(p.mint_api_key())
    return keys


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Http:
    """One keep-alive HTTP/1.1 connection, as light as a client can be: the load generator must not
    be what limits the figures (httpx with 2,000 connections was)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.r: asyncio.StreamReader | None = None
        self.w: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, dict]:
        if self.w is None:
            self.r, self.w = await asyncio.open_connection(self.host, self.port)
        assert self.r is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        self.w.write(head.encode() + body)
        raw = await self.r.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        if hdrs.get("transfer-encoding") == "chunked":
            while size := int((await self.r.readline()).split(b";")[0], 16):
                await self.r.readexactly(size + 2)
            await self.r.readline()
        elif status not in (204, 304):
            await self.r.readexactly(int(hdrs.get("content-length", "0")))
        return status, hdrs


async def simulate(port: int, keys: list[str]) -> tuple[list[tuple[float, float]], int, int]:
    latencies: list[tuple[float, float]] = []  # (sent at, seconds to answer)
    polls = [0, 0]  # answered, errors
    start = time.monotonic()
    end = start + DURATION

    async def proxy(key: str) -> None:
        h = {"Authorization": f"Bearer {key}"}
        poll, beat = Http("127.0.0.1", port), Http("127.0.0.1", port)
        _, hdrs = await poll.request("GET", "/api/v1/proxy/config", h)
        etag = hdrs.get("etag", "")
        body = b'{"applied_revision": 1, "uptime": 1}'

        async def heartbeats() -> None:
            await asyncio.sleep(random.uniform(0, 60))
            while time.monotonic() < end:
                t = time.monotonic()
                await beat.request("POST", "/api/v1/proxy/heartbeat", {**h, "Content-Type": "application/json"}, body)
                latencies.append((t - start, time.monotonic() - t))
                await asyncio.sleep(60)

        hb = asyncio.create_task(heartbeats())
        while time.monotonic() < end:
            try:
                await asyncio.wait_for(poll.request("GET", "/api/v1/proxy/config?wait=30",
                                                    {**h, "If-None-Match": etag}), 90)
                polls[0] += 1
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                polls[1] += 1
                poll = Http("127.0.0.1", port)
        hb.cancel()

    await asyncio.gather(*(proxy(k) for k in keys), return_exceptions=True)
    return latencies, polls[0], polls[1]


def main() -> None:
    common.guard()
    with tempfile.TemporaryDirectory() as data:
        t0 = time.monotonic()
        keys = make_proxies(data)
        print(f"created {PROXIES} proxies in {time.monotonic() - t0:.1f} s")
        port = free_port()
        env = {**os.environ, "PFORTE_MANAGER_DATA": data}
        proc = subprocess.Popen([sys.executable, "-m", "manager.cli", "serve", "--port", str(port)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    httpx.get(url + "/accounts/login/", timeout=2)
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            cpu0, wall0 = cpu_seconds(proc.pid), time.monotonic()
            client0 = time.process_time()
            lat, answered, errors = asyncio.run(simulate(port, keys))
            client_cpu = (time.process_time() - client0) / DURATION
            cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - wall0)
        finally:
            stop_process(proc)
    def pct(xs: list[float], q: float) -> float:
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")

    every = [d for _, d in lat]
    steady = [d for t, d in lat if t > 15]
    print(f"heartbeats: {len(every)}  p50 {pct(every, 0.5):.1f} ms  p90 {pct(every, 0.9):.1f} ms  "
          f"p99 {pct(every, 0.99):.1f} ms  max {pct(every, 1):.1f} ms")
    print(f"after the first 15 s (1,000 proxies fetching their config at once): {len(steady)}  "
          f"p50 {pct(steady, 0.5):.1f} ms  p99 {pct(steady, 0.99):.1f} ms")
    slow = [0] * (int(DURATION) // 10 + 1)
    for t, d in lat:
        if d > 1:
            slow[int(t) // 10] += 1
    print("heartbeats slower than 1 s by 10-s window of sending:", slow)
    print(f"long-polls answered: {answered}  errors: {errors}")
    print(f"manager CPU: {cpu * 100:.0f} % of one core over {DURATION:.0f} s "
          f"(load generator: {client_cpu * 100:.0f} %)")
    common.record(f"manager {PROXIES} proxies heartbeat", None, None, p50_ms=pct(every, 0.5),
                  p99_ms=pct(every, 0.99), polls=answered, errors=errors, cpu=cpu)


if __name__ == "__main__":
    main()
