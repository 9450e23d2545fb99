"""The manager on PostgreSQL (`DATABASE_URL`): a real server started for this module on a loopback
port, the manager migrated onto it and served; registration race, config long-poll and heartbeat.

The in-process Django of the other manager tests is bound to SQLite, so everything here talks to
the served manager over HTTP and prepares data with `pforte-manager shell`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import IN_CI, NoPostgres, served_manager, throwaway_postgres


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    try:
        with throwaway_postgres() as url:
            yield url
    except NoPostgres as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def pg_manager(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    data = tmp_path_factory.mktemp("manager-pg")
    env = {**os.environ, "DATABASE_URL": database_url, "PFORTE_MANAGER_DATA": str(data)}
    subprocess.run([sys.executable, "-m", "manager.cli", "migrate", "-v", "0"], env=env, check=True)
    with served_manager(env, data / "serve.log") as url:
        yield url, env


def shell(env: dict[str, str], code: str) -> str:
    out = subprocess.run([sys.executable, "-m", "manager.cli", "shell", "-c", code], env=env, check=True,
                         capture_output=True, text=True, timeout=120)
    return out.stdout.strip().splitlines()[-1]  # the last line: what the code printed last


NEW_PROXY = """
from manager.proxies.models import Proxy, Registration
p = Proxy(name={name!r}, fqdn={name!r} + ".example.com", network_mode="manual", network_interface={nic!r},
          network_address="10.5.5.2/24", network_gateway="10.5.5.1", network_table=105)
p.full_clean(); p.save()
print(p.pk, Registration.create_for(p)[1])
"""


def test_the_manager_runs_on_postgresql(pg_manager: tuple[str, dict[str, str]]) -> None:
    url, env = pg_manager
    assert "postgresql" in shell(env, "from django.db import connection; print(connection.vendor)")
    pk, token = shell(env, NEW_PROXY.format(name="pgedge", nic="eth5")).split()

    results: list[int] = []
    barrier = threading.Barrier(50)

    def go() -> None:
        barrier.wait()
        results.append(httpx.post(f"{url}/api/v1/register/", json={"token": token}, timeout=60).status_code)

    threads = [threading.Thread(target=go) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert sorted(results) == [201] + [410] * 49  # a conditional UPDATE: exactly one wins on PostgreSQL too

    key = shell(env, f"from manager.proxies.models import Proxy; print(Proxy.objects.get(pk={pk}).mint_api_key())")
    h = {"Authorization": f"Bearer {key}"}
    r = httpx.get(f"{url}/api/v1/proxy/config", headers=h, timeout=30)
    assert r.status_code == 200 and r.json()["proxy"]["name"] == "pgedge"
    etag = r.headers["etag"]

    def change_soon() -> None:
        time.sleep(1.0)
        shell(env, f"from manager.proxies.models import Proxy; p = Proxy.objects.get(pk={pk}); "
                   "p.sip_mode = 'udp'; p.save()")

    t = threading.Thread(target=change_soon)
    t.start()
    r = httpx.get(f"{url}/api/v1/proxy/config?wait=30", headers={"If-None-Match": etag, **h}, timeout=60)
    t.join()
    assert r.status_code == 200 and r.json()["services"]["sip"]["mode"] == "udp"

    hb = httpx.post(f"{url}/api/v1/proxy/heartbeat", headers=h, timeout=30,
                    json={"applied_revision": r.json()["revision"], "version": "t", "uptime": 1.0, "services": {}})
    assert hb.status_code == 200 and hb.json()["active_revision"] == r.json()["revision"]
    deadline = time.monotonic() + 10  # heartbeats are written in batches, once a second
    while shell(env, f"from manager.proxies.models import Proxy; print(Proxy.objects.get(pk={pk}).status()[0])") \
            != "Online":
        assert time.monotonic() < deadline


def test_two_manager_processes_share_changes_through_listen_notify(pg_manager: tuple[str, dict[str, str]],
                                                                    tmp_path: Path) -> None:
    """An agent long-polls manager A; an admin saves a new instance through manager B (its own
    process, the same PostgreSQL): A answers with the new revision within 1 s of B's save. A's
    once-in-30-s look could not do that: the NOTIFY B sends in its transaction does."""
    url_a, env = pg_manager
    pk, _ = shell(env, NEW_PROXY.format(name="pgshared", nic="eth6")).split()
    key = shell(env, f"from manager.proxies.models import Proxy; print(Proxy.objects.get(pk={pk}).mint_api_key())")
    shell(env, "from django.contrib.auth import get_user_model; get_user_model().objects.filter(username='pgadm')"
               ".delete(); get_user_model().objects.create_superuser('pgadm', 'a@example.invalid', 'pg-admin-pass-1');"
               " print('ok')")
    h = {"Authorization": f"Bearer {key}"}
    with served_manager(env, tmp_path / "serve-b.log") as url_b:  # the same data dir: the same secrets key
        r = httpx.get(f"{url_a}/api/v1/proxy/config", headers=h, timeout=30)
        etag = r.headers["etag"]
        # a renewal with nothing new waits in A (answered from A's memory, 304 at the end)
        r = httpx.get(f"{url_a}/api/v1/proxy/config?wait=1", headers={**h, "If-None-Match": etag}, timeout=30)
        assert r.status_code == 304
        saved: list[float] = []

        def save_through_b() -> None:
            time.sleep(1.0)
            with httpx.Client(base_url=url_b, timeout=60) as c:
                c.get("/accounts/login/")
                c.post("/accounts/login/", data={"username": "pgadm", "password": "pg-admin-pass-1",
                                                 "csrfmiddlewaretoken": c.cookies["csrftoken"]})
                c.get("/instances/new/")
                resp = c.post("/instances/new/", data={
                    "csrfmiddlewaretoken": c.cookies["csrftoken"], "name": "shared", "web": "http://192.0.2.7:80",
                    "web_prefix_mode": "rewrite", "sip_transport": "udp", "sip_port": "5060"})
                saved.append(time.monotonic())
                assert resp.status_code == 302, resp.text[:500]

        t = threading.Thread(target=save_through_b)
        t.start()
        r = httpx.get(f"{url_a}/api/v1/proxy/config?wait=30", headers={**h, "If-None-Match": etag}, timeout=60)
        answered = time.monotonic()
        t.join()
    assert saved, "the save through manager B failed"
    assert r.status_code == 200 and [i["name"] for i in r.json()["instances"]] == ["shared"]
    assert answered - saved[0] < 1.0, f"A answered {answered - saved[0]:.2f} s after B's save"
