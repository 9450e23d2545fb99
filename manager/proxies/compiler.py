"""The one place that turns models into a ProxyConfig (through proxyd's own parser).

`compile_config()` builds the v1 dict and validates it with `proxyd.config.parse_config`, so the
manager can never hand out a config proxyd would reject. `publish()` stores a new revision only
when the compiled config differs from the active one.

`publish_many()` (an instance change reaches every proxy) compiles once per distinct config
shape (`Shapes`): proxies whose configs differ only in their own name, fqdn, aliases and
provisioning key share one `parse_config`, and each gets the shape's result with its own values
put in. That is exact, not a shortcut: those values are checked on their own by the parser (a
string, a DNS name, base64 key material), and a proxy gets the shape's result only when its
values are the ones its previous revision was accepted with; the one rule across sections that
reads one of them (a backend host equal to the proxy's own fqdn is a self-loop) is checked per
proxy. Any other proxy is compiled on its own.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from typing import TYPE_CHECKING, Any

from django.apps import apps as registry
from django.conf import settings
from django.db import transaction

from manager.proxies.crypto import decrypt, encrypt, new_provisioning_key, split_secrets
from manager.proxies.feed import FEED, notify_others
from proxyd.config import ConfigError, ProxyConfig, backends, parse_config

if TYPE_CHECKING:
    from manager.proxies.models import Proxy

log = logging.getLogger("manager.compiler")

# config path prefix -> model field, for showing a ConfigError next to the right form field
FIELD_MAP = {
    "services.web.port": "web_port", "services.web.redirect_url": "redirect_url",
    "services.sip.udp_port": "sip_udp_port", "services.sip.tls_port": "sip_tls_port",
    "services.sip.rate_limit": "sip_rate_limit", "services.web.upstream_timeout": "web_upstream_timeout",
    "services.media.port_min": "media_port_min", "services.media.port_max": "media_port_max",
    "services.media.idle_timeout": "media_idle_timeout", "services.media.setup_timeout": "media_setup_timeout",
    "services.media.max_streams_per_source": "media_max_streams_per_source",
    "services.media.max_streams_per_instance": "media_max_streams_per_instance",
    "services.media.max_streams": "media_max_streams",
    "services.provisioning.https_port": "provisioning_https_port",
    "services.provisioning.http_port": "provisioning_http_port",
    "services.xmpp.port": "xmpp_port", "services.xmpp.direct_tls_port": "xmpp_direct_tls_port",
    "tls.key_type": "tls_key_type", "tls.mode": "tls_mode", "tls.acme_directory": "acme_directory",
    "tls.acme_email": "acme_email", "tls.acme_names": "acme_names", "tls.acme_challenge": "acme_challenge",
    "tls.acme_http_port": "acme_http_port", "tls": "certificate_pem", "allow_sources": "allow_sources",
    "proxy.fqdn": "fqdn",
    "proxy.aliases": "aliases",
    "network.interface": "network_interface", "network.address": "network_address",
    "network.gateway": "network_gateway", "network.table": "network_table", "bind": "bind",
}


def _tls(proxy: Proxy) -> dict[str, Any]:
    """The certificate mode's own fields only: a pair kept from mode uploaded is not sent in another mode."""
    uploaded = proxy.tls_mode == "uploaded"
    out: dict[str, Any] = {"mode": proxy.tls_mode, "key_type": proxy.tls_key_type,
                           "certificate_pem": proxy.certificate_pem or None if uploaded else None,
                           "key_pem": proxy.key_pem or None if uploaded else None}
    if proxy.tls_mode == "acme":
        out.update(acme_directory=proxy.acme_directory or None, acme_email=proxy.acme_email or None,
                   acme_names=lines(proxy.acme_names), acme_challenge=proxy.acme_challenge,
                   acme_http_port=proxy.acme_http_port)
    return out


def lines(text: str) -> list[str]:
    """A list field as the forms take it: one value per line or comma-separated."""
    return [x.strip() for x in text.replace(",", "\n").splitlines() if x.strip()]


def all_instances() -> list[tuple[set[int], dict[str, Any]]]:
    """Every instance as (the proxies it is limited to, empty = all; its config section)."""
    # models are looked up through the app registry, never imported: models.py calls this module
    # to check a whole config, so an import back would close a circle
    Instance = registry.get_model("proxies", "Instance")  # noqa: N806 - a model class

    out = []
    for inst in Instance.objects.prefetch_related("proxies"):
        out.append(({p.pk for p in inst.proxies.all()}, {
            "name": inst.name, "web": inst.web or None,
            "sip": f"{inst.sip_transport}:{inst.sip_host}:{inst.sip_port}" if inst.sip_host else None,
            "sip_domains": lines(inst.sip_domains), "xmpp": inst.xmpp or None,
            "xmpp_domains": lines(inst.xmpp_domains), "provisioning": inst.provisioning or None,
            "sip_tls_fingerprint": inst.sip_tls_fingerprint or None, "rtp_only": inst.rtp_only,
            "sip_offers_tcp": inst.sip_offers_tcp,
            "web_prefix_mode": inst.web_prefix_mode, "media_sources": lines(inst.media_sources),
        }))
    return out


APP_FIELDS = ("name", "port", "tls", "public_prefix", "upstream", "verify_upstream")


def raw_config(proxy: Proxy, revision: int, instances: list[tuple[set[int], dict[str, Any]]] | None = None,
               apps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    chosen = [dict(section) for only, section in (all_instances() if instances is None else instances)
              if not only or proxy.pk in only]
    net: dict[str, Any] = {"mode": proxy.network_mode}
    if proxy.network_mode == "manual":
        net.update(interface=proxy.network_interface, address=proxy.network_address,
                   gateway=proxy.network_gateway, table=proxy.network_table)
    if apps is None:
        apps = [{f: getattr(a, f) for f in APP_FIELDS} for a in proxy.applications.all()] if proxy.pk else []
    return {
        "version": 1, "revision": revision,
        "proxy": {"name": proxy.name, "fqdn": proxy.fqdn, "enabled": proxy.enabled, "aliases": lines(proxy.aliases)},
        "bind": proxy.bind,
        "tls": _tls(proxy),
        "allow_sources": lines(proxy.allow_sources),
        "instances": chosen, "applications": apps,
        "services": {
            "web": {"mode": proxy.web_mode, "port": proxy.web_port, "redirect_url": proxy.redirect_url or None,
                    "upstream_timeout": proxy.web_upstream_timeout},
            "sip": {"mode": proxy.sip_mode, "udp_port": proxy.sip_udp_port, "tls_port": proxy.sip_tls_port,
                    "rate_limit": proxy.sip_rate_limit},
            "media": {"mode": proxy.media_mode, "port_min": proxy.media_port_min, "port_max": proxy.media_port_max,
                      "idle_timeout": proxy.media_idle_timeout, "setup_timeout": proxy.media_setup_timeout,
                      "max_streams": proxy.media_max_streams,
                      "max_streams_per_source": proxy.media_max_streams_per_source,
                      "max_streams_per_instance": proxy.media_max_streams_per_instance},
            "provisioning": {"mode": proxy.provisioning_mode, "https_port": proxy.provisioning_https_port,
                             "http_port": proxy.provisioning_http_port, "key": proxy.provisioning_key or None},
            "xmpp": {"enabled": proxy.xmpp_enabled, "port": proxy.xmpp_port,
                     "direct_tls_port": proxy.xmpp_direct_tls_port},
        },
        "network": net,
    }


def compile_config(proxy: Proxy, revision: int = 0) -> ProxyConfig:
    return parse_config(raw_config(proxy, revision))


def field_errors(proxy: Proxy) -> dict[str, list[str]]:
    if not proxy.provisioning_key_enc:
        proxy.provisioning_key = new_provisioning_key()
    try:
        compile_config(proxy)
    except ConfigError as exc:
        out: dict[str, list[str]] = {}
        for problem in exc.problems:
            path = problem.split(":", 1)[0]
            field = next((f for p, f in FIELD_MAP.items() if path.startswith(p)), "__all__")
            out.setdefault(field, []).append(problem)
        return out
    return {}


def publish(proxy: Proxy) -> int | None:
    """Store a new revision if the compiled config changed; returns its number (None: unchanged)."""
    with transaction.atomic():
        active = proxy.revisions.select_for_update().order_by("-number").first()
        number = (active.number + 1) if active else 1
        try:
            cfg = compile_config(proxy, number)
        except ConfigError:
            return None  # an invalid combination (e.g. instance edit) keeps the last good revision
        if active is not None:
            old = active.full_config()
            old["revision"] = number
            if old == cfg.to_dict():
                return None
        # secrets go into the revision encrypted (ConfigRevision.fields_for), never as plaintext JSON;
        # the feed gets the config as served, secrets included, and only in memory
        full = cfg.to_dict()
        proxy.revisions.create(number=number, **proxy.revisions.model.fields_for(full))
        prune({proxy.pk: number})
        notify_others()
        body = served(full)
        # after the commit, also of a caller's transaction: a proxy never gets a revision rolled back
        transaction.on_commit(lambda: FEED.changed(proxy.pk, number, body))
    return number


def served(cfg: dict[str, Any]) -> str:
    """The config JSON a proxy gets (as `ConfigRevision.served_json()` writes it)."""
    return json.dumps(cfg, separators=(",", ":"))


def prune(newest: dict[int, int]) -> None:
    """Older revisions are kept for the change history only up to PFORTE_REVISIONS_KEEP per proxy
    (`newest`: proxy -> its newest revision number; a proxy's numbers have no gaps, each revision
    is the one before plus one, so those to go are the numbers up to newest - keep)."""
    ConfigRevision = registry.get_model("proxies", "ConfigRevision")  # noqa: N806 - a model class

    keep = settings.PFORTE_REVISIONS_KEEP
    # one DELETE per distinct cut-off and 500 proxies: proxies made alike share their numbers, so a
    # change to every proxy is a few statements, not one per proxy, and reads no rows back
    by_cut: dict[int, list[int]] = {}
    for pid, number in newest.items():
        if number > keep:
            by_cut.setdefault(number - keep, []).append(pid)
    for cut, pids in by_cut.items():
        for i in range(0, len(pids), 500):
            ConfigRevision.objects.filter(proxy_id__in=pids[i:i + 500], number__lte=cut).delete()


Identity = tuple[str, str, tuple[str, ...], str | None]
_MARK = secrets.token_hex(8)  # placeholders no config can contain by chance (unguessable per process)
_PLACE = {leaf: f"\x00{_MARK}:{leaf}\x00" for leaf in ("revision", "name", "fqdn", "aliases", "key")}
_PLACE_JSON = {leaf: json.dumps(v) for leaf, v in _PLACE.items()}
_LEAF_OF = {v: k for k, v in _PLACE_JSON.items()}
_PLACE_RE = re.compile("|".join(re.escape(v) for v in _PLACE_JSON.values()))
_KEY_PATH = "services.provisioning.key"


def _identity(cfg: dict[str, Any]) -> Identity:
    """The leaves one proxy's config has of its own (all checked on their own by the parser)."""
    p, prov = cfg["proxy"], cfg["services"]["provisioning"]
    return p["name"], p["fqdn"], tuple(p["aliases"]), prov["key"]


def _with_identity(cfg: dict[str, Any], revision: Any, name: Any, fqdn: Any, aliases: Any, key: Any) -> dict[str, Any]:
    services = cfg["services"]
    return {**cfg, "revision": revision,
            "proxy": {**cfg["proxy"], "name": name, "fqdn": fqdn, "aliases": aliases},
            "services": {**services, "provisioning": {**services["provisioning"], "key": key}}}


def leaves(revision: int, ident: Identity) -> dict[str, str]:
    """A proxy's own leaves as JSON, to fill a `Template` with."""
    name, fqdn, aliases, key = ident
    return {"revision": str(revision), "name": _dumps(name), "fqdn": _dumps(fqdn), "aliases": _dumps(list(aliases)),
            "key": _dumps(key)}


class Template:
    """JSON text with placeholders for a proxy's own leaves, split once: filling it for each of
    10,000 proxies is a join, not five searches through the text."""

    def __init__(self, text: str) -> None:
        self.parts = _PLACE_RE.split(text)
        self.leaves = [_LEAF_OF[m] for m in _PLACE_RE.findall(text)]

    def fill(self, values: dict[str, str]) -> str:
        out = [self.parts[0]]
        for leaf, part in zip(self.leaves, self.parts[1:], strict=True):
            out += (values[leaf], part)
        return "".join(out)


class Compiled:
    """A compiled config as templates: its public JSON (secrets out, as stored), its served JSON and
    its other secrets, with the revision and the identity leaves to fill in (`leaves`)."""

    def __init__(self, cfg: dict[str, Any], alone: bool = False) -> None:
        # compiled for one proxy on its own: its identity as the parser gave it back (normalised)
        self.own = _identity(cfg) if alone else None
        marked = _with_identity(cfg, *(_PLACE[k] for k in ("revision", "name", "fqdn", "aliases", "key")))
        public, found = split_secrets(marked)
        found.pop(_KEY_PATH, None)
        self.public, self.served, self.secrets = Template(_dumps(public)), Template(_dumps(marked)), found

    def secrets_of(self, ident: Identity) -> dict[str, str]:
        return {**self.secrets, _KEY_PATH: ident[3]} if ident[3] else dict(self.secrets)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class Shapes:
    """One `parse_config` per distinct config shape (the raw config without its identity leaves)."""

    def __init__(self) -> None:
        # shape -> (its compiled templates, the fqdn of the proxy it was checked with, backend hosts)
        self._seen: dict[str, tuple[Compiled, str, frozenset[str]]] = {}
        self.parsed = 0

    def _parse(self, raw: dict[str, Any]) -> ProxyConfig | None:
        self.parsed += 1
        try:
            return parse_config(raw)
        except ConfigError:
            return None

    def compile(self, raw: dict[str, Any], trusted: bool, chosen: tuple[int, ...] | None = None) -> Compiled | None:
        """The compiled config for `raw` (None: invalid). `trusted`: its identity leaves are those its
        previous revision was accepted with. `chosen`: which of this publish's instance sections
        `raw` has (by index), so the shape's key need not spell them out for every proxy (writing
        the sections out was a third of the key's cost)."""
        key = ""
        if trusted:
            blank = _with_identity(raw, 0, "", "", [], None)
            key = _dumps(blank) if chosen is None else f"{chosen}{_dumps({**blank, 'instances': None})}"
        if not trusted or key not in self._seen:
            cfg = self._parse(raw)
            if not trusted:
                return Compiled(cfg.to_dict(), alone=True) if cfg else None
            if cfg is None:
                return None  # maybe for its own fqdn (a self-loop): the shape's next proxy is tried again
            hosts = frozenset(h.lower().rstrip(".") for _, _, h, _, _ in backends(cfg))
            self._seen[key] = (Compiled(cfg.to_dict()), cfg.proxy.fqdn, hosts)
        shape = self._seen[key]
        if raw["proxy"]["fqdn"] in shape[2] or shape[1] in shape[2]:
            cfg = self._parse(raw)  # the self-loop rule reads the fqdn: this proxy on its own
            return Compiled(cfg.to_dict(), alone=True) if cfg else None
        return shape[0]


def _insert(model: Any, rows: list[tuple[int, int, str, str]]) -> None:
    """The new revisions (proxy, number, config JSON, secrets) in one `executemany`: bulk_create
    built the SQL field by field, a third of a 1,000-proxy publish (0.44 of 1.3 s profiled); the
    rows need no primary key back."""
    from django.db import connection
    from django.utils import timezone

    if not rows:
        return
    created = model._meta.get_field("created").get_db_prep_value(timezone.now(), connection)
    table, q = model._meta.db_table, connection.ops.quote_name
    sql = (f"INSERT INTO {q(table)} ({q('proxy_id')}, {q('number')}, {q('config_json')}, {q('secrets_enc')}, "  # noqa: S608
           f"{q('created')}) VALUES (%s, %s, %s, %s, %s)")
    with connection.cursor() as cur:
        cur.executemany(sql, [(*r, created) for r in rows])


def _secrets(enc: str) -> dict[str, str]:
    return json.loads(decrypt(enc)) if enc else {}


def _announce(rows: list[tuple[int, int, str, str]], bodies: dict[int, str]) -> None:
    for pid, number, _, _ in rows:
        FEED.changed(pid, number, bodies[pid])


def publish_many(proxies: list[Proxy]) -> int:
    """`publish()` for many proxies at once (an instance change reaches every proxy): the
    instances read once, one compile per config shape, the active revisions in one query, the new
    ones in one bulk insert and one transaction. A proxy whose config would be invalid keeps its
    last good revision."""
    from django.db.models import OuterRef, Subquery

    ConfigRevision = registry.get_model("proxies", "ConfigRevision")  # noqa: N806 - a model class
    Proxy = registry.get_model("proxies", "Proxy")  # noqa: N806
    if not proxies:
        return 0
    started = time.monotonic()
    Application = registry.get_model("proxies", "Application")  # noqa: N806
    instances = all_instances()
    shapes = Shapes()
    ids = [p.pk for p in proxies]
    apps: dict[int, list[dict[str, Any]]] = {pk: [] for pk in ids}
    for i in range(0, len(ids), 500):  # in the order proxy.applications.all() gives (Meta.ordering)
        for a in Application.objects.filter(proxy_id__in=ids[i:i + 500]).values("proxy_id", *APP_FIELDS):
            apps[a.pop("proxy_id")].append(a)
    rows: list[tuple[int, int, str, str]] = []
    with transaction.atomic():
        # the proxies' rows locked: two processes publishing at once queue here, not on the unique number;
        # NO KEY: the heartbeat writer's inserts (FOR KEY SHARE on the proxy row) do not wait for it
        list(Proxy.objects.filter(pk__in=ids).select_for_update(no_key=True).values_list("pk", flat=True))
        newest = ConfigRevision.objects.filter(proxy_id=OuterRef("proxy_id")).order_by("-number").values("number")[:1]
        # (number, config JSON, secrets) of each proxy's active revision, as tuples: 10,000 model
        # objects were a sixth of the publish
        active: dict[int, tuple[int, str, str]] = {}
        for i in range(0, len(ids), 500):
            active.update((pid, (n, cj, enc)) for pid, n, cj, enc in ConfigRevision.objects.filter(
                proxy_id__in=ids[i:i + 500], number=Subquery(newest)).values_list(
                    "proxy_id", "number", "config_json", "secrets_enc"))
        bodies: dict[int, str] = {}
        for proxy in proxies:
            old = active.get(proxy.pk)
            number = old[0] + 1 if old else 1
            raw = raw_config(proxy, number, instances, apps[proxy.pk])
            chosen = tuple(i for i, (only, _) in enumerate(instances) if not only or proxy.pk in only)
            ident = _identity(raw)
            had, trusted = None, False
            if old is not None:
                had = _secrets(old[2])
                was = json.loads(old[1])["proxy"]
                trusted = (was["name"], was["fqdn"], tuple(was["aliases"]), had.get(_KEY_PATH)) == ident
            compiled = shapes.compile(raw, trusted=trusted, chosen=chosen)
            if compiled is None:
                continue
            ident = compiled.own or ident
            found = compiled.secrets_of(ident)
            same_secrets = old is not None and found == had
            values = leaves(number, ident)
            if same_secrets and compiled.public.fill({**values, "revision": str(old[0])}) == old[1]:
                continue  # unchanged
            enc = old[2] if same_secrets else (encrypt(_dumps(found)) if found else "")
            rows.append((proxy.pk, number, compiled.public.fill(values), enc))
            bodies[proxy.pk] = compiled.served.fill(values)
        _insert(ConfigRevision, rows)
        if rows:
            prune({r[0]: r[1] for r in rows})
            notify_others()
        transaction.on_commit(lambda: _announce(rows, bodies))  # after the commit, also the caller's
    log.info("event=published proxies=%d revisions=%d parsed=%d seconds=%.3f", len(proxies), len(rows),
             shapes.parsed, time.monotonic() - started)
    return len(rows)
