"""The top level: `ProxyConfig` with its `proxy` and `services` objects, and `parse_config()`, the
one validation pass over every section."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from proxyd.config.applications import Application, _parse_application
from proxyd.config.checks import _cross_checks
from proxyd.config.instances import Instance, _parse_instance
from proxyd.config.media import MediaService, _parse_media
from proxyd.config.network import Network, _parse_network
from proxyd.config.provisioning import ProvisioningService, _parse_provisioning
from proxyd.config.reader import _MISSING, ConfigError, _fields, _parse_list, _Reader, _source
from proxyd.config.sip import SipService, _parse_sip
from proxyd.config.tls import TlsConfig, _parse_tls
from proxyd.config.values import HostPort, SipTarget
from proxyd.config.web import WebService, _parse_web
from proxyd.config.xmpp import XmppService, _parse_xmpp

VERSION = 1


@dataclass(frozen=True)
class ProxyInfo:
    #: the proxy's name in the manager and in logs
    name: str
    #: the public DNS name; the self-signed certificate is made for it and SDP falls back to its address
    fqdn: str
    #: false: every listener stops, the daemon and its link to the manager stay up
    enabled: bool = True
    #: further names (DNS names or IP literals) clients may address the HTTPS router and the
    #: applications by; any other Host gets 421 (the certificate must cover them: configure one)
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Services:
    #: the HTTPS path router
    web: WebService = field(default_factory=WebService)
    #: the SIP relay
    sip: SipService = field(default_factory=SipService)
    #: the RTP/SRTP relay (runs whenever sip is not off)
    media: MediaService = field(default_factory=MediaService)
    #: phone provisioning
    provisioning: ProvisioningService = field(default_factory=ProvisioningService)
    #: XMPP passthrough
    xmpp: XmppService = field(default_factory=XmppService)


@dataclass(frozen=True)
class ProxyConfig:
    #: the proxy itself
    proxy: ProxyInfo
    #: the format version; this proxyd reads 1
    version: int = VERSION
    #: the manager's revision number of this config (reported back in heartbeats)
    revision: int = 0
    #: the address every listener binds to (network mode auto)
    bind: str = "0.0.0.0"
    #: the certificate of every TLS listener
    tls: TlsConfig = field(default_factory=TlsConfig)
    #: CIDRs or DNS names allowed to connect (names re-resolved periodically); empty: everyone
    allow_sources: tuple[str, ...] = ()
    #: the backend instances, each reachable by name
    instances: tuple[Instance, ...] = ()
    #: on-premises applications of which only `public_prefix` is exposed, each on its own port
    applications: tuple[Application, ...] = ()
    #: which services run, and their ports
    services: Services = field(default_factory=Services)
    #: the proxy's network
    network: Network = field(default_factory=Network)

    @property
    def bind_address(self) -> str:
        """Where listeners bind: the proxy's own NIC address in network mode manual, else `bind`."""
        if self.network.mode == "manual" and self.network.address:
            return self.network.address.split("/", 1)[0]
        return self.bind

    def instance(self, name: str) -> Instance | None:
        for inst in self.instances:
            if inst.name == name:
                return inst
        return None

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)


def _plain(value: Any) -> Any:
    """asdict() leaves nested dataclass-derived values as dicts; render the v1 wire shapes."""
    if isinstance(value, dict):
        if set(value) == {"transport", "host", "port"}:
            return str(SipTarget(**value))
        if set(value) == {"host", "port"}:
            return str(HostPort(**value))
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def parse_config(raw: Any) -> ProxyConfig:
    """Validate raw JSON data (already decoded) and build the typed config, or raise ConfigError."""
    r = _Reader()
    top = r.obj(raw, "", _fields(ProxyConfig))
    version = r.get(top, "", "version", lambda v, p: _version(r, v, p))
    revision = r.field(top, "", ProxyConfig, "revision", lambda v, p: r.integer(v, p, 0, 2**63 - 1))
    proxy = _parse_proxy(r, top.get("proxy", _MISSING))
    bind = r.field(top, "", ProxyConfig, "bind", r.ip)
    tls = _parse_tls(r, top.get("tls", {}))
    allow = r.field(top, "", ProxyConfig, "allow_sources", lambda v, p: r.str_list(v, p, _source(r)))
    instances = _parse_list(r, top, "instances", _parse_instance)
    applications = _parse_list(r, top, "applications", _parse_application)
    services = _parse_services(r, top.get("services", {}))
    network = _parse_network(r, top.get("network", {}))
    if not r.problems:
        assert proxy and services and network and tls is not None
        cfg = ProxyConfig(
            version=version,
            revision=revision,
            proxy=proxy,
            bind=bind,
            tls=tls,
            allow_sources=allow,
            instances=tuple(instances),
            applications=tuple(applications),
            services=services,
            network=network,
        )
        _cross_checks(r, cfg)
        if not r.problems:
            return cfg
    raise ConfigError(r.problems)


def _version(r: _Reader, v: Any, p: str) -> int | None:
    if v != VERSION or isinstance(v, bool):
        r.fail(p, f"expected {VERSION} (this proxyd reads ProxyConfig v{VERSION}), got {v!r}")
        return None
    return VERSION


def _parse_proxy(r: _Reader, raw: Any) -> ProxyInfo | None:
    if raw is _MISSING:
        r.fail("proxy", "required")
        return None
    d = r.obj(raw, "proxy", _fields(ProxyInfo))
    name = r.get(d, "proxy", "name", r.string)
    fqdn = r.get(d, "proxy", "fqdn", r.dns_name)
    enabled = r.field(d, "proxy", ProxyInfo, "enabled", r.boolean)
    aliases = r.field(d, "proxy", ProxyInfo, "aliases", lambda v, p: r.str_list(v, p, r.dns_name))
    if name is None or fqdn is None or enabled is None:
        return None
    return ProxyInfo(name=name, fqdn=fqdn, enabled=enabled, aliases=aliases)


def _parse_services(r: _Reader, raw: Any) -> Services | None:
    d = r.obj(raw, "services", _fields(Services))
    n0 = len(r.problems)
    web = _parse_web(r, d.get("web", {}), "services.web")
    sip = _parse_sip(r, d.get("sip", {}), "services.sip")
    media = _parse_media(r, d.get("media", {}), "services.media")
    prov = _parse_provisioning(r, d.get("provisioning", {}), "services.provisioning")
    xmpp = _parse_xmpp(r, d.get("xmpp", {}), "services.xmpp")
    if len(r.problems) > n0:
        return None
    return Services(web=web, sip=sip, media=media, provisioning=prov, xmpp=xmpp)
