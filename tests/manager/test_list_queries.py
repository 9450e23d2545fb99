"""Lists ask the database a fixed number of queries, however many rows they show: every list page of
the UI and every list of the API, with 3 and with 30 objects of each kind (status, revision, roles
and many-to-many fields are fetched for the page in bulk, never per row)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

pytestmark = pytest.mark.usefixtures("db")

UI_LISTS = ["/", "/instances/", "/applications/", "/devices/", "/registrations/", "/backups/", "/dns/", "/users/",
            "/tokens/", "/changes/"]
API_LISTS = ["proxies", "instances", "applications", "devices", "registrations", "backups", "dns-records", "users",
             "tokens"]


def _grow(start: int, stop: int) -> None:
    from django.contrib.auth import get_user_model

    from manager.proxies import roles
    from manager.proxies.models import (
        ApiToken,
        Application,
        Backup,
        Device,
        DnsRecord,
        Heartbeat,
        Instance,
        Proxy,
        Registration,
    )

    admin = get_user_model().objects.get(username="dev-admin")
    for i in range(start, stop):
        p = Proxy(name=f"q{i}", fqdn=f"q{i}.example.com", network_mode="manual", network_interface=f"q{i}",
                  network_address=f"10.8.{i}.2/24", network_gateway=f"10.8.{i}.1", network_table=100 + i)
        p.save()
        for _ in range(3):
            Heartbeat.objects.create(proxy=p, source="127.0.0.1", applied_revision=p.active_revision.number)
        inst = Instance.objects.create(name=f"q{i}")
        inst.proxies.add(p)
        Application.objects.create(proxy=p, name="app", port=9443, upstream="https://10.0.0.5/api/")
        Device.objects.create(instance=inst, mac=f"08C25A4F{i:04X}")
        Registration.create_for(p)
        Backup.objects.create(proxy=p, size=1, data=b"x")
        DnsRecord.objects.create(proxy=p, name=f"q{i}.dyn.example.com", zone="dyn.example.com", provider="cloudflare")
        u = get_user_model().objects.create_user(f"q-user-{i}", password="a-long-q-password")
        roles.assign(u, roles.ROLES[i % 3])
        t = ApiToken(user=admin, name=f"q{i}", role="viewer")
        t.mint()
        t.save()


def _count(client, url: str) -> int:  # type: ignore[no-untyped-def]
    with CaptureQueriesContext(connection) as ctx:
        r = client.get(url)
    assert r.status_code == 200, (url, r.status_code)
    return len(ctx.captured_queries)


def test_lists_do_not_query_per_row(admin_client) -> None:  # type: ignore[no-untyped-def]
    from django.contrib.auth import get_user_model

    get_user_model().objects.filter(username__startswith="q-user-").delete()
    urls = UI_LISTS + [f"/api/v1/objects/{name}/" for name in API_LISTS]
    _grow(0, 3)
    few = {url: _count(admin_client, url) for url in urls}
    _grow(3, 30)
    many = {url: _count(admin_client, url) for url in urls}
    assert many == few, {url: (few[url], many[url]) for url in urls if many[url] != few[url]}


def test_api_rows_are_what_drf_would_write(admin_client) -> None:  # type: ignore[no-untyped-def]
    """The API's row plan (CleanSerializer) answers exactly what DRF's generic field walk does, for
    every kind of object it serializes: keys, choices, dates, JSON, many-to-many, properties."""
    from rest_framework import serializers

    from manager.proxies.api_objects import SPECS, CleanSerializer

    _grow(0, 3)
    checked = 0
    for _, model, ser, *_ in SPECS:
        if not issubclass(ser, CleanSerializer):
            continue
        objs = list(model._default_manager.all())
        assert objs, model
        plan = ser(objs, many=True).data
        drf = [serializers.ModelSerializer.to_representation(ser(), o) for o in objs]
        assert [dict(r) for r in plan] == drf, model
        checked += 1
    assert checked == 7
