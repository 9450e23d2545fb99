"""Users' API tokens: made in the UI and the API, never above the maker's role, shown once, stored
hashed, narrowed at once when the owner is demoted, revoked by delete, last use recorded."""

from __future__ import annotations

import re

import pytest
from django.test import Client

pytestmark = pytest.mark.usefixtures("db")
API = "/api/v1/objects"


def _user(role: str):  # type: ignore[no-untyped-def]
    from tests.manager.test_permissions import client_for

    c = client_for(role)
    from django.contrib.auth import get_user_model

    return c, get_user_model().objects.get(username=f"walk-{role}")


def _bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def test_ui_makes_a_token_shown_once_and_revokes_it() -> None:
    from manager.proxies.models import ApiToken, ObjectChange

    c, user = _user("operator")
    form = c.get("/tokens/new/").content.decode()
    assert 'value="operator"' in form and 'value="viewer"' in form and 'value="admin"' not in form
    r = c.post("/tokens/new/", {"name": "sync", "role": "admin"})  # above the operator's own role
    assert r.status_code == 200 and "Select a valid choice" in r.content.decode()
    assert not ApiToken.objects.filter(user=user).exists()
    r = c.post("/tokens/new/", {"name": "sync", "role": "viewer", "days": "30"})
    html = r.content.decode()
    (value,) = re.findall(r"pft_[A-Za-z0-9_-]{43}", html)
    assert "shown only this once" in html
    t = ApiToken.objects.get(user=user)
    assert t.key_hash == ApiToken.hash(value) and value not in (t.key_hash, t.prefix) and value.startswith(t.prefix)
    assert t.expires is not None and t.role == "viewer"
    # never again: list, detail, the change log
    for url in ("/tokens/", f"/tokens/{t.pk}/", "/changes/",
                f"/changes/{ObjectChange.objects.filter(object_type='proxies.apitoken').first().pk}/"):
        page = c.get(url).content.decode()
        assert value not in page and value[len("pft_"):] not in page, url
    assert f"{t.prefix}…" in c.get("/tokens/").content.decode()
    # it works, as a viewer; its use is recorded
    api = Client()
    assert api.get(f"{API}/proxies/", **_bearer(value)).status_code == 200
    assert api.post(f"{API}/instances/", {"name": "x"}, content_type="application/json",
                    **_bearer(value)).status_code == 403
    assert ApiToken.objects.get(pk=t.pk).last_used is not None
    # another user's token is not found; its owner revokes it behind a confirmation page
    other, _ = _user("viewer")
    assert other.get(f"/tokens/{t.pk}/").status_code == 404
    assert other.post(f"/tokens/{t.pk}/delete/").status_code == 404
    assert "Revoke API token sync?" in c.get(f"/tokens/{t.pk}/delete/").content.decode()
    r = c.post(f"/tokens/{t.pk}/delete/", follow=True)
    assert "revoked" in r.content.decode() and not ApiToken.objects.filter(pk=t.pk).exists()
    r = api.get(f"{API}/proxies/", **_bearer(value))
    assert r.status_code == 401 and "invalid or revoked" in r.content.decode()
    assert r["WWW-Authenticate"].startswith("Bearer")


def test_api_makes_tokens_no_stronger_than_user_or_token_and_demotion_narrows_at_once() -> None:
    from manager.proxies import roles
    from manager.proxies.models import ApiToken

    admin_c, admin = _user("admin")
    api = Client()
    r = admin_c.post(f"{API}/tokens/", {"name": "ops", "role": "operator"}, content_type="application/json")
    assert r.status_code == 201, r.content
    ops = r.json()["key"]
    assert r.json()["prefix"] == ops[:12] and r.json()["user"] == "walk-admin"
    listed = "".join(admin_c.get(url).content.decode() for url in (f"{API}/tokens/", f"{API}/tokens/{r.json()['id']}/"))
    assert ops not in listed and '"key"' not in listed
    # a token makes tokens only up to its own role
    r = api.post(f"{API}/tokens/", {"name": "up", "role": "admin"}, content_type="application/json", **_bearer(ops))
    assert r.status_code == 400 and "At most your own role (operator)" in r.content.decode()
    r = api.post(f"{API}/tokens/", {"name": "down", "role": "viewer"}, content_type="application/json",
                 **_bearer(ops))
    assert r.status_code == 201
    # an operator's token changes configuration; demoting the owner narrows it on the next request
    r = api.post(f"{API}/instances/", {"name": "tok"}, content_type="application/json", **_bearer(ops))
    assert r.status_code == 201, r.content
    roles.assign(admin, "viewer")
    try:
        r = api.post(f"{API}/instances/", {"name": "tok2"}, content_type="application/json", **_bearer(ops))
        assert r.status_code == 403
        assert api.get(f"{API}/instances/", **_bearer(ops)).status_code == 200
        admin.is_active = False
        admin.save()
        r = api.get(f"{API}/instances/", **_bearer(ops))
        assert r.status_code == 401 and "deactivated" in r.content.decode()
    finally:
        admin.is_active = True
        admin.save()
        roles.assign(admin, "admin")
    # a user without a role makes no token at all
    from django.contrib.auth import get_user_model

    nobody = get_user_model().objects.filter(username="tok-nobody").first() or \
        get_user_model().objects.create_user("tok-nobody", password="a-long-tok-password")
    c = Client()
    c.force_login(nobody)
    assert c.get("/tokens/").status_code == 403
    assert ApiToken.objects.filter(name="down").count() == 1
