"""Manager lists at size: 1,000 proxies (3 heartbeats and 2 revisions each) and 10,000 devices,
on SQLite and on PostgreSQL (a server started here on a loopback port, as tests/manager/test_postgres.py).

The data is made in bulk in a child process (`--prepare`, Django set up on that database); the
manager is `pforte-manager serve` (one uvicorn process). A client logged in through the login form
reads each UI list page, and with an API token each API list, one request at a time, and prints
p50/p95 against the budget (UI list page ≤ 200 ms p95, API list ≤ 100 ms p95). The anchor, measured
in the same run against the same process, is `/healthz` (same HTTP stack, no database): its ratio
says how much of a figure is the list and how much the machine. On a shared machine the wall times
mostly measure the queue for a core, so each URL also gets the CPU time its requests cost the
manager and the database server (every process this bench started, read from /proc): that figure
does not grow with the machine's load.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import served_manager, throwaway_postgres  # noqa: E402

PROXIES, DEVICES, INSTANCES = 1000, 10_000, 100
REQUESTS = 60  # per URL
UI_BUDGET, API_BUDGET = 0.200, 0.100
PASSWORD = "a-long-bench-password"
UI = ["/", "/?sort=-name", "/?q=p99", "/?page=20", "/devices/", "/devices/?page=200", "/devices/?q=08C25A4F00",
      "/instances/", "/changes/"]
API = ["/api/v1/objects/proxies/", "/api/v1/objects/proxies/?offset=950", "/api/v1/objects/devices/",
       "/api/v1/objects/devices/?offset=9950", "/api/v1/objects/devices/?q=08C25A4F00",
       "/api/v1/objects/instances/"]


def prepare() -> None:
    """In the child: migrate and fill the database in bulk (no signals: one compiled revision copied)."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "manager.settings"
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from manager.proxies.models import ApiToken, ConfigRevision, Device, Heartbeat, Instance, Proxy

    call_command("migrate", verbosity=0)
    template = Proxy(name="template", fqdn="template.example.com")
    template.save()  # compiles and publishes one real revision
    cfg = template.active_revision
    template.delete()
    proxies = Proxy.objects.bulk_create(
        [Proxy(name=f"p{i}", fqdn=f"p{i}.example.com", network_mode="manual", network_interface=f"e{i}")
         for i in range(PROXIES)])
    revs, hbs = [], []
    for p in proxies:
        revs += [ConfigRevision(proxy=p, number=n, config_json=cfg.config_json) for n in (1, 2)]
        hbs += [Heartbeat(proxy=p, source="127.0.0.1", applied_revision=2, interval=60) for _ in range(3)]
    ConfigRevision.objects.bulk_create(revs)
    Heartbeat.objects.bulk_create(hbs)
    insts = Instance.objects.bulk_create([Instance(name=f"i{i}") for i in range(INSTANCES)])
    Device.objects.bulk_create([Device(instance=insts[n % INSTANCES], mac=f"08C25A{n:06X}", label=f"desk {n}")
                                for n in range(DEVICES)])
    user = get_user_model().objects.create_superuser("bench", "b@example.invalid", PASSWORD)
    token = ApiToken(user=user, name="bench", role="admin")
    value = token.mint()
    token.save()
    print(json.dumps({"token": value}))


def run_prepare(env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, __file__, "--prepare"], env=env, check=True, capture_output=True,
                         text=True, timeout=900)
    return json.loads(out.stdout.strip().splitlines()[-1])["token"]


def served_cpu() -> float:
    """Seconds of CPU used by every process below this one (the manager; PostgreSQL and its
    backends, whose ended children count in their parent's cutime), not by this client."""
    tick, total, todo = os.sysconf("SC_CLK_TCK"), 0.0, [os.getpid()]
    while todo:
        pid = todo.pop()
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
        if pid != os.getpid():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(f) for f in fields[11:15]) / tick  # utime stime cutime cstime
    return total


def idle_cpu(seconds: float = 5.0) -> float:
    """CPU seconds per second the served processes spend with no request (the manager's own
    periodic work: its database re-check, heartbeat writer), subtracted from each URL's figure."""
    cpu0, t0 = served_cpu(), time.perf_counter()
    time.sleep(seconds)
    return (served_cpu() - cpu0) / (time.perf_counter() - t0)


def timings(client: httpx.Client, url: str, idle: float = 0.0, **kw: object) -> tuple[list[float], float]:
    """Sorted wall times of REQUESTS requests, and the served CPU per request (less `idle` per second)."""
    client.get(url, **kw).raise_for_status()  # warm: templates, query plans
    out = []
    cpu0, start = served_cpu(), time.perf_counter()
    for _ in range(REQUESTS):
        t0 = time.perf_counter()
        r = client.get(url, **kw)
        out.append(time.perf_counter() - t0)
        r.raise_for_status()
    return sorted(out), max(0.0, served_cpu() - cpu0 - idle * (time.perf_counter() - start)) / REQUESTS


def p95(values: list[float]) -> float:
    return values[min(len(values) - 1, int(len(values) * 0.95))]


def measure(name: str, env: dict[str, str]) -> list[str]:
    token = run_prepare(env)
    failed = []
    with served_manager(env, Path(env["PFORTE_MANAGER_DATA"]) / "serve.log") as url, \
            httpx.Client(base_url=url, timeout=30) as ui, httpx.Client(base_url=url, timeout=30) as api:
        ui.get("/accounts/login/")
        r = ui.post("/accounts/login/", data={"username": "bench", "password": PASSWORD,
                                              "csrfmiddlewaretoken": ui.cookies["csrftoken"]},
                    headers={"Referer": f"{url}/accounts/login/"})
        assert r.status_code == 302 and "sessionid" in ui.cookies, f"login failed: {r.status_code}"
        idle = idle_cpu()
        anchor, a_cpu = timings(api, "/healthz", idle)
        a50 = statistics.median(anchor)
        print(f"\n{name}: {PROXIES} proxies, {DEVICES} devices; {REQUESTS} sequential requests per URL; "
              f"load average {os.getloadavg()[0]:.1f}; idle manager + database {idle * 1e3:.0f} ms CPU/s "
              "(subtracted)")
        print(f"{'URL':45} {'p50 ms':>8} {'p95 ms':>8} {'budget':>7} {'p50/anchor':>11} {'CPU ms':>7}")
        print(f"{'/healthz (anchor)':45} {a50 * 1e3:8.1f} {p95(anchor) * 1e3:8.1f} {'':>7} {1:11.1f} "
              f"{a_cpu * 1e3:7.1f}")
        for kind, urls, budget, client, kw in (
                ("UI", UI, UI_BUDGET, ui, {}),
                ("API", API, API_BUDGET, api, {"headers": {"Authorization": f"Bearer {token}"}})):
            for u in urls:
                t, cpu = timings(client, u, idle, **kw)
                ok = p95(t) <= budget
                if not ok:
                    failed.append(f"{name} {kind} {u}: p95 {p95(t) * 1e3:.0f} ms > {budget * 1e3:.0f} ms")
                print(f"{kind + ' ' + u:45} {statistics.median(t) * 1e3:8.1f} {p95(t) * 1e3:8.1f} "
                      f"{'ok' if ok else 'OVER':>7} {statistics.median(t) / a50:11.1f} {cpu * 1e3:7.1f}")
    return failed


def main() -> None:
    failed = []
    with tempfile.TemporaryDirectory() as data:
        failed += measure("SQLite", {**os.environ, "PFORTE_MANAGER_DATA": data})
    with tempfile.TemporaryDirectory() as data, throwaway_postgres() as db:
        failed += measure("PostgreSQL", {**os.environ, "PFORTE_MANAGER_DATA": data, "DATABASE_URL": db})
    print("\n" + ("\n".join(failed) if failed else "every list within its budget"))


if __name__ == "__main__":
    if sys.argv[1:] == ["--prepare"]:
        prepare()
    else:
        main()
