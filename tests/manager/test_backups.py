"""Backups through the manager, in-process: refusals on the page, the proxy's part over its API,
download from page and API, and every restore verification error leaving everything unchanged.
(The round trip with a running proxyd is tests/e2e/test_backup_restore_manager.py.)"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from proxyd.backup import Archive, decrypt, encrypt, seal, sealing_key

pytestmark = pytest.mark.usefixtures("db")
PASS = "correct horse battery"
CERT = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nself-signed\n-----END CERTIFICATE-----\n").decode()
KEY = base64.b64encode(b"-----BEGIN PRIVATE KEY-----\nproxy-made\n-----END PRIVATE KEY-----\n").decode()


@pytest.fixture
def admin(admin_client):  # type: ignore[no-untyped-def]
    """The logged-in superuser client of tests/manager/conftest.py."""
    return admin_client


def make_proxy(name: str = "dmz", online: bool = True, **kw: Any):  # type: ignore[no-untyped-def]
    from manager.proxies.models import Application, Heartbeat, Proxy

    p = Proxy(name=name, fqdn=f"{name}.example.com", **kw)
    p.full_clean()
    p.save()
    Application.objects.create(proxy=p, name="procurat", port=8443, upstream="https://10.0.0.5:8443/api/v1/")
    key = p.mint_api_key()
    if online:
        Heartbeat.objects.create(proxy=p, source="127.0.0.1", applied_revision=p.active_revision.number)
    return p, key


def proxy_client(key: str):  # type: ignore[no-untyped-def]
    from django.test import Client

    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


def page(admin, p) -> str:  # type: ignore[no-untyped-def]
    return admin.get(f"/proxies/{p.pk}/").content.decode()


def backup_through_proxy(admin, p, key: str) -> bytes:  # type: ignore[no-untyped-def]
    """Admin asks, the proxy sees the action in its heartbeat and config answers and uploads."""
    r = admin.post(f"/proxies/{p.pk}/backups/", {"passphrase": PASS, "passphrase2": PASS})
    assert r.status_code == 302
    proxy = proxy_client(key)
    hb = proxy.post("/api/v1/proxy/heartbeat", {"applied_revision": p.active_revision.number},
                    content_type="application/json").json()
    (action,) = hb["actions"]
    assert action["kind"] == "backup"
    cfg = proxy.get("/api/v1/proxy/config")
    assert cfg["X-Pforte-Actions"] == f"backup/{action['id']}"
    up = proxy.post(f"/api/v1/proxy/actions/{action['id']}/backup",
                    {"files": {"certs/self-signed.pem": CERT, "certs/self-signed.key": KEY}},
                    content_type="application/json")
    assert up.status_code == 201, up.content
    assert "X-Pforte-Actions" not in proxy.get("/api/v1/proxy/config")  # done: not offered again
    b = p.backups.get(pk=up.json()["backup"])
    download = admin.get(f"/proxies/{p.pk}/backups/{b.pk}/download/")
    assert download["Content-Disposition"].startswith(f'attachment; filename="{p.name}-')
    return b"".join(download.streaming_content) if download.streaming else download.content


def test_backup_refused_while_off_or_never_connected_page_says_why(admin) -> None:  # type: ignore[no-untyped-def]
    from manager.proxies.models import ProxyAction

    p, _ = make_proxy(online=False)
    html = page(admin, p)
    assert 'name="create-backup"' in html and "The proxy is never connected" in html
    assert "The proxy is on. Switch it off first" in html and 'name="restore"' in html
    admin.post(f"/proxies/{p.pk}/backups/", {"passphrase": PASS, "passphrase2": PASS})
    assert "Backup refused: The proxy is never connected" in page(admin, p)
    p.enabled = False
    p.save()
    admin.post(f"/proxies/{p.pk}/backups/", {"passphrase": PASS, "passphrase2": PASS})
    assert "Backup refused: The proxy is off" in page(admin, p)
    assert not ProxyAction.objects.filter(proxy=p).exists()
    api = admin.post(f"/api/v1/proxies/{p.pk}/backups/", {"passphrase": PASS}, content_type="application/json")
    assert api.status_code == 409 and "off" in api.json()["detail"]


def test_backup_via_proxy_upload_then_every_restore_error_changes_nothing(admin) -> None:  # type: ignore[no-untyped-def]
    from manager.proxies.backups import settings_of
    from manager.proxies.models import Proxy, ProxyAction

    p, key = make_proxy(redirect_url="https://example.com/before")
    blob = backup_through_proxy(admin, p, key)
    archive = decrypt(blob, PASS)
    assert archive.proxy == "dmz" and set(archive.files) == {
        "certs/self-signed.pem", "certs/self-signed.key", "manager/proxy.json"}
    saved = json.loads(archive.files["manager/proxy.json"])
    assert saved["provisioning_key"] == p.provisioning_key and saved["applications"][0]["name"] == "procurat"
    assert PASS.encode() not in blob and p.provisioning_key.encode() not in blob
    api_list = admin.get(f"/api/v1/proxies/{p.pk}/backups/").json()
    assert [b["size"] for b in api_list["backups"]] == [len(blob)]
    assert admin.get(api_list["backups"][0]["download"]).content == blob
    assert ProxyAction.objects.get(proxy=p, kind="backup").secret_enc == ""  # the sealing key is wiped

    # restore while on: refused, and said so
    r = admin.post(f"/api/v1/proxies/{p.pk}/restore/", {"file": _upload(blob), "passphrase": PASS})
    assert r.status_code == 409 and "Switch it off first" in r.json()["detail"]

    p = Proxy.objects.get(pk=p.pk)
    p.enabled = False
    p.redirect_url = "https://example.com/after"
    p.provisioning_key = base64.b64encode(b"k" * 32).decode()
    p.save()
    p.applications.all().delete()
    before = settings_of(p), p.active_revision.number

    other = Archive("beta", 1.0, {**archive.files})
    standalone = Archive("dmz", 1.0, {"certs/self-signed.pem": b"x", "config/last-good.json": b"{}"})
    tampered = bytearray(blob)
    tampered[len(blob) // 2] ^= 0x01
    cases = [
        (blob, PASS + "x", "wrong passphrase"),
        (blob[:-7], PASS, "changed or truncated"),
        (blob[:30], PASS, "truncated"),
        (bytes(tampered), PASS, "changed or truncated"),
        (blob[:8] + b"\x07" + blob[9:], PASS, "version 7 is not supported"),
        (b"PK\x03\x04 not a backup at all" * 4, PASS, "not a pforte backup"),
        (encrypt(other, PASS), PASS, "of proxy 'beta', not 'dmz'"),
        (encrypt(standalone, PASS), PASS, "holds no manager settings"),
    ]
    for data, passphrase, error in cases:
        r = admin.post(f"/api/v1/proxies/{p.pk}/restore/", {"file": _upload(data), "passphrase": passphrase})
        assert r.status_code == 400 and error in r.json()["detail"], (error, r.content)
        assert r.json()["detail"].startswith("restore failed, nothing changed")
        p = Proxy.objects.get(pk=p.pk)
        assert (settings_of(p), p.active_revision.number) == before
        assert not ProxyAction.objects.filter(proxy=p, kind="restore").exists()
    # the same through the page: a file that is no backup is refused at the upload, and nothing kept
    kept = p.backups.count()
    admin.post(f"/proxies/{p.pk}/restore/", {"file": _upload(b"PK\x03\x04 not a backup at all")})
    assert "Restore failed, nothing changed: not a pforte backup file" in page(admin, p)
    assert p.backups.count() == kept
    # a backup file is kept, and the confirmation page says what will be replaced before anything is
    r = admin.post(f"/proxies/{p.pk}/restore/", {"file": _upload(blob)})
    uploaded = p.backups.order_by("-pk").first()
    assert r.status_code == 302 and r["Location"] == f"/proxies/{p.pk}/backups/{uploaded.pk}/restore/"
    assert bytes(uploaded.data) == blob
    confirm = admin.get(r["Location"]).content.decode()
    assert "Nothing is restored yet" in confirm and "This will happen:" in confirm
    assert "Its 0 applications (none) are replaced" in confirm and 'name="passphrase"' in confirm
    assert not ProxyAction.objects.filter(proxy=p, kind="restore").exists()
    confirm = admin.post(r["Location"], {"passphrase": PASS + "x"}, follow=True).content.decode()
    assert "Restore failed, nothing changed: wrong passphrase" in confirm
    assert not ProxyAction.objects.filter(proxy=p, kind="restore").exists()

    admin.post(r["Location"], {"passphrase": PASS})
    assert "Restored the backup of" in page(admin, p)
    p = Proxy.objects.get(pk=p.pk)
    assert p.redirect_url == "https://example.com/before" and p.provisioning_key == saved["provisioning_key"]
    assert [a.name for a in p.applications.all()] == ["procurat"] and not p.enabled
    assert json.loads(p.active_revision.config_json)["services"]["web"]["redirect_url"] == "https://example.com/before"

    # the proxy takes its files through the channel, once
    proxy = proxy_client(key)
    header = proxy.get("/api/v1/proxy/config")["X-Pforte-Actions"]
    kind, _, pk = header.partition("/")
    assert kind == "restore"
    files = proxy.get(f"/api/v1/proxy/actions/{pk}/restore").json()
    assert files == {"proxy": "dmz", "files": {"certs/self-signed.pem": CERT, "certs/self-signed.key": KEY}}
    other_proxy, other_key = make_proxy("lan", network_mode="manual", network_interface="eth1",
                                        network_address="10.1.1.2/24", network_gateway="10.1.1.1", network_table=101)
    assert proxy_client(other_key).get(f"/api/v1/proxy/actions/{pk}/restore").status_code == 404  # isolation
    assert proxy_client("not-a-key").get(f"/api/v1/proxy/actions/{pk}/restore").status_code == 401
    wrong_kind = proxy.post(f"/api/v1/proxy/actions/{pk}/backup", {"files": {}}, content_type="application/json")
    assert wrong_kind.status_code == 404 and wrong_kind.json()["detail"] == "no such open backup request"
    assert proxy.post(f"/api/v1/proxy/actions/{pk}/done", {}, content_type="application/json").status_code == 200
    assert ProxyAction.objects.get(pk=pk).secret_enc == ""
    assert "X-Pforte-Actions" not in proxy.get("/api/v1/proxy/config")
    assert "<td>restore</td><td>done</td>" in page(admin, p)


def test_restore_of_another_proxys_backup_into_this_one_on_purpose(admin) -> None:  # type: ignore[no-untyped-def]
    from manager.proxies.models import Proxy

    a, key = make_proxy("alpha", redirect_url="https://example.com/alpha")
    blob = backup_through_proxy(admin, a, key)
    b, _ = make_proxy("beta", online=False, enabled=False, network_mode="manual", network_interface="eth2",
                      network_address="10.2.2.2/24", network_gateway="10.2.2.1", network_table=102)
    r = admin.post(f"/api/v1/proxies/{b.pk}/restore/", {"file": _upload(blob), "passphrase": PASS})
    assert r.status_code == 400 and "of proxy 'alpha', not 'beta'" in r.json()["detail"]
    # on purpose, but alpha uses network mode auto, which only one proxy may: a clear error, nothing changed
    r = admin.post(f"/api/v1/proxies/{b.pk}/restore/",
                   {"file": _upload(blob), "passphrase": PASS, "into_this_proxy": "true"})
    assert r.status_code == 400 and "network_mode: Only one proxy may use network mode auto" in r.json()["detail"]
    assert Proxy.objects.get(pk=b.pk).redirect_url == ""
    c, _ = make_proxy("gamma", online=False, enabled=False, network_mode="manual", network_interface="eth3",
                      network_address="10.3.3.2/24", network_gateway="10.3.3.1", network_table=103)
    blob_c = backup_with_settings(c, redirect_url="https://example.com/from-c")
    Proxy.objects.filter(pk=c.pk).update(name="gamma-old")
    d, _ = make_proxy("delta", online=False, enabled=False, network_mode="manual", network_interface="eth4",
                      network_address="10.4.4.2/24", network_gateway="10.4.4.1", network_table=104)
    r = admin.post(f"/api/v1/proxies/{d.pk}/restore/",
                   {"file": _upload(blob_c), "passphrase": PASS, "into_this_proxy": "true"})
    # gamma's settings include its interface eth3, which belongs to gamma-old: refused by the rules
    assert r.status_code == 400 and "eth3 already belongs to another proxy" in r.json()["detail"]
    Proxy.objects.filter(pk=c.pk).delete()
    r = admin.post(f"/api/v1/proxies/{d.pk}/restore/",
                   {"file": _upload(blob_c), "passphrase": PASS, "into_this_proxy": "true"})
    assert r.status_code == 200, r.content
    d = Proxy.objects.get(pk=d.pk)
    assert d.name == "delta" and d.redirect_url == "https://example.com/from-c" and d.network_interface == "eth3"


def test_upload_of_a_foreign_path_is_refused_and_the_request_fails(admin) -> None:  # type: ignore[no-untyped-def]
    from manager.proxies.models import ProxyAction

    p, key = make_proxy()
    admin.post(f"/proxies/{p.pk}/backups/", {"passphrase": PASS, "passphrase2": PASS})
    action = ProxyAction.objects.get(proxy=p)
    up = proxy_client(key).post(f"/api/v1/proxy/actions/{action.pk}/backup",
                                {"files": {"../agent.json": KEY}}, content_type="application/json")
    assert up.status_code == 400 and "only certs/<file>" in up.json()["detail"]
    action.refresh_from_db()
    assert action.state == "failed" and action.secret_enc == "" and not p.backups.exists()
    assert "upload refused" in page(admin, p)


def test_short_or_differing_passphrase_is_refused_in_the_form(admin) -> None:  # type: ignore[no-untyped-def]
    p, _ = make_proxy()
    admin.post(f"/proxies/{p.pk}/backups/", {"passphrase": "short", "passphrase2": "short"})
    assert "Backup not requested" in page(admin, p)
    admin.post(f"/proxies/{p.pk}/backups/", {"passphrase": PASS, "passphrase2": PASS + "!"})
    assert "The passphrases differ" in page(admin, p)
    assert not p.actions.exists()


def backup_with_settings(p, **changes: Any) -> bytes:  # type: ignore[no-untyped-def]
    """A manager backup of `p` with some settings changed, made with the manager's own functions."""
    from manager.proxies.backups import SETTINGS_MEMBER, settings_of

    data = settings_of(p)
    data["fields"].update(changes)
    files = {SETTINGS_MEMBER: json.dumps(data).encode(), "certs/self-signed.pem": b"c"}
    return seal(Archive(p.name, 1.0, files), sealing_key(PASS))


def _upload(data: bytes):  # type: ignore[no-untyped-def]
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("backup.pfbk", data, content_type="application/octet-stream")


def test_an_unanswered_backup_request_expires_and_its_key_is_wiped(admin) -> None:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from django.utils import timezone

    from manager.proxies.models import ProxyAction

    p, key = make_proxy()
    admin.post(f"/proxies/{p.pk}/backups/", {"passphrase": PASS, "passphrase2": PASS})
    action = ProxyAction.objects.get(proxy=p)
    assert action.secret_enc and PASS not in action.secret  # only the derived key is kept
    assert "backup/" in proxy_client(key).get("/api/v1/proxy/config")["X-Pforte-Actions"]
    ProxyAction.objects.filter(pk=action.pk).update(created=timezone.now() - timedelta(minutes=6))
    assert "X-Pforte-Actions" not in proxy_client(key).get("/api/v1/proxy/config")
    assert "the proxy did not answer within 5 minutes" in page(admin, p)
    action.refresh_from_db()
    assert action.state == "failed" and action.secret_enc == ""


def test_openapi_schema_lists_the_backup_api(admin) -> None:  # type: ignore[no-untyped-def]
    schema = admin.get("/api/schema/").content.decode()
    for path in ("/api/v1/proxies/{id}/backups/:", "/api/v1/proxies/{id}/backups/{backup}/:",
                 "/api/v1/proxies/{id}/restore/:", "/api/v1/proxy/actions/{id}/backup:",
                 "/api/v1/proxy/actions/{id}/restore:", "/api/v1/proxy/actions/{id}/done:"):
        assert path in schema


def test_an_action_made_in_another_process_ends_a_waiting_long_poll(manager_url: str) -> None:
    """The backup request is made here; the served manager learns of it through its database watcher."""
    import threading
    import time

    import httpx

    from manager.proxies.backups import request_backup

    p, key = make_proxy()
    etag = f'"{p.active_revision.number}"'
    answers: list[httpx.Response] = []

    def poll() -> None:
        answers.append(httpx.get(f"{manager_url}/api/v1/proxy/config", params={"wait": "30"}, timeout=40,
                                 headers={"Authorization": f"Bearer {key}", "If-None-Match": etag}))

    t = threading.Thread(target=poll)
    t0 = time.monotonic()
    t.start()
    time.sleep(0.5)  # let the poll start waiting
    action = request_backup(p, PASS)
    t.join(40)
    (r,) = answers
    assert r.status_code == 304 and r.headers["x-pforte-actions"] == f"backup/{action.pk}"
    assert time.monotonic() - t0 < 25  # ended by the action, not by the 30 s wait
