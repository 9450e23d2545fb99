"""The one place that turns models into a ProxyConfig (through proxyd's own parser).

`compile_config()` builds the v1 dict and validates it with `proxyd.config.parse_config`, so the
manager can never hand out a config proxyd would reject. `publish()` stores a new revision only
when the compiled config differs from the active one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.apps import apps as registry
from django.conf import settings
from django.db import transaction

from manager.proxies.crypto import new_provisioning_key
from manager.proxies.notify import changed
from proxyd.config import ConfigError, ProxyConfig, parse_config

if TYPE_CHECKING:
    from manager.proxies.models import Proxy

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


def raw_config(proxy: Proxy, revision: int) -> dict[str, Any]:
    # models are looked up through the app registry, never imported: models.py calls this module
    # to check a whole config, so an import back would close a circle
    Instance = registry.get_model("proxies", "Instance")  # noqa: N806 - a model class

    instances = []
    for inst in Instance.objects.prefetch_related("proxies"):
        chosen = list(inst.proxies.all())
        if chosen and proxy.pk not in {p.pk for p in chosen}:
            continue
        instances.append({
            "name": inst.name, "web": inst.web or None,
            "sip": f"{inst.sip_transport}:{inst.sip_host}:{inst.sip_port}" if inst.sip_host else None,
            "sip_domains": lines(inst.sip_domains), "xmpp": inst.xmpp or None,
            "xmpp_domains": lines(inst.xmpp_domains), "provisioning": inst.provisioning or None,
            "sip_tls_fingerprint": inst.sip_tls_fingerprint or None, "rtp_only": inst.rtp_only,
            "sip_offers_tcp": inst.sip_offers_tcp,
            "web_prefix_mode": inst.web_prefix_mode, "media_sources": lines(inst.media_sources),
        })
    net: dict[str, Any] = {"mode": proxy.network_mode}
    if proxy.network_mode == "manual":
        net.update(interface=proxy.network_interface, address=proxy.network_address,
                   gateway=proxy.network_gateway, table=proxy.network_table)
    apps = [{"name": a.name, "port": a.port, "tls": a.tls, "public_prefix": a.public_prefix,
             "upstream": a.upstream, "verify_upstream": a.verify_upstream}
            for a in proxy.applications.all()] if proxy.pk else []
    return {
        "version": 1, "revision": revision,
        "proxy": {"name": proxy.name, "fqdn": proxy.fqdn, "enabled": proxy.enabled, "aliases": lines(proxy.aliases)},
        "bind": proxy.bind,
        "tls": _tls(proxy),
        "allow_sources": lines(proxy.allow_sources),
        "instances": instances, "applications": apps,
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
        # secrets go into the revision encrypted (ConfigRevision.fields_for), never as plaintext JSON
        proxy.revisions.create(number=number, **proxy.revisions.model.fields_for(cfg.to_dict()))
        # older revisions are kept for the change history only up to a bound
        keep = settings.PFORTE_REVISIONS_KEEP
        stale = list(proxy.revisions.order_by("-number").values_list("pk", flat=True)[keep:])
        if stale:
            proxy.revisions.filter(pk__in=stale).delete()
    changed(proxy.pk, number)
    return number
