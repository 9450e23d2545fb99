"""The UI in a real browser (Debian chromium driven by Playwright) against a served manager:

- every page of the UI, found by walking the URL patterns (not a hand list), opened by a viewer, an
  operator and an admin: each gets what tests/manager/test_permissions.py's table says (the page,
  or 403), and no page shows a role a secret it may not see;
- create -> edit -> delete behind its confirmation page for every object type the UI makes
  (proxies, applications, phones, DNS records, users, API tokens; registrations are made and revoked,
  backups uploaded and deleted; instances are tests/manager/test_browser_crud.py's), each step
  ending with its message.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from tests.manager.browser import chromium, log_in
from tests.manager.test_permissions import (  # noqa: F401 - `seed` is the walk's fixture
    ADMIN_NAMESPACE,
    Seed,
    all_patterns,
    expectation,
    forbidden_secrets,
    seed,
    url_of,
)

pytestmark = [pytest.mark.peer, pytest.mark.usefixtures("db")]
WALK_PASSWORD = "a-long-walk-password"  # test_permissions.client_for's
DOWNLOADS = {"backup-download", "instance-devices-csv"}  # attachments: fetched, not rendered
NOT_PAGES = {"logout", "login"}


def ui_patterns() -> list[Any]:
    return [p for p in all_patterns() if not p.route.startswith(("api/", "admin/")) and
            not p.name.startswith(f"{ADMIN_NAMESPACE}:") and p.name not in NOT_PAGES and
            p.name not in ("healthz", "readyz", "metrics")]


def test_every_ui_page_with_every_role(manager_url: str, tmp_path: Path, seed: Seed,  # noqa: F811
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # the test's own ORM reads beside Playwright's loop
    from axes.utils import reset

    from tests.manager.test_permissions import client_for

    reset()
    for role in ("viewer", "operator", "admin"):
        client_for(role)  # walk-<role> exists with its role and password
    patterns = ui_patterns()
    assert len(patterns) > 40, "the walk found too few pages"
    problems: list[str] = []
    with chromium(tmp_path) as browser:
        for role in ("viewer", "operator", "admin"):
            page = log_in(browser, manager_url, f"walk-{role}", WALK_PASSWORD)
            for p in patterns:
                want = expectation(role, "GET", p)
                url = manager_url + url_of(p, seed)
                if p.name in DOWNLOADS or want == "405":  # a file, or a POST-only URL (an empty 405)
                    resp = page.request.get(url)
                    status, text = resp.status, resp.text()
                else:
                    resp = page.goto(url)
                    status, text = resp.status, page.content()
                ok = {"allowed": status in (200, 404), "refused": status == 403, "405": status == 405}[want]
                if want == "allowed" and status == 404 and p.name not in ("token-detail", "token-delete"):
                    ok = False  # only another user's token is not found; every other seeded object is
                if not ok:
                    problems.append(f"{role} GET {url} ({p.name}): expected {want}, got {status}")
                for what, secret in forbidden_secrets(role, seed).items():
                    if secret in text:
                        problems.append(f"{role} GET {url} ({p.name}): the {what} is on the page")
            page.context.close()
    assert not problems, "\n".join(problems)


def _submit(page: Any) -> None:
    page.click("main button[type=submit]")


def _message(page: Any, text: str) -> None:
    page.wait_for_selector(f"#messages >> text={text}")


def _confirm(page: Any, link: str, button: str, message: str) -> None:
    page.click(f"main .actions >> text={link}")
    page.wait_for_selector("#confirm >> text=This will happen:")
    page.click(f"#confirm button:has-text('{button}')")
    _message(page, message)


def test_create_edit_delete_every_object_type(manager_url: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from axes.utils import reset
    from django.contrib.auth import get_user_model

    from manager.proxies.models import ApiToken, Application, Backup, Device, DnsRecord, Instance, Proxy, Registration

    reset()
    User = get_user_model()  # noqa: N806
    User.objects.filter(username__in=["every-admin", "every-made"]).delete()
    User.objects.create_superuser("every-admin", "e@example.invalid", "a-long-every-password")
    inst = Instance.objects.create(name="every")
    with chromium(tmp_path) as browser:
        page = log_in(browser, manager_url, "every-admin", "a-long-every-password")

        # proxy
        page.goto(f"{manager_url}/proxies/new/")
        page.fill("#id_name", "every")
        page.fill("#id_fqdn", "every.example.com")
        page.select_option("#id_network_mode", "manual")
        page.fill("#id_network_interface", "eth7")
        page.fill("#id_network_address", "10.7.7.2/24")
        page.fill("#id_network_gateway", "10.7.7.1")
        page.fill("#id_network_table", "107")
        _submit(page)
        _message(page, "Proxy every created")
        pid = Proxy.objects.get(name="every").pk
        page.click("text=Edit settings")
        page.fill("#id_fqdn", "every2.example.com")
        _submit(page)
        _message(page, "Proxy every saved")
        assert Proxy.objects.get(pk=pid).fqdn == "every2.example.com"

        # application of the proxy
        page.click("text=Add application")
        page.fill("#id_name", "app")
        page.fill("#id_port", "9443")
        page.fill("#id_upstream", "https://10.0.0.5:8443/api/")
        _submit(page)
        _message(page, "Application app saved.")
        aid = Application.objects.get(proxy_id=pid, name="app").pk
        page.goto(f"{manager_url}/proxies/{pid}/applications/{aid}/")
        page.click("main .actions >> text=Edit")
        page.fill("#id_port", "9444")
        _submit(page)
        _message(page, "Application app saved.")
        assert Application.objects.get(pk=aid).port == 9444
        page.goto(f"{manager_url}/proxies/{pid}/applications/{aid}/")
        _confirm(page, "Delete", "Delete application", "Application app deleted.")
        assert not Application.objects.filter(pk=aid).exists()

        # registration: made, then revoked
        page.goto(f"{manager_url}/proxies/{pid}/")
        page.click("text=Create Registration")
        _message(page, "Registration URL made")
        rid = Registration.objects.get(proxy_id=pid).pk
        page.goto(f"{manager_url}/proxies/{pid}/registrations/{rid}/")
        _confirm(page, "Revoke", "Revoke", f"Registration #{rid} revoked.")
        assert not Registration.objects.filter(pk=rid).exists()

        # DNS record (with the DNS account's credentials)
        page.goto(f"{manager_url}/dns/new/?proxy={pid}")
        page.fill("#id_name", "every.dyn.example.com")
        page.fill("#id_zone", "dyn.example.com")
        page.select_option("#id_provider", "cloudflare")
        page.fill("#id_credentials", "every-cf-token-0123456789")
        _submit(page)
        _message(page, "DNS record saved")
        did = DnsRecord.objects.get(proxy_id=pid).pk
        page.click("main .actions >> text=Edit")
        page.fill("#id_name", "every2.dyn.example.com")
        _submit(page)
        _message(page, "DNS record saved")
        assert DnsRecord.objects.get(pk=did).name == "every2.dyn.example.com"
        _confirm(page, "Delete", "Remove", "DNS record every2.dyn.example.com removed")
        assert not DnsRecord.objects.filter(pk=did).exists()

        # backup: uploaded (the proxy off), reviewed on its confirmation page, then deleted
        Proxy.objects.filter(pk=pid).update(enabled=False)
        archive = tmp_path / "every.pfbk"
        archive.write_bytes(b"PFORTEBK" + base64.b64decode("AAAA") * 8)
        page.goto(f"{manager_url}/proxies/{pid}/")
        page.set_input_files("input[name=file]", str(archive))
        page.click("button[name=restore]")
        page.wait_for_selector("#confirm >> text=are replaced by the backup")
        bid = Backup.objects.get(proxy_id=pid).pk
        page.click("#confirm >> text=Cancel")
        _confirm(page, "Delete", "Delete backup", "deleted.")
        assert not Backup.objects.filter(pk=bid).exists()

        # phone of an instance
        page.goto(f"{manager_url}/instances/{inst.pk}/devices/")
        page.fill("#id_mac", "08C25A4F0777")
        page.click("button:has-text('Add')")
        _message(page, "Phone 08C25A4F0777 added.")
        dev = Device.objects.get(instance=inst).pk
        page.goto(f"{manager_url}/instances/{inst.pk}/devices/{dev}/")
        page.click("main .actions >> text=Edit")
        page.fill("#id_label", "reception")
        _submit(page)
        _message(page, "Phone 08C25A4F0777 saved.")
        assert Device.objects.get(pk=dev).label == "reception"
        _confirm(page, "Delete", "Delete phone", "Phone 08C25A4F0777 deleted.")
        assert not Device.objects.filter(pk=dev).exists()

        # user
        page.goto(f"{manager_url}/users/new/")
        page.fill("#id_username", "every-made")
        page.select_option("#id_role", "operator")
        page.fill("#id_password", "a-long-made-password")
        _submit(page)
        _message(page, "User every-made saved with role operator.")
        uid = User.objects.get(username="every-made").pk
        page.click("main .actions >> text=Edit")
        page.select_option("#id_role", "viewer")
        _submit(page)
        _message(page, "User every-made saved with role viewer.")
        _confirm(page, "Delete", "Delete user", "User every-made deleted.")
        assert not User.objects.filter(pk=uid).exists()

        # API token: shown once on the page that made it, then revoked
        page.goto(f"{manager_url}/tokens/new/")
        page.fill("#id_name", "every")
        page.select_option("#id_role", "operator")
        _submit(page)
        _message(page, "API token every made")
        shown = page.locator("#object-detail code.copy").inner_text()
        token = ApiToken.objects.get(name="every")
        assert shown.startswith(token.prefix) and token.key_hash == ApiToken.hash(shown)
        page.goto(f"{manager_url}/tokens/{token.pk}/")
        assert shown not in page.content()
        _confirm(page, "Revoke", "Revoke token", "revoked.")
        assert not ApiToken.objects.filter(pk=token.pk).exists()

        # and the proxy last
        page.goto(f"{manager_url}/proxies/{pid}/")
        page.click("main .actions >> text=Delete proxy")
        page.wait_for_selector("#confirm >> text=This will happen:")
        page.click("#confirm button:has-text('Delete proxy')")
        _message(page, "Proxy every deleted.")
        assert not Proxy.objects.filter(pk=pid).exists()
