"""The UI's object pages in a real browser (Debian chromium driven by Playwright) against a served
manager: create -> edit -> delete behind its confirmation page, a duplicate MAC shown as a form
error, the change log entry of an edit, live status switching without a reload, Swagger UI loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.manager.browser import chromium, log_in

pytestmark = [pytest.mark.peer, pytest.mark.usefixtures("db")]
PASSWORD = "a-long-crud-password"


def test_create_edit_delete_duplicate_mac_change_log_and_live_status(manager_url: str, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # the test's own database reads run between Playwright calls, in this thread; Playwright's loop
    # in it makes Django think they are async code
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from axes.utils import reset
    from django.contrib.auth import get_user_model

    from manager.proxies.models import Heartbeat, Instance, Proxy

    reset()
    User = get_user_model()  # noqa: N806
    User.objects.filter(username="crud-admin").delete()
    User.objects.create_superuser("crud-admin", "c@example.invalid", PASSWORD)
    with chromium(tmp_path) as browser:
        page = log_in(browser, manager_url, "crud-admin", PASSWORD)

        # create -> edit -> delete (with its confirmation page), each ending with a message
        page.goto(f"{manager_url}/instances/new/")
        page.fill("#id_name", "crud")
        page.fill("#id_sip_host", "10.0.0.6")
        page.click("button[type=submit]")
        page.wait_for_selector("#messages >> text=Instance crud saved")
        assert page.locator("#object-detail >> text=UDP to 10.0.0.6:5060").count() == 1
        iid = Instance.objects.get(name="crud").pk
        page.click("text=Edit")
        page.fill("#id_sip_port", "5070")
        page.click("button[type=submit]")
        page.wait_for_selector("#object-detail >> text=UDP to 10.0.0.6:5070")
        # the edit's change log entry, on the object's page and in the global log
        page.wait_for_selector("#changes >> text=sip_port")
        page.goto(f"{manager_url}/changes/?type=proxies.instance&action=update")
        assert page.locator("#object-list tbody tr:first-child >> text=crud-admin").count() == 1
        page.click("#object-list tbody tr:first-child a")
        page.wait_for_selector(".diff")
        assert page.locator(".diff >> text=5060").count() == 1 and page.locator(".diff >> text=5070").count() == 1
        assert page.locator("text=crud-admin").count() >= 1

        # a duplicate MAC (in another spelling) is a form error, not a 500
        page.goto(f"{manager_url}/instances/{iid}/devices/")
        page.fill("#id_mac", "08:c2:5a:4f:03:21")
        page.click("button:has-text('Add')")
        page.wait_for_selector("#messages >> text=Phone 08C25A4F0321 added.")
        page.fill("#id_mac", "08-C2-5A-4F-03-21")
        page.click("button:has-text('Add')")
        page.wait_for_selector("text=Device with this Instance and MAC address already exists.")

        page.goto(f"{manager_url}/instances/{iid}/")
        page.click("text=Delete")
        page.wait_for_selector("#confirm >> text=This will happen:")
        assert Instance.objects.filter(pk=iid).exists()
        page.click("button:has-text('Delete instance')")
        page.wait_for_selector("#messages >> text=Instance crud deleted.")
        assert not Instance.objects.filter(pk=iid).exists()

        # live status: the open page follows the proxy without a reload
        p = Proxy(name="live", fqdn="live.example.com")
        p.full_clean()
        p.save()
        Heartbeat.objects.create(proxy=p, source="127.0.0.1", applied_revision=p.active_revision.number)
        page.goto(f"{manager_url}/proxies/{p.pk}/")
        page.wait_for_selector('#status[data-status="Online"]')
        Proxy.objects.filter(pk=p.pk).update(enabled=False)
        page.wait_for_selector('#status[data-status="Disabled"]', timeout=5000)
        Proxy.objects.filter(pk=p.pk).update(enabled=True)
        from django.utils import timezone

        Proxy.objects.filter(pk=p.pk).update(agent_stopped=timezone.now())  # what the agent's goodbye does
        page.wait_for_selector('#status[data-status="Offline"]', timeout=5000)
        page.goto(f"{manager_url}/")
        page.wait_for_selector("#object-list >> td.status.Offline")
        Heartbeat.objects.create(proxy=p, source="127.0.0.1", applied_revision=p.active_revision.number)
        page.wait_for_selector("#object-list >> td.status.Online", timeout=5000)  # the list polls too

        # Swagger UI loads (its assets from the manager itself) and shows the API
        page.goto(f"{manager_url}/api/docs/")
        page.wait_for_selector(".swagger-ui .info >> text=pforte manager API")
        page.wait_for_selector("text=/api/v1/objects/proxies/")
