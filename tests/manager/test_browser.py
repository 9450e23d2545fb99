"""The manager UI in a real browser (Debian chromium driven by Playwright), against a served manager."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.manager.browser import chromium, log_in

pytestmark = [pytest.mark.peer, pytest.mark.usefixtures("db")]


def test_admin_creates_instance_and_proxy_switches_sip_and_gets_a_registration(manager_url: str,
                                                                                 tmp_path: Path) -> None:
    from django.contrib.auth import get_user_model

    User = get_user_model()  # noqa: N806
    User.objects.filter(username="ui-admin").delete()
    User.objects.create_superuser("ui-admin", "a@example.invalid", "a-long-ui-password")
    with chromium(tmp_path) as browser:
        page = log_in(browser, manager_url, "ui-admin", "a-long-ui-password")

        page.goto(f"{manager_url}/instances/new/")
        page.fill("#id_name", "acme")
        page.fill("#id_web", "http://127.0.0.1:9/")
        page.click("button[type=submit]")
        page.wait_for_selector("#messages >> text=Instance acme saved")
        assert page.locator("h1 >> text=acme").count() >= 1

        page.goto(f"{manager_url}/proxies/new/")
        page.fill("#id_name", "edge")
        page.fill("#id_fqdn", "edge.example.com")
        page.click("button[type=submit]")
        page.wait_for_selector("text=Create Registration")
        page.click("text=Edit settings")
        page.select_option("#id_sip_mode", "udp")
        page.click("button[type=submit]")
        page.wait_for_selector("text=Create Registration")
        assert page.locator("#sip-label >> text=UDP and TCP 5060").count() == 1

        page.click("text=Create Registration")
        url = page.locator("#registration-url").inner_text().strip()
        assert url.startswith(f"{manager_url}/api/v1/register/#")  # the token in the fragment, in no request line
        page.screenshot(path=str(tmp_path / "proxy.png"), full_page=True)

        page.click("text=Add application")
        page.fill("#id_name", "procurat")
        page.fill("#id_port", "9443")
        page.fill("#id_upstream", "https://p5.school.local:8443/procurat/api/v1/")
        page.click("button[type=submit]")
        page.wait_for_selector("#applications >> text=procurat")
        assert page.locator("#applications >> text=9443 (TLS)").count() == 1
        page.goto(f"{manager_url}/")
        assert page.locator("a", has_text="edge").count() == 1
        assert page.locator("text=Never connected").count() >= 1
    base, _, token = url.partition("#")
    r = httpx.post(base, json={"token": token, "hostname": "ui", "version": "t"}, timeout=30)
    assert r.status_code == 201 and r.json()["proxy"]["name"] == "edge"  # the page showed a real, usable URL
    import json

    from manager.proxies.models import Proxy

    cfg = json.loads(Proxy.objects.get(name="edge").active_revision.config_json)
    assert cfg["services"]["sip"]["mode"] == "udp" and [i["name"] for i in cfg["instances"]] == ["acme"]
    assert [(a["name"], a["port"], a["public_prefix"]) for a in cfg["applications"]] == [("procurat", 9443, "/api/")]
