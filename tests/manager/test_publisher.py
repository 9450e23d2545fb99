"""A change to every proxy is published by the publisher thread, not in the request that made it:
the save returns first, a burst of saves is one publish, and one committed by a process that ended
before publishing reaches the proxies when the next one starts (its `PendingPublish` row)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.usefixtures("db")


def _proxy(name: str, nic: int = 0):  # type: ignore[no-untyped-def]
    from manager.proxies.models import Proxy

    # one proxy per NIC: only one may take the address by DHCP (network mode auto)
    p = Proxy(name=name, fqdn=f"{name}.example.com", web_port=8443 + nic, network_mode="manual",
              network_interface=f"eth{nic}", network_address=f"10.5.{nic}.100/24", network_gateway=f"10.5.{nic}.254",
              network_table=100 + nic)
    p.full_clean()
    p.save()
    return p


def _instances(proxy) -> list[str]:  # type: ignore[no-untyped-def]
    return [i["name"] for i in json.loads(proxy.active_revision.config_json)["instances"]]


@pytest.fixture
def publisher(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A publisher thread of this test's own, as `serve` starts one, with a long settle so a test can
    look between the save and the publish."""
    from manager.proxies import publisher as mod
    from manager.proxies import signals

    pub = mod.Publisher()
    monkeypatch.setattr(signals, "PUBLISHER", pub)
    monkeypatch.setattr(mod, "SETTLE", 0.5)
    return pub


def test_a_global_change_returns_before_it_is_published_and_a_burst_is_one_publish(publisher) -> None:  # type: ignore[no-untyped-def]
    from manager.proxies.models import Instance, PendingPublish

    edges = [_proxy(f"edge{i}", i) for i in range(3)]
    before = [p.active_revision.number for p in edges]
    publisher.start()
    assert publisher.idle(30)  # the look at start: nothing owed, nothing published
    assert publisher.runs == 1 and [p.active_revision.number for p in edges] == before

    for name in ("one", "two", "three"):
        Instance.objects.create(name=name, web="http://192.0.2.10:8080")
    # saved and returned; the revisions are the publisher's, after its settle
    assert [p.active_revision.number for p in edges] == before
    assert publisher.idle(30)
    assert publisher.runs == 2  # three saves, one publish
    assert not PendingPublish.objects.exists()  # the three asks it covered, gone with it
    for p, was in zip(edges, before, strict=True):
        assert p.active_revision.number == was + 1
        assert _instances(p) == ["one", "three", "two"]


def test_a_change_committed_but_never_published_is_published_at_the_next_start(publisher,  # type: ignore[no-untyped-def]
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from manager.proxies import signals
    from manager.proxies.models import Instance, PendingPublish
    from manager.proxies.publisher import Publisher

    class Died(Publisher):
        """The serving process that saved the change and ended before its publisher ran."""

        running = True  # type: ignore[assignment]

        def request(self) -> None:
            pass

    edge = _proxy("edge")
    was = edge.active_revision.number
    with monkeypatch.context() as m:
        m.setattr(signals, "PUBLISHER", Died())
        Instance.objects.create(name="lost", web="http://192.0.2.10:8080")
    assert edge.active_revision.number == was and PendingPublish.objects.count() == 1
    publisher.start()
    assert publisher.idle(30)
    assert edge.active_revision.number == was + 1 and _instances(edge) == ["lost"]
    assert not PendingPublish.objects.exists()


def test_without_a_publisher_thread_a_global_change_is_published_inline() -> None:
    """The admin CLI and a shell have no publisher: the save publishes before it returns."""
    from manager.proxies.models import Instance
    from manager.proxies.publisher import PUBLISHER

    assert not PUBLISHER.running
    edge = _proxy("edge")
    Instance.objects.create(name="now", web="http://192.0.2.10:8080")
    assert _instances(edge) == ["now"]


def test_a_change_to_every_proxy_keeps_each_ones_newest_revisions() -> None:
    from django.test import override_settings

    from manager.proxies.models import Instance

    def numbers(p) -> list[int]:  # type: ignore[no-untyped-def]
        return list(p.revisions.values_list("number", flat=True))

    with override_settings(PFORTE_REVISIONS_KEEP=2):
        a, b = _proxy("a", 0), _proxy("b", 1)
        for port in (9000, 9001):
            b.web_port = port
            b.save()
        assert numbers(a) == [1] and numbers(b) == [3, 2]
        Instance.objects.create(name="all", web="http://192.0.2.10:8080")
        assert numbers(a) == [2, 1] and numbers(b) == [4, 3]
