"""The proxy-facing API over real HTTP against a served manager process."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import httpx
import pytest

pytestmark = pytest.mark.usefixtures("db")


def proxy_with_registration(name: str = "dmz", **kw):  # type: ignore[no-untyped-def]
    from manager.proxies.models import Proxy, Registration

    p = Proxy(name=name, fqdn=f"{name}.example.com", **kw)
    p.full_clean()
    p.save()
    _, token = Registration.create_for(p)
    return p, token


def register(url: str, token: str) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/register/", json={"token": token, "hostname": "h", "version": "t"}, timeout=30)


def test_registration_is_single_use_under_a_50_way_race(manager_url: str) -> None:
    _, token = proxy_with_registration()
    results: list[int] = []
    barrier = threading.Barrier(50)

    def go() -> None:
        barrier.wait()
        results.append(register(manager_url, token).status_code)

    threads = [threading.Thread(target=go) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [201] + [410] * 49


def test_registration_errors(manager_url: str) -> None:
    from django.utils import timezone

    from manager.proxies.models import Registration

    p, token = proxy_with_registration()
    assert register(manager_url, "nope").json() == {"detail": "unknown registration"}
    Registration.objects.filter(proxy=p).update(expires=timezone.now() - timedelta(seconds=1))
    r = register(manager_url, token)
    assert r.status_code == 410 and r.json() == {"detail": "registration expired"}


def test_config_etag_long_poll_heartbeat_and_isolation(manager_url: str) -> None:
    p, token = proxy_with_registration()
    other, other_token = proxy_with_registration("lan", network_mode="manual", network_interface="eth1",
                                                 network_address="10.1.1.2/24", network_gateway="10.1.1.1",
                                                 network_table=101)
    key = register(manager_url, token).json()["api_key"]
    other_key = register(manager_url, other_token).json()["api_key"]
    h = {"Authorization": f"Bearer {key}"}
    r = httpx.get(f"{manager_url}/api/v1/proxy/config", headers=h, timeout=30)
    assert r.status_code == 200 and r.json()["proxy"]["name"] == "dmz"
    etag = r.headers["etag"]
    other_cfg = httpx.get(f"{manager_url}/api/v1/proxy/config", headers={"Authorization": f"Bearer {other_key}"})
    assert other_cfg.json()["proxy"]["name"] == "lan"  # each proxy sees only itself
    assert httpx.get(f"{manager_url}/api/v1/proxy/config", headers={"If-None-Match": etag, **h}).status_code == 304
    bad = httpx.get(f"{manager_url}/api/v1/proxy/config", headers={"Authorization": f"Bearer {key}x"})
    assert bad.status_code == 401
    assert httpx.get(f"{manager_url}/api/v1/proxy/config", headers={"Authorization": "Bearer 99.x"}).status_code == 401

    def change_soon() -> None:
        time.sleep(1.0)
        p.sip_mode = "udp"
        p.save()

    started = time.monotonic()  # a renewal with nothing new: parked in front of Django, then 304
    r = httpx.get(f"{manager_url}/api/v1/proxy/config?wait=1", headers={"If-None-Match": etag, **h}, timeout=30)
    assert r.status_code == 304 and r.headers["etag"] == etag and 0.9 < time.monotonic() - started < 10
    r = httpx.get(f"{manager_url}/api/v1/proxy/config?wait=1", headers={"If-None-Match": etag,
                                                                       "Authorization": f"Bearer {key}x"})
    assert r.status_code == 401  # a wrong key never waits

    t = threading.Thread(target=change_soon)
    t.start()
    started = time.monotonic()
    r = httpx.get(f"{manager_url}/api/v1/proxy/config?wait=30", headers={"If-None-Match": etag, **h}, timeout=60)
    waited = time.monotonic() - started
    t.join()
    assert r.status_code == 200 and r.json()["services"]["sip"]["mode"] == "udp"
    assert 0.9 < waited < 25  # held until the change, then answered (not at the end of the wait)

    hb = httpx.post(f"{manager_url}/api/v1/proxy/heartbeat", headers=h,
                    json={"applied_revision": r.json()["revision"], "version": "t", "uptime": 1.0, "services": {},
                          "network": {"mode": "manual", "interface": "eth1"}})
    assert hb.status_code == 200, hb.text
    assert hb.json()["active_revision"] == r.json()["revision"]
    assert written(lambda: p.status() == ("Online", ""))  # heartbeats are written in batches, once a second
    assert p.heartbeats.first().services["network"]["interface"] == "eth1"
    httpx.post(f"{manager_url}/api/v1/proxy/heartbeat", headers=h, json={"applied_revision": 1, "last_error": "boom"})
    assert written(lambda: p.status() == ("Degraded", "boom"))
    assert p.heartbeats.first().source == "127.0.0.1"
    for bad_body, status in ((b"[1]", 400), (b"{", 400), (b'{"uptime": "x"}', 400), (b"x" * 70_000, 413)):
        r = httpx.post(f"{manager_url}/api/v1/proxy/heartbeat", headers={**h, "Content-Type": "application/json"},
                       content=bad_body)
        assert r.status_code == status, (bad_body[:20], r.text)
    assert p.heartbeats.count() == 2  # nothing of the refused ones was written


def written(check, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_openapi_schema_lists_the_proxy_api(manager_url: str) -> None:
    r = httpx.get(f"{manager_url}/api/schema/?format=json", timeout=30)
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert "/api/v1/register/" in paths and "/api/v1/proxy/heartbeat" in paths


def test_heartbeats_are_batched_bounded_and_keys_count_at_once(manager_url: str) -> None:
    """The agents' front answers heartbeats from memory and writes once a second: 50 heartbeats of
    one proxy within a second are one row (the pending batch holds one entry per proxy, whatever a
    proxy sends); a key re-minted in another process is refused by the front within its 1 s look
    (SQLite) and the new one works; nothing is written for a refused key."""
    p, token = proxy_with_registration("burst")
    key = register(manager_url, token).json()["api_key"]
    h = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{manager_url}/api/v1/proxy/config", headers=h, timeout=30).status_code == 200
    with httpx.Client(headers=h, timeout=30) as c:
        started = time.monotonic()
        answers = [c.post(f"{manager_url}/api/v1/proxy/heartbeat", json={"uptime": float(i)}) for i in range(50)]
    assert {a.status_code for a in answers} == {200}
    assert written(lambda: p.heartbeats.count() >= 1)
    time.sleep(1.5)  # one more flush: whatever was still pending is written now
    rows = list(p.heartbeats.values_list("uptime", flat=True))
    assert rows[0] == 49.0 and len(rows) <= 2 + int(time.monotonic() - started)  # the newest, one per second
    new_key = p.mint_api_key()  # in this process: the served manager learns it from the database
    deadline = time.monotonic() + 10
    while httpx.post(f"{manager_url}/api/v1/proxy/heartbeat", headers=h, json={}).status_code != 401:
        assert time.monotonic() < deadline, "the old key still works"
        time.sleep(0.2)
    count = p.heartbeats.count()
    for _ in range(20):
        assert httpx.post(f"{manager_url}/api/v1/proxy/heartbeat", headers=h, json={}).status_code == 401
    r = httpx.post(f"{manager_url}/api/v1/proxy/heartbeat", headers={"Authorization": f"Bearer {new_key}"}, json={})
    assert r.status_code == 200
    assert written(lambda: p.heartbeats.count() == count + 1)


def test_front_answers_count_in_the_metrics_and_a_stop_writes_the_answered_heartbeats(django_db: str) -> None:
    """Polls and heartbeats the agents' front answers without Django are in the request metrics under
    their view names; a heartbeat answered right before the manager is stopped is written at the stop
    (ASGI lifespan), not lost with the pending batch."""
    import os

    from tests.support import served_manager

    p, _ = proxy_with_registration("stopping")
    key = p.mint_api_key()
    h = {"Authorization": f"Bearer {key}"}
    log = os.path.join(django_db, "serve-stopping.log")
    with served_manager({**os.environ, "PFORTE_MANAGER_DATA": django_db}, log) as url:
        first = httpx.get(f"{url}/api/v1/proxy/config", headers=h, timeout=30)
        assert first.status_code == 200
        again = httpx.get(f"{url}/api/v1/proxy/config?wait=0.2", timeout=30,
                          headers={**h, "If-None-Match": first.headers["etag"]})
        assert again.status_code == 304
        assert httpx.post(f"{url}/api/v1/proxy/heartbeat", headers=h, json={"uptime": 1.0}).status_code == 200
        text = httpx.get(f"{url}/metrics", timeout=30).text
        for line in ('pforte_manager_http_requests_total{code="2xx",view="api-config"} 1.0',
                     'pforte_manager_http_requests_total{code="3xx",view="api-config"} 1.0',
                     'pforte_manager_http_requests_total{code="2xx",view="api-heartbeat"} 1.0',
                     "pforte_manager_heartbeats_received_total 1.0",
                     "pforte_manager_config_revisions_served_total 1.0"):
            assert line in text, line
        assert written(lambda: p.heartbeats.count() == 1)
        r = httpx.post(f"{url}/api/v1/proxy/heartbeat", headers=h, json={"uptime": 2.0})
        assert r.status_code == 200
    # stopped (SIGTERM) within a few ms of the answer, before the next once-a-second write
    assert sorted(p.heartbeats.values_list("uptime", flat=True)) == [1.0, 2.0]
