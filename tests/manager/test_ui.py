"""The UI's shared pages: confirmation before destructive actions, messages, lists (sort, filter,
search, pages), labels that say what is real, the change log, static files and error pages."""

from __future__ import annotations

import html
import re

import pytest

pytestmark = pytest.mark.usefixtures("db")


def _proxy(name: str = "edge", **kw):  # type: ignore[no-untyped-def]
    from manager.proxies.models import Proxy

    p = Proxy(name=name, fqdn=f"{name}.example.com", **kw)
    p.full_clean()
    p.save()
    return p


def _text(r) -> str:  # type: ignore[no-untyped-def]
    return html.unescape(r.content.decode())


@pytest.mark.parametrize("kind", ["proxy", "instance", "application", "device", "registration", "backup", "dns",
                                  "user"])
def test_delete_asks_first_then_deletes_and_says_so(admin_client, kind) -> None:  # type: ignore[no-untyped-def]
    from django.contrib.auth import get_user_model

    from manager.proxies.models import Application, Backup, Device, DnsRecord, Instance, Registration

    p = _proxy()
    inst = Instance.objects.create(name="acme")
    if kind == "proxy":
        obj, url, said = p, f"/proxies/{p.pk}/delete/", "Proxy edge deleted."
    elif kind == "instance":
        obj, url, said = inst, f"/instances/{inst.pk}/delete/", "Instance acme deleted."
    elif kind == "application":
        obj = Application.objects.create(proxy=p, name="api", port=9443, upstream="https://b.local/")
        url, said = f"/proxies/{p.pk}/applications/{obj.pk}/delete/", "Application api deleted."
    elif kind == "device":
        obj = Device.objects.create(instance=inst, mac="08C25A4F0321")
        url, said = f"/instances/{inst.pk}/devices/{obj.pk}/delete/", "Phone 08C25A4F0321 deleted."
    elif kind == "registration":
        obj, _ = Registration.create_for(p)
        url, said = f"/proxies/{p.pk}/registrations/{obj.pk}/delete/", f"Registration #{obj.pk} revoked."
    elif kind == "backup":
        obj = Backup.objects.create(proxy=p, size=3, data=b"abc")
        url, said = f"/proxies/{p.pk}/backups/{obj.pk}/delete/", "deleted."
    elif kind == "dns":
        obj = DnsRecord(proxy=p, name="e.dyn.example.com", zone="dyn.example.com", provider="cloudflare")
        obj.credentials = "a-cloudflare-token-of-some-length"
        obj.save()
        url, said = f"/dns/{obj.pk}/delete/", "DNS record e.dyn.example.com removed"
    else:
        get_user_model().objects.filter(username="leaving").delete()
        obj = get_user_model().objects.create_user("leaving", password="a-long-leaving-password")
        url, said = f"/users/{obj.pk}/delete/", "User leaving deleted."
    model = type(obj)
    page = _text(admin_client.get(url))
    assert 'id="confirm"' in page and "This will happen:" in page
    assert model.objects.filter(pk=obj.pk).exists()  # looking changes nothing
    r = admin_client.post(url, {"confirm": "1"}, follow=True)
    assert not model.objects.filter(pk=obj.pk).exists()
    assert said in _text(r)


def test_an_admin_cannot_delete_themselves(admin_client) -> None:  # type: ignore[no-untyped-def]
    from django.contrib.auth import get_user_model

    me = get_user_model().objects.get(username="dev-admin")
    r = admin_client.post(f"/users/{me.pk}/delete/", {"confirm": "1"})
    assert r.status_code == 200 and "You cannot delete your own account" in _text(r)
    assert get_user_model().objects.filter(pk=me.pk).exists()


def test_restoring_a_stored_backup_asks_and_refuses_while_the_proxy_is_on(admin_client) -> None:  # type: ignore[no-untyped-def]
    from manager.proxies.models import Backup

    p = _proxy()
    b = Backup.objects.create(proxy=p, size=3, data=b"abc")
    page = _text(admin_client.get(f"/proxies/{p.pk}/backups/{b.pk}/restore/"))
    assert "applications (none) are replaced" in page and "Not possible right now" in page
    r = admin_client.post(f"/proxies/{p.pk}/backups/{b.pk}/restore/", {"passphrase": "whatever-passphrase"})
    assert r.status_code == 200 and "Restore failed, nothing changed" in _text(r)


def test_user_create_edit_role(admin_client) -> None:  # type: ignore[no-untyped-def]
    from django.contrib.auth import get_user_model

    from manager.proxies.roles import role_of

    get_user_model().objects.filter(username="olga").delete()
    r = admin_client.post("/users/new/", {"username": "olga", "role": "operator", "password": "short"})
    assert "This password is too short" in _text(r)
    r = admin_client.post("/users/new/", {"username": "olga", "role": "operator", "is_active": "on",
                                          "password": "a-long-olga-password"}, follow=True)
    u = get_user_model().objects.get(username="olga")
    assert role_of(u) == "operator" and u.check_password("a-long-olga-password")
    assert "User olga saved with role operator." in _text(r)
    admin_client.post(f"/users/{u.pk}/edit/", {"username": "olga", "role": "viewer", "is_active": "on"})
    u.refresh_from_db()
    assert role_of(u) == "viewer" and u.check_password("a-long-olga-password")  # blank: password kept


def test_lists_sort_filter_search_and_page(admin_client) -> None:  # type: ignore[no-untyped-def]
    from manager.proxies.models import Device, Instance

    inst = Instance.objects.create(name="acme")
    Device.objects.bulk_create([Device(instance=inst, mac=f"08C25A4F{i:04X}", label=f"desk {i}") for i in range(120)])
    page = _text(admin_client.get("/devices/"))
    assert "120 in all" in page and "page 1 of 3" in page and page.count("08C25A4F") == 50
    assert "08C25A4F0000" in page and 'rel="next"' in page
    page = _text(admin_client.get("/devices/?sort=-mac"))
    assert "08C25A4F0077" in page and "08C25A4F0000" not in page  # 0x77 = 119, the last
    page = _text(admin_client.get("/devices/?q=desk 11"))
    assert "11 in all" in page  # desk 11, desk 110..119
    page = _text(admin_client.get("/devices/?instance=acme&q=desk 7&page=99"))
    assert "desk 7" in page  # a page beyond the end shows the last
    page = _text(admin_client.get("/devices/?instance=nosuch&sort=nosuch&q=" + "x" * 500))
    assert "Nothing matches." in page  # an unknown filter value is ignored, the search is cut, nothing breaks
    _proxy("alpha")
    _proxy("beta", enabled=False, network_mode="manual", network_interface="eth3", network_address="10.3.3.2/24",
           network_gateway="10.3.3.1", network_table=3)
    page = _text(admin_client.get("/?enabled=False"))
    assert "beta" in page and "alpha" not in page
    page = _text(admin_client.get("/?sort=-name"))
    assert page.index("beta") < page.index("alpha")
    assert 'class="desc"' in page


def test_labels_say_what_is_real(admin_client) -> None:  # type: ignore[no-untyped-def]
    from manager.proxies.models import Instance

    Instance.objects.create(name="nosip", web="http://10.0.0.5/")
    Instance.objects.create(name="pbx", sip_host="10.0.0.6", sip_transport="tcp", sip_port=5070)
    page = _text(admin_client.get("/instances/"))
    assert "TCP to 10.0.0.6:5070" in page and "None" not in page and "udp::" not in page
    p = _proxy(sip_mode="udp", sip_udp_port=5080)
    assert "UDP and TCP 5080" in _text(admin_client.get("/"))
    assert '<td id="sip-label">UDP and TCP 5080</td>' in _text(admin_client.get(f"/proxies/{p.pk}/"))


def test_the_change_log_records_who_changed_what_with_the_diff(admin_client) -> None:  # type: ignore[no-untyped-def]
    from manager.proxies.forms import ProxyForm
    from manager.proxies.models import ObjectChange
    from proxyd.tls import make_self_signed
    from tests.manager.test_forms_hostile import _baseline

    p = _proxy()
    p.tls_mode = "uploaded"
    p.certificate_pem, p.key_pem = make_self_signed("edge.example.com", [])
    p.save()
    data = {**_baseline(ProxyForm(instance=p)), "fqdn": "new.example.com"}
    assert admin_client.post(f"/proxies/{p.pk}/edit/", data).status_code == 302
    change = ObjectChange.objects.filter(object_type="proxies.proxy", object_id=p.pk).first()
    assert change.username == "dev-admin" and change.action == "update"
    assert ("fqdn", "edge.example.com", "new.example.com") in change.diff()
    assert [k for k, _, _ in change.diff()] == ["fqdn"]
    secret_change = ObjectChange.objects.filter(object_type="proxies.proxy", object_id=p.pk)[1]
    assert ("key_pem_enc", "(empty)", "(changed)") in secret_change.diff() and secret_change.username == ""
    assert "PRIVATE KEY" not in str(list(ObjectChange.objects.values_list("before", "after")))
    detail = _text(admin_client.get(f"/changes/{change.pk}/"))
    assert "new.example.com" in detail and "dev-admin" in detail
    assert "fqdn" in _text(admin_client.get(f"/proxies/{p.pk}/"))  # per object, on its page
    listing = _text(admin_client.get("/changes/?type=proxies.proxy&action=update"))
    assert f"/changes/{change.pk}/" in listing
    admin_client.post(f"/proxies/{p.pk}/delete/", {"confirm": "1"})
    assert ObjectChange.objects.filter(object_type="proxies.proxy", object_id=p.pk, action="delete",
                                       username="dev-admin").exists()


def test_static_files_favicon_and_error_pages_in_pforte_look(admin_client) -> None:  # type: ignore[no-untyped-def]
    def fetch(url: str) -> tuple[int, bytes]:
        r = admin_client.get(url)
        try:
            return r.status_code, b"".join(r.streaming_content) if r.streaming else r.content
        finally:
            r.close()

    status, css = fetch("/static/pforte/pforte.css")
    assert status == 200 and b"#1f3a5f" in css
    assert fetch("/static/pforte/favicon.svg")[0] == 200
    assert fetch("/static/admin/css/base.css")[0] == 200  # the Django admin is styled
    page = admin_client.get("/no/such/page/")
    assert page.status_code == 404 and b"pforte.css" in page.content and b"Not found" in page.content
    icon = re.search(r'rel="icon" href="([^"]+)"', _text(admin_client.get("/"))).group(1)
    assert icon == "/static/pforte/favicon.svg"


def test_a_viewer_gets_403_in_pforte_look() -> None:
    from tests.manager.test_permissions import client_for

    r = client_for("viewer").get("/proxies/new/")
    assert r.status_code == 403 and b"pforte.css" in r.content and b"proxies.add_proxy" in r.content
