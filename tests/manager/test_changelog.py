"""The change log records many-to-many changes (which proxies expose an instance) from either side
and through the form, and is pruned by age and by count."""

from __future__ import annotations

from datetime import timedelta

import pytest

pytestmark = pytest.mark.usefixtures("db")


def _proxy(name: str, n: int):  # type: ignore[no-untyped-def]
    from manager.proxies.models import Proxy

    p = Proxy(name=name, fqdn=f"{name}.example.com", network_mode="manual", network_interface=f"eth{n}",
              network_address=f"10.9.{n}.2/24", network_gateway=f"10.9.{n}.1", network_table=100 + n)
    p.full_clean()
    p.save()
    return p


def _m2m_changes(inst):  # type: ignore[no-untyped-def]
    from manager.proxies.models import ObjectChange

    return [(c.username, c.before.get("proxies"), c.after.get("proxies")) for c in
            ObjectChange.objects.filter(object_type="proxies.instance", object_id=inst.pk, action="update")
            .order_by("pk") if "proxies" in c.after]


def test_instance_proxy_exposure_is_in_the_change_log(admin_client) -> None:  # type: ignore[no-untyped-def]
    from manager.proxies.models import Instance

    a, b = _proxy("m2m-a", 1), _proxy("m2m-b", 2)
    inst = Instance.objects.create(name="m2m")
    r = admin_client.post(f"/instances/{inst.pk}/edit/", {"name": "m2m", "sip_transport": "udp", "sip_port": "5060",
                                                          "web_prefix_mode": "rewrite", "proxies": [a.pk]})
    assert r.status_code == 302, r.content
    assert _m2m_changes(inst) == [("dev-admin", [], ["m2m-a"])]
    b.only_instances.add(inst)  # from the proxy's side, no user (a command)
    assert _m2m_changes(inst)[-1] == ("", ["m2m-a"], ["m2m-a", "m2m-b"])
    a.only_instances.clear()
    assert _m2m_changes(inst)[-1] == ("", ["m2m-a", "m2m-b"], ["m2m-b"])
    inst.proxies.clear()
    assert _m2m_changes(inst)[-1] == ("", ["m2m-b"], [])
    inst.proxies.set([])  # no change: no entry
    assert len(_m2m_changes(inst)) == 4
    page = admin_client.get("/changes/?type=proxies.instance").content.decode()
    assert "m2m" in page


def test_the_change_log_is_pruned_by_age_and_count(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.conf import settings
    from django.utils import timezone

    from manager.proxies import changelog
    from manager.proxies.models import Instance, ObjectChange

    for i in range(12):
        Instance.objects.create(name=f"prune-{i}")
    old = ObjectChange.objects.filter(object_repr="prune-0").get()
    ObjectChange.objects.filter(pk=old.pk).update(time=timezone.now() - timedelta(days=91))
    monkeypatch.setattr(settings, "PFORTE_CHANGELOG_DAYS", 90)
    monkeypatch.setattr(settings, "PFORTE_CHANGELOG_KEEP", 10**6)
    assert changelog.prune() == 1 and not ObjectChange.objects.filter(pk=old.pk).exists()
    monkeypatch.setattr(settings, "PFORTE_CHANGELOG_KEEP", 5)
    newest = list(ObjectChange.objects.order_by("-pk").values_list("pk", flat=True)[:5])
    changelog.prune()
    assert sorted(ObjectChange.objects.values_list("pk", flat=True)) == sorted(newest)
    # and it runs by itself as entries are written
    monkeypatch.setattr(settings, "PFORTE_CHANGELOG_KEEP", 3)
    for i in range(changelog.PRUNE_EVERY):
        Instance.objects.create(name=f"auto-{i}")
    assert ObjectChange.objects.count() < changelog.PRUNE_EVERY  # pruned to 3 on the way, then grown again
