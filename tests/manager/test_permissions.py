"""Roles hold: every URL pattern of the manager is walked with an anonymous client, a viewer, an
operator and an admin, with GET and POST, against a database seeded with known secrets.

REQUIRED below is the specification: what each pattern needs. The walk checks the answers against
it (anonymous: login redirect or 401; without the permission: 403; with it: not refused) and
searches every answer for the secrets the role must not see. A pattern missing from REQUIRED fails
the test, so a new URL is classified before it can be merged. Each request runs inside a
transaction that is rolled back, so an allowed destructive POST leaves the seed as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

pytestmark = pytest.mark.usefixtures("db")

AGENT_KEY, PUBLIC, ADMIN_SITE = "agent key", "public", "admin site"

REQUIRED: dict[str, Any] = {
    "proxy-list": "proxies.view_proxy",
    "proxy-new": "proxies.add_proxy",
    "proxy-detail": "proxies.view_proxy",
    "proxy-edit": "proxies.change_proxy",
    "proxy-delete": "proxies.delete_proxy",
    "proxy-status": "proxies.view_proxy",
    "provisioning-key-rotate": "proxies.change_proxy_keys",
    "registration-create": {"POST": "proxies.add_registration"},
    "registration-list": "proxies.view_registration",
    "registration-detail": "proxies.view_registration",
    "registration-delete": "proxies.delete_registration",
    "reregistration": {"POST": "proxies.allow_reregistration"},
    "application-list": "proxies.view_application",
    "application-new": "proxies.add_application",
    "application-detail": "proxies.view_application",
    "application-edit": "proxies.change_application",
    "application-delete": "proxies.delete_application",
    "backup-create": {"POST": "proxies.add_backup"},
    "backup-list": "proxies.view_backup",
    "backup-detail": "proxies.view_backup",
    "backup-download": "proxies.view_backup",
    "backup-restore-stored": "proxies.restore_backup",
    "backup-delete": "proxies.delete_backup",
    "backup-restore": {"POST": "proxies.restore_backup"},
    "dns-edit": {"POST": "proxies.change_dnsrecord"},
    "dns-list": "proxies.view_dnsrecord",
    "dns-new": "proxies.change_dns_account",
    "dns-detail": "proxies.view_dnsrecord",
    "dns-edit-record": "proxies.change_dnsrecord",
    "dns-delete": "proxies.delete_dnsrecord",
    "instance-list": "proxies.view_instance",
    "instance-new": "proxies.add_instance",
    "instance-detail": "proxies.view_instance",
    "instance-edit": "proxies.change_instance",
    "instance-delete": "proxies.delete_instance",
    "instance-devices": {"GET": "proxies.view_device", "POST": "proxies.add_device"},
    "instance-devices-csv": "proxies.view_provisioning_url",
    "device-list": "proxies.view_device",
    "device-detail": "proxies.view_device",
    "device-edit": "proxies.change_device",
    "device-delete": "proxies.delete_device",
    "user-list": "auth.view_user",
    "user-new": "auth.add_user",
    "user-detail": "auth.view_user",
    "user-edit": "auth.change_user",
    "user-delete": "auth.delete_user",
    "token-list": "proxies.view_apitoken",
    "token-new": "proxies.add_apitoken",
    "token-detail": "proxies.view_apitoken",
    "token-delete": "proxies.delete_apitoken",
    "change-list": "proxies.view_objectchange",
    "change-detail": "proxies.view_objectchange",
    "api-register": AGENT_KEY,
    "api-config": AGENT_KEY,
    "api-heartbeat": AGENT_KEY,
    "api-goodbye": AGENT_KEY,
    "api-acme-dns": AGENT_KEY,
    "api-action-backup": AGENT_KEY,
    "api-action-restore": AGENT_KEY,
    "api-action-done": AGENT_KEY,
    "api-backups": {"GET": "proxies.view_backup", "POST": "proxies.add_backup"},
    "api-backup-download": {"GET": "proxies.view_backup"},
    "api-restore": {"POST": "proxies.restore_backup"},
    "api-schema": PUBLIC,
    "api-docs": PUBLIC,
    "api-redoc": PUBLIC,
    **{f"api-{name}-{kind}": {m: f"{app}.{verb}_{model}" for m, verb in
                              (("GET", "view"), ("POST", "add"), ("PUT", "change"), ("PATCH", "change"),
                               ("DELETE", "delete"))}
       for name, app, model in (("proxies", "proxies", "proxy"), ("instances", "proxies", "instance"),
                                ("applications", "proxies", "application"), ("devices", "proxies", "device"),
                                ("registrations", "proxies", "registration"), ("backups", "proxies", "backup"),
                                ("dns-records", "proxies", "dnsrecord"), ("users", "auth", "user"),
                                ("tokens", "proxies", "apitoken"))
       for kind in ("list", "detail")},
    "login": PUBLIC,
    "logout": PUBLIC,
    "admin:login": PUBLIC,
    "admin:logout": PUBLIC,
    # health for load balancers and systemd: no data; metrics: counts only, loopback or token
    # (manager/observe.py; checked in tests/manager/test_observe.py)
    "healthz": PUBLIC,
    "readyz": PUBLIC,
    "metrics": PUBLIC,
}
# Every other pattern of the admin site is the admin site's: admins only (manager/proxies/admin.py).
ADMIN_NAMESPACE = "admin"

PEM_MARKER = "PRIVATE KEY"
DNS_TOKEN = "walk-dns-token-0123456789abcdef"
API_TOKEN_ROLE = "viewer"  # the seed's API token: of the admin, scoped to viewer
BACKUP_MARKER = b"walk-backup-archive-bytes"


@dataclass
class Seed:
    ids: dict[str, int]
    secrets: dict[str, str]  # name -> text no role below admin may see
    provisioning_url: str  # operators may see it, viewers not


@pytest.fixture
def seed() -> Seed:
    from manager.proxies.models import (
        Application,
        Backup,
        Device,
        DnsRecord,
        Heartbeat,
        Instance,
        Proxy,
        ProxyAction,
        Registration,
    )
    from proxyd.tls import make_self_signed

    inst = Instance.objects.create(name="walk", web="http://10.0.0.5:8080")
    cert, key = make_self_signed("walk.example.com", [])
    p = Proxy(name="walk", fqdn="walk.example.com", tls_mode="uploaded", certificate_pem=cert)
    p.key_pem = key
    p.full_clean()
    p.save()
    app = Application.objects.create(proxy=p, name="app", port=8443, upstream="https://10.0.0.5:8443/api/")
    device = Device.objects.create(instance=inst, mac="08C25A4F0321", label="desk")
    api_key = p.mint_api_key(source="127.0.0.1", hostname="walk-host")
    Heartbeat.objects.create(proxy=p, source="127.0.0.1", applied_revision=p.active_revision.number)
    reg, token = Registration.create_for(p)
    backup = Backup.objects.create(proxy=p, size=len(BACKUP_MARKER), data=BACKUP_MARKER)
    action = ProxyAction.objects.create(proxy=p, kind=ProxyAction.BACKUP)
    dns = DnsRecord(proxy=p, name="walk.dyn.example.com", zone="dyn.example.com", provider="cloudflare")
    dns.credentials = DNS_TOKEN
    dns.save()
    (url,) = [u for _, u in device.urls()]
    from django.contrib.auth import get_user_model

    other = get_user_model().objects.filter(username="walk-other").first() or \
        get_user_model().objects.create_user("walk-other", password="another-walk-password")
    from manager.proxies.models import ObjectChange

    change = ObjectChange.objects.filter(object_type="proxies.proxy", object_id=p.pk).first()
    from manager.proxies.models import ApiToken

    client_for("admin")  # the walk's admin exists: it owns the token
    owner = get_user_model().objects.get(username="walk-admin")
    api_token = ApiToken(user=owner, name="walk", role=API_TOKEN_ROLE)
    api_token_value = api_token.mint()
    api_token.save()
    ids = {"user": other.pk, "change": change.pk, "apitoken": api_token.pk,
           "proxy": p.pk, "instance": inst.pk, "application": app.pk, "device": device.pk, "registration": reg.pk,
           "backup": backup.pk, "action": action.pk, "dnsrecord": dns.pk,
           "configrevision": p.active_revision.pk, "heartbeat": p.last_heartbeat.pk}
    return Seed(ids, {"private key": PEM_MARKER, "provisioning key": p.provisioning_key, "DNS token": DNS_TOKEN,
                      "registration token": token, "agent API key": api_key.partition(".")[2],
                      "backup archive": BACKUP_MARKER.decode(), "API token": api_token_value[len("pft_"):]}, url)


@dataclass
class Pattern:
    name: str  # "namespace:name", or the route for an unnamed pattern
    route: str
    kwargs: list[str]
    callback: Any


def walk(resolvers: Any = None, prefix: str = "", namespace: str = "") -> Iterator[Pattern]:
    """Every URL pattern of the project, with its full route and namespaced name."""
    from django.urls import URLPattern, URLResolver, get_resolver

    for entry in (resolvers or get_resolver()).url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            ns = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            yield from walk(entry, route, ns)
        elif isinstance(entry, URLPattern):
            pattern = entry.pattern
            names = list(getattr(pattern, "converters", {}) or pattern.regex.groupindex)
            name = f"{namespace}{entry.name}" if entry.name else route
            yield Pattern(name, route, names, entry.callback)


def required(p: Pattern) -> Any:
    if p.name in REQUIRED:
        return REQUIRED[p.name]
    return ADMIN_SITE if p.name.startswith(f"{ADMIN_NAMESPACE}:") or p.route.startswith("admin/") else None


def url_of(p: Pattern, seed: Seed) -> str:
    """The pattern filled with real objects' ids (a bogus one where the object does not matter)."""
    from django.urls import reverse

    if not p.kwargs and not p.name.count(":") and p.name == p.route:
        return "/" + p.route.lstrip("^").rstrip("$")
    if p.route.startswith("admin/") and p.name == p.route:  # the admin's catch-all
        return "/admin/no-such-page/"
    model = p.name.split(":")[-1].split("_")[1] if p.name.startswith("admin:") and "_" in p.name else ""
    values: dict[str, Any] = {}
    for k in p.kwargs:
        if k == "pk":
            values[k] = seed.ids[next((kind for prefix, kind in PK_OF if p.route.startswith(prefix)), "proxy")]
        elif k in ("reg", "app", "backup", "device"):
            values[k] = seed.ids[{"reg": "registration", "app": "application"}.get(k, k)]
        elif k == "object_id":
            values[k] = str(seed.ids.get(model, 1))
        elif k == "app_label":
            values[k] = "proxies"
        else:
            values[k] = "1"
    return reverse(p.name, kwargs=values)


PK_OF = [("api/v1/objects/instances/", "instance"), ("api/v1/objects/applications/", "application"),
         ("api/v1/objects/devices/", "device"), ("api/v1/objects/registrations/", "registration"),
         ("api/v1/objects/backups/", "backup"), ("api/v1/objects/dns-records/", "dnsrecord"),
         ("api/v1/objects/users/", "user"), ("api/v1/objects/tokens/", "apitoken"), ("instances/", "instance"),
         ("api/v1/proxy/actions/", "action"), ("dns/", "dnsrecord"), ("users/", "user"), ("changes/", "change"),
         ("tokens/", "apitoken")]


def all_patterns() -> list[Pattern]:
    return list(walk())


def test_every_pattern_is_classified_and_declares_what_the_table_says() -> None:
    from manager.proxies.permissions import declared

    patterns = all_patterns()
    unclassified = [p.name for p in patterns if required(p) is None]
    assert not unclassified, f"add these URL patterns to REQUIRED: {unclassified}"
    assert set(REQUIRED) <= {p.name for p in patterns}, "REQUIRED names patterns that do not exist"
    for p in patterns:
        if not p.route.startswith("admin/"):  # the admin site checks its own (and the walk checks it)
            assert declared(p.callback) == required(p), p.name


ROLES = ("anonymous", "viewer", "operator", "admin")


def client_for(role: str):  # type: ignore[no-untyped-def]
    from django.contrib.auth import get_user_model
    from django.test import Client

    from manager.proxies import roles

    c = Client()
    if role != "anonymous":
        User = get_user_model()  # noqa: N806
        user = User.objects.filter(username=f"walk-{role}").first() or User.objects.create_user(
            f"walk-{role}", password="a-long-walk-password")
        roles.assign(user, role)
        c.force_login(user)
    return c


def has(role: str, perm: str) -> bool:
    from django.contrib.auth import get_user_model

    return role != "anonymous" and get_user_model().objects.get(username=f"walk-{role}").has_perm(perm)


def forbidden_secrets(role: str, seed: Seed) -> dict[str, str]:
    if role == "admin":
        return {}
    found = dict(seed.secrets)
    if role in ("anonymous", "viewer"):
        found["provisioning URL"] = seed.provisioning_url.rsplit("/", 1)[1]
    return found


def body(resp: Any) -> str:
    data = b"".join(resp.streaming_content) if resp.streaming else resp.content
    return data.decode("utf-8", "replace")


def request(role: str, method: str, url: str) -> Any:
    """One request in a transaction rolled back afterwards, with a fresh login (a logout or an
    allowed delete changes nothing for the next request)."""
    from django.db import transaction

    with transaction.atomic():
        c = client_for(role)
        resp = c.get(url) if method == "GET" else c.post(url, {})
        resp.text = body(resp)
        transaction.set_rollback(True)
    return resp


def expectation(role: str, method: str, p: Pattern) -> str:
    """What the role must get: 'login' (anonymous), 'refused' (403), 'admin-login', 'any', 'allowed', '405'."""
    spec = required(p)
    if spec == PUBLIC:
        return "any"
    if spec == AGENT_KEY:
        return "agent-refused"  # no agent key with these requests: never a 2xx
    if spec == ADMIN_SITE:
        return "any" if role == "admin" else "admin-login"  # an admin meets the admin site's own refusals
    perm = spec.get(method) if isinstance(spec, dict) else spec
    if perm is None:
        return "405"
    if role == "anonymous":
        return "login"
    return "allowed" if has(role, perm) else "refused"


@pytest.mark.parametrize("role", ROLES)
def test_every_url_with_every_role(role: str, seed: Seed) -> None:
    problems: list[str] = []
    client_for(role)  # the user exists before has() asks about it
    for p in all_patterns():
        url = url_of(p, seed)
        for method in ("GET", "POST"):
            want = expectation(role, method, p)
            resp = request(role, method, url)
            status, where = resp.status_code, resp.get("Location", "")
            ok = {
                "any": True,
                "agent-refused": status in (400, 401, 404, 405),
                "admin-login": status == 302 and where.startswith("/admin/login/"),
                "login": (status == 302 and where.startswith("/accounts/login/")) or
                         (p.route.startswith("api/") and status == 401),
                "refused": status == 403,
                "allowed": status not in (401, 403) and not (status == 302 and "login/" in where),
                "405": status == 405,
            }[want]
            if not ok:
                problems.append(f"{method} {url} ({p.name}) as {role}: expected {want}, got {status} {where}")
            for what, secret in forbidden_secrets(role, seed).items():
                if secret in resp.text:
                    problems.append(f"{method} {url} ({p.name}) as {role}: the {what} is in the answer")
    assert not problems, "\n".join(problems)


def test_the_walk_sees_secrets_where_the_admin_may(seed: Seed) -> None:
    """The walk's secret search can find something: the admin's answers do carry the secrets."""
    admin = client_for("admin")
    pid, iid = seed.ids["proxy"], seed.ids["instance"]
    assert BACKUP_MARKER in admin.get(f"/proxies/{pid}/backups/{seed.ids['backup']}/download/").content
    assert seed.provisioning_url in admin.get(f"/instances/{iid}/devices.csv").content.decode()
    revision = admin.get(f"/admin/proxies/configrevision/{seed.ids['configrevision']}/change/").content.decode()
    # a stored revision holds its secrets encrypted: not even an admin sees them in it
    assert "ConfigRevision" in revision
    assert PEM_MARKER not in revision and seed.secrets["provisioning key"] not in revision
    operator = client_for("operator")
    assert seed.provisioning_url in operator.get(f"/instances/{iid}/devices/").content.decode()
    assert seed.provisioning_url not in client_for("viewer").get(f"/instances/{iid}/devices/").content.decode()


def token_request(token: str, method: str, url: str, **extra: Any) -> Any:
    """One API request with `Authorization: Bearer <token>` (from loopback), rolled back afterwards."""
    from django.db import transaction
    from django.test import Client

    with transaction.atomic():
        c = Client()
        auth = {"HTTP_AUTHORIZATION": f"Bearer {token}", **extra}
        resp = c.get(url, **auth) if method == "GET" else c.post(url, {}, **auth)
        resp.text = body(resp)
        transaction.set_rollback(True)
    return resp


def api_patterns() -> list[Pattern]:
    """The API patterns a user's credentials open (not the agents', not the public schema)."""
    return [p for p in all_patterns() if p.route.startswith("api/") and required(p) not in (AGENT_KEY, PUBLIC)]


@pytest.mark.parametrize("role", ("viewer", "operator", "admin"))
def test_every_api_url_with_a_token_of_every_role(role: str, seed: Seed) -> None:
    """An admin's token scoped to `role` opens exactly what `role` may: the token's role, not its
    owner's, decides; and it never carries a secret the role may not see."""
    from django.contrib.auth import get_user_model

    from manager.proxies.models import ApiToken

    client_for(role)  # walk-<role> exists: has() asks it what the role may
    token = ApiToken(user=get_user_model().objects.get(username="walk-admin"), name=f"walk {role}", role=role)
    value = token.mint()
    token.save()
    problems = []
    for p in api_patterns():
        url = url_of(p, seed)
        for method in ("GET", "POST"):
            want = expectation(role, method, p)
            resp = token_request(value, method, url)
            ok = {"refused": resp.status_code == 403, "405": resp.status_code == 405,
                  "allowed": resp.status_code not in (401, 403)}[want]
            if not ok:
                problems.append(f"{method} {url} ({p.name}) with a {role} token: expected {want}, "
                                f"got {resp.status_code} {resp.text[:120]}")
            for what, secret in forbidden_secrets(role, seed).items():
                if secret in resp.text:
                    problems.append(f"{method} {url} ({p.name}) with a {role} token: the {what} is in the answer")
    assert not problems, "\n".join(problems)


def test_a_bad_token_is_401_with_www_authenticate_everywhere(seed: Seed) -> None:
    from django.contrib.auth import get_user_model

    from manager.proxies.models import ApiToken

    admin = get_user_model().objects.get(username="walk-admin")
    expired = ApiToken(user=admin, name="old", role="admin", expires="2000-01-01T00:00:00Z")
    expired_value = expired.mint()
    expired.save()
    good = ApiToken(user=admin, name="good", role="admin")
    good_value = good.mint()
    good.save()
    cases = {"pft_not-a-token": "invalid or revoked", "not even ours": "invalid or revoked",
             expired_value: "expired"}
    problems = []
    for p in api_patterns():
        url = url_of(p, seed)
        for value, why in cases.items():
            resp = token_request(value, "GET", url)
            if resp.status_code != 401 or "Bearer" not in resp.get("WWW-Authenticate", "") or why not in resp.text:
                problems.append(f"GET {url} with {value[:12]}: {resp.status_code} {resp.text[:80]}")
        # plain http from another host: a token is refused before it is looked at
        resp = token_request(good_value, "GET", url, REMOTE_ADDR="192.0.2.7")
        if resp.status_code != 401 or "only over https" not in resp.text:
            problems.append(f"GET {url} over http from 192.0.2.7: {resp.status_code} {resp.text[:80]}")
    assert not problems, "\n".join(problems)
    assert ApiToken.objects.get(pk=good.pk).last_used is None  # refused: not counted as a use
