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


async def simulate(url: str, keys: list[str]) -> tuple[list[float], int, int]:
    latencies: list[float] = []
    polls = [0, 0]  # answered, errors
    limits = httpx.Limits(max_connections=PROXIES * 2, max_keepalive_connections=PROXIES * 2)
    async with httpx.AsyncClient(base_url=url, timeout=90, limits=limits) as c:
        end = time.monotonic() + DURATION

        async def proxy(key: str) -> None:
            h = {"Authorization": f"Bearer {key}"}
            r = await c.get("/api/v1/proxy/config", headers=h)
            etag = r.headers.get("etag", "")

            async def heartbeats() -> None:
                while time.monotonic() < end:
                    await asyncio.sleep(random.uniform(0, 60))
                    t = time.monotonic()
                    await c.post("/api/v1/proxy/heartbeat", headers=h, json={"applied_revision": 1, "uptime": 1})
                    latencies.append(time.monotonic() - t)

            hb = asyncio.create_task(heartbeats())
            while time.monotonic() < end:
                try:
                    r = await c.get("/api/v1/proxy/config?wait=30", headers={**h, "If-None-Match": etag})
                    polls[0] += 1
                except httpx.HTTPError:
                    polls[1] += 1
            hb.cancel()

        await asyncio.gather(*(proxy(k) for k in keys), return_exceptions=True)
    return latencies, polls[0], polls[1]


def main() -> None:
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
            lat, answered, errors = asyncio.run(simulate(url, keys))
            cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - wall0)
        finally:
            stop_process(proc)
    lat.sort()
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")  # noqa: E731
    print(f"heartbeats: {len(lat)}  p50 {pct(0.5):.1f} ms  p99 {pct(0.99):.1f} ms")
    print(f"long-polls answered: {answered}  errors: {errors}")
    print(f"manager CPU: {cpu * 100:.0f} % of one core over {DURATION:.0f} s")


if __name__ == "__main__":
    main()
