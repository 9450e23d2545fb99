"""Each role's view of the same proxy in a real browser (Debian chromium driven by Playwright),
logged in through the login form of a served manager: what each may do is offered, what it may
not is absent, and no secret reaches a viewer's or operator's page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.manager.browser import chromium, log_in

pytestmark = [pytest.mark.peer, pytest.mark.usefixtures("db")]
PASSWORD = "a-long-role-password"
DNS_TOKEN = "browser-dns-token-0123456789"


def seed() -> dict[str, Any]:
    from manager.proxies import roles
    from manager.proxies.models import Device, DnsRecord, Heartbeat, Instance, Proxy
    from proxyd.tls import make_self_signed

    inst = Instance.objects.create(name="roles", web="http://10.0.0.5:8080")
    cert, key = make_self_signed("roles.example.com", [])
    p = Proxy(name="roles", fqdn="roles.example.com", certificate_pem=cert)
    p.key_pem = key
    p.full_clean()
    p.save()
    device = Device.objects.create(instance=inst, mac="08C25A4F0322")
    api_key = p.mint_api_key(source="127.0.0.1", hostname="roles-host")
    Heartbeat.objects.create(proxy=p, source="127.0.0.1", applied_revision=p.active_revision.number)
    dns = DnsRecord(proxy=p, name="roles.dyn.example.com", zone="dyn.example.com", provider="cloudflare")
    dns.credentials = DNS_TOKEN
    dns.save()
    from django.contrib.auth import get_user_model

    User = get_user_model()  # noqa: N806
    for role in roles.ROLES:
        User.objects.filter(username=f"ui-{role}").delete()
        roles.assign(User.objects.create_user(f"ui-{role}", password=PASSWORD), role)
    (url,) = [u for _, u in device.urls()]
    return {"proxy": p, "instance": inst, "provisioning_url": url,
            "secrets": ["PRIVATE KEY", p.provisioning_key, DNS_TOKEN, api_key.partition(".")[2]]}


def test_viewer_operator_and_admin_see_the_same_proxy(manager_url: str, tmp_path: Path) -> None:
    from axes.utils import reset

    reset()  # a lockout left from another test must not stop these logins
    s = seed()
    pid, iid = s["proxy"].pk, s["instance"].pk
    with chromium(tmp_path) as browser:

        def login(role: str):  # type: ignore[no-untyped-def]
            return log_in(browser, manager_url, f"ui-{role}", PASSWORD)

        def look(page, path: str) -> str:  # type: ignore[no-untyped-def]
            page.goto(f"{manager_url}{path}")
            return page.content()

        viewer = login("viewer")
        html = look(viewer, f"/proxies/{pid}/")
        assert "Online" in html and s["proxy"].api_key_prefix in html  # status and which agent holds the key
        for absent in ("Edit settings", "Create Registration", 'id="backup"', "Save DNS record",
                       "Allow re-registration", "Django admin"):
            assert absent not in html, absent
        devices = look(viewer, f"/instances/{iid}/devices/")
        assert "08C25A4F0322" in devices and "not shown to your role" in devices
        assert s["provisioning_url"] not in devices and "Export CSV" not in devices
        for secret in s["secrets"]:
            assert secret not in html + devices
        assert viewer.goto(f"{manager_url}/proxies/{pid}/edit/").status == 403
        assert "needs the permission proxies.change_proxy" in viewer.locator("#forbidden").inner_text()

        operator = login("operator")
        html = look(operator, f"/proxies/{pid}/")
        assert "Edit settings" in html and "Save DNS record" in html
        for absent in ("Create Registration", 'id="backup"', "Allow re-registration"):
            assert absent not in html, absent
        assert operator.locator("#id_api_url").is_disabled() and operator.locator("#id_name").is_enabled()
        edit = look(operator, f"/proxies/{pid}/edit/")
        assert operator.locator("#id_key_pem").is_disabled() and operator.locator("#id_fqdn").is_enabled()
        devices = look(operator, f"/instances/{iid}/devices/")
        assert s["provisioning_url"] in devices  # operators hand these to phones
        for secret in s["secrets"]:
            assert secret not in html + edit + devices

        admin = login("admin")
        html = look(admin, f"/proxies/{pid}/")
        for present in ("Create Registration", 'id="backup"', "Allow re-registration", "Django admin"):
            assert present in html, present
        admin.click("text=Allow re-registration")
        admin.wait_for_selector("#reregistration >> text=allowed")
    from manager.proxies.models import Proxy

    assert Proxy.objects.get(pk=pid).reregistration_allowed
