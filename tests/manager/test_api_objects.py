"""The REST API's object endpoints (/api/v1/objects/): CRUD with the model's own rules, filters,
search, ordering and pages, 401 with WWW-Authenticate / 403, no secrets, the change log, the schema."""

from __future__ import annotations

import base64

import pytest
from django.test import Client

pytestmark = pytest.mark.usefixtures("db")
API = "/api/v1/objects"


def _basic(role: str) -> dict[str, str]:
    from tests.manager.test_permissions import client_for

    client_for(role)  # the user exists with this role
    from django.contrib.auth import get_user_model

    u = get_user_model().objects.get(username=f"walk-{role}")
    u.set_password("a-long-walk-password")
    u.save()
    token = base64.b64encode(f"walk-{role}:a-long-walk-password".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {token}"}


def test_crud_rules_filters_pages_and_change_log() -> None:
    from manager.proxies.models import Instance, ObjectChange

    c, auth = Client(), _basic("operator")
    r = c.post(f"{API}/instances/", {"name": "acme", "sip_host": "10.0.0.6"}, content_type="application/json", **auth)
    assert r.status_code == 201, r.content
    iid = r.json()["id"]
    r = c.post(f"{API}/devices/", {"instance": iid, "mac": "08:c2:5a:4f:03:21"}, content_type="application/json",
               **auth)
    assert r.status_code == 201 and r.json()["mac"] == "08C25A4F0321"  # normalised by the model's clean()
    dup = c.post(f"{API}/devices/", {"instance": iid, "mac": "08C25A4F0321"}, content_type="application/json", **auth)
    assert dup.status_code == 400 and "unique" in dup.content.decode()
    bad = c.post(f"{API}/devices/", {"instance": iid, "mac": "nope"}, content_type="application/json", **auth)
    assert bad.status_code == 400 and "mac" in bad.json()
    for i in range(25):
        c.post(f"{API}/devices/", {"instance": iid, "mac": f"08C25A4F{i:04X}", "label": f"desk {i}"},
               content_type="application/json", **auth)
    page = c.get(f"{API}/devices/?instance={iid}&limit=10&offset=10&ordering=-mac", **auth).json()
    assert page["count"] == 26 and len(page["results"]) == 10 and page["next"] and page["previous"]
    assert c.get(f"{API}/devices/?q=08C25A4F001", **auth).json()["count"] == 9  # 0x10..0x18
    r = c.patch(f"{API}/instances/{iid}/", {"sip_port": 5070}, content_type="application/json", **auth)
    assert r.status_code == 200 and Instance.objects.get(pk=iid).sip_port == 5070
    change = ObjectChange.objects.filter(object_type="proxies.instance", object_id=iid, action="update").first()
    assert change.username == "walk-operator" and ("sip_port", 5060, 5070) in change.diff()
    assert c.delete(f"{API}/instances/{iid}/", **auth).status_code == 204
    assert not Instance.objects.filter(pk=iid).exists()


def test_401_with_www_authenticate_403_and_no_secrets() -> None:
    from manager.proxies.models import Proxy

    p = Proxy(name="edge", fqdn="edge.example.com")
    p.full_clean()
    p.save()
    c = Client()
    r = c.get(f"{API}/proxies/")
    assert r.status_code == 401
    assert r["WWW-Authenticate"] == 'Bearer realm="pforte manager", Basic realm="pforte manager"'
    viewer = _basic("viewer")
    r = c.get(f"{API}/proxies/{p.pk}/", **viewer)
    assert r.status_code == 200 and r.json()["name"] == "edge"
    assert p.provisioning_key not in r.content.decode() and "provisioning_key_enc" not in r.json()
    assert c.post(f"{API}/proxies/", {"name": "x", "fqdn": "x.example.com"}, content_type="application/json",
                  **viewer).status_code == 403
    assert c.get(f"{API}/users/", **viewer).status_code == 403
    bad = c.patch(f"{API}/proxies/{p.pk}/", {"web_port": 5061, "sip_mode": "tls"}, content_type="application/json",
                  **_basic("operator"))
    assert bad.status_code == 400  # the config check of the form: the web port collides with SIP TLS


def test_the_schema_names_every_api_endpoint_with_typed_responses(admin_client) -> None:  # type: ignore[no-untyped-def]
    import re

    import yaml

    from tests.manager.test_permissions import walk

    schema = yaml.safe_load(admin_client.get("/api/schema/").content)
    paths = schema["paths"]
    shape = {re.sub(r"\{[^}]+\}", "{}", path) for path in paths}
    missing = []
    for p in walk():
        if not p.route.startswith("api/v1/"):
            continue
        path = "/" + re.sub(r"<[^>]+>", "{}", p.route)
        if path not in shape:
            missing.append(path)
    assert not missing, f"not in the schema: {missing}"
    components = schema["components"]["schemas"]

    def typed(media: dict) -> bool:
        """A named component (or a list or page of them), or a file's bytes."""
        node = media.get("schema", {})
        node = node.get("items", node)
        if node.get("type") == "string" and node.get("format") == "binary":
            return True
        ref = node.get("$ref", "")
        return ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in components

    untyped, no_errors = [], []
    for path, ops in paths.items():
        for method, op in ops.items():
            if method == "parameters":
                continue
            for code, resp in op.get("responses", {}).items():
                content = resp.get("content", {})
                if code in ("204", "304") and not content:
                    continue
                if not content or not all(typed(media) for media in content.values()):
                    untyped.append((path, method, code))
            if (op.get("security") not in (None, [{}]) or path.startswith("/api/v1/proxy/")) and \
                    not {"401", "403"} <= set(op["responses"]):
                no_errors.append((path, method))
    assert not untyped, f"untyped answers: {untyped}"
    assert not no_errors, f"operations that take credentials without their 401/403: {no_errors}"
    schemes = schema["components"]["securitySchemes"]
    assert schemes["apiToken"]["scheme"] == "bearer" and "agentKey" in schemes and "basicAuth" in schemes
    assert {"apiToken": []} in paths["/api/v1/objects/proxies/"]["get"]["security"]


def test_swagger_ui_and_redoc_are_served_from_the_manager(admin_client) -> None:  # type: ignore[no-untyped-def]
    for url in ("/api/docs/", "/api/docs/redoc/"):
        page = admin_client.get(url).content.decode()
        assert "/static/drf_spectacular_sidecar/" in page and "cdn" not in page.lower(), url
    js = admin_client.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    try:
        assert js.status_code == 200
    finally:
        js.close()


def test_admin_sets_dns_credentials_passwords_and_roles_write_only() -> None:
    """The API sets the secrets the UI's forms set, for the same role (admins), and never returns them."""
    from django.contrib.auth import get_user_model

    from manager.proxies.models import DnsRecord, Proxy
    from manager.proxies.roles import role_of

    p = Proxy(name="dnsapi", fqdn="dnsapi.example.com")
    p.full_clean()
    p.save()
    c, admin, operator = Client(), _basic("admin"), _basic("operator")
    new = {"proxy": p.pk, "name": "dnsapi.dyn.example.com", "zone": "dyn.example.com", "provider": "cloudflare",
           "credentials": "api-cf-token-0123456789"}
    r = c.post(f"{API}/dns-records/", new, content_type="application/json", **operator)
    assert r.status_code == 403 and "change_dns_account" in r.content.decode()
    r = c.post(f"{API}/dns-records/", {**new, "credentials": ""}, content_type="application/json", **admin)
    assert r.status_code == 400 and "credentials" in r.json()
    r = c.post(f"{API}/dns-records/", new, content_type="application/json", **admin)
    assert r.status_code == 201, r.content
    rid = r.json()["id"]
    assert "api-cf-token" not in r.content.decode() and "credentials" not in r.json()
    assert DnsRecord.objects.get(pk=rid).credentials == "api-cf-token-0123456789"
    # an operator may rename the record, not re-point its account (where the token would be sent)
    assert c.patch(f"{API}/dns-records/{rid}/", {"name": "other.dyn.example.com"}, content_type="application/json",
                   **operator).status_code == 200
    for change in ({"api_url": "https://evil.example.net/"}, {"credentials": "x" * 20}, {"provider": "rfc2136"}):
        r = c.patch(f"{API}/dns-records/{rid}/", change, content_type="application/json", **operator)
        assert r.status_code == 403, change
    r = c.patch(f"{API}/dns-records/{rid}/", {"credentials": "new-cf-token-9876543210"},
                content_type="application/json", **admin)
    assert r.status_code == 200 and "new-cf-token" not in r.content.decode()
    assert DnsRecord.objects.get(pk=rid).credentials == "new-cf-token-9876543210"
    r = c.patch(f"{API}/dns-records/{rid}/", {"provider": "rfc2136", "server": "192.0.2.53", "key_name": "k",
                                              "credentials": "not base64!"}, content_type="application/json", **admin)
    assert r.status_code == 400 and "base64" in r.content.decode()
    for url in (f"{API}/dns-records/", f"{API}/dns-records/{rid}/"):
        assert "new-cf-token" not in c.get(url, **admin).content.decode()

    # users: password and role write-only / read-write, admins only
    user = {"username": "api-made", "password": "a-long-api-password", "role": "operator"}
    get_user_model().objects.filter(username="api-made").delete()
    assert c.post(f"{API}/users/", user, content_type="application/json", **operator).status_code == 403
    r = c.post(f"{API}/users/", {**user, "password": "short"}, content_type="application/json", **admin)
    assert r.status_code == 400 and "password" in r.json()
    r = c.post(f"{API}/users/", user, content_type="application/json", **admin)
    assert r.status_code == 201, r.content
    uid = r.json()["id"]
    assert r.json()["role"] == "operator" and "password" not in r.json() and "a-long-api" not in r.content.decode()
    made = get_user_model().objects.get(pk=uid)
    assert role_of(made) == "operator" and made.check_password("a-long-api-password")
    r = c.patch(f"{API}/users/{uid}/", {"role": "viewer", "password": "another-long-password"},
                content_type="application/json", **admin)
    assert r.status_code == 200 and r.json()["role"] == "viewer"
    assert get_user_model().objects.get(pk=uid).check_password("another-long-password")
    assert "another-long" not in c.get(f"{API}/users/{uid}/", **admin).content.decode()
    me = get_user_model().objects.get(username="walk-admin").pk
    r = c.patch(f"{API}/users/{me}/", {"role": "viewer"}, content_type="application/json", **admin)
    assert r.status_code == 400 and "own role" in r.content.decode()
    assert c.delete(f"{API}/users/{me}/", **admin).status_code == 403


def test_api_keeps_the_certificate_and_its_key_to_admins() -> None:
    from manager.proxies.models import Proxy
    from proxyd.tls import make_self_signed

    p = Proxy(name="certapi", fqdn="certapi.example.com")
    p.full_clean()
    p.save()
    cert, key = make_self_signed("certapi.example.com", [])
    c = Client()
    pair = {"certificate_pem": cert, "key_pem": key}
    r = c.patch(f"{API}/proxies/{p.pk}/", pair, content_type="application/json", **_basic("operator"))
    assert r.status_code == 403 and "change_proxy_keys" in r.content.decode()
    r = c.patch(f"{API}/proxies/{p.pk}/", pair, content_type="application/json", **_basic("admin"))
    assert r.status_code == 200, r.content
    assert "PRIVATE KEY" not in r.content.decode() and Proxy.objects.get(pk=p.pk).key_pem == key
    assert "PRIVATE KEY" not in c.get(f"{API}/proxies/{p.pk}/", **_basic("admin")).content.decode()
