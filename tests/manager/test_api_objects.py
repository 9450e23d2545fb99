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
    assert r.status_code == 401 and r["WWW-Authenticate"].startswith("Basic")
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
    untyped = [(path, method, code) for path, ops in paths.items() if path.startswith("/api/v1/objects/")
               for method, op in ops.items() for code, resp in op.get("responses", {}).items()
               if code.startswith("2") and code != "204" and "content" not in resp]
    assert not untyped, untyped


def test_swagger_ui_and_redoc_are_served_from_the_manager(admin_client) -> None:  # type: ignore[no-untyped-def]
    for url in ("/api/docs/", "/api/docs/redoc/"):
        page = admin_client.get(url).content.decode()
        assert "/static/drf_spectacular_sidecar/" in page and "cdn" not in page.lower(), url
    js = admin_client.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    try:
        assert js.status_code == 200
    finally:
        js.close()
