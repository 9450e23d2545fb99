"""`instances[]`: the backend instances (web, SIP, XMPP, provisioning targets), each by name."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from proxyd.config.reader import _fields, _network, _Reader
from proxyd.config.values import HostPort, SipTarget
from proxyd.config.web import HTTP
from proxyd.provisioning_template import problem as template_problem

# An instance name is the first path segment of the web router and part of provisioning URLs,
# so it must be a plain slug: no encoding questions, no case folding surprises.
INSTANCE_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$")
WEB_PREFIX_MODES = ("rewrite", "forward_prefix")


@dataclass(frozen=True)
class Instance:
    #: a lowercase slug (a-z, 0-9, `-`, `_`, at most 63): the first path segment of the web router
    name: str
    #: the instance's web server (`http://` or `https://` URL): `/<name>` and `/<name>/services` go there
    web: str | None = None
    #: the instance's PBX; SIP requests for its `sip_domains` are relayed there
    sip: SipTarget | None = None
    #: the Request-URI domains that route to this instance's PBX (each belongs to one instance)
    sip_domains: tuple[str, ...] = ()
    #: the instance's XMPP server (STARTTLS port); streams to its `xmpp_domains` are passed through
    xmpp: HostPort | None = None
    #: the stream `to` domains / TLS SNI names that route to this instance's XMPP server
    xmpp_domains: tuple[str, ...] = ()
    #: this instance takes Direct TLS connections that send no SNI (at most one instance)
    xmpp_default: bool = False
    #: send a PROXY protocol v2 header to the instance's XMPP server, so it sees the client's address
    xmpp_proxy_protocol: bool = False
    #: the instance's XEP-0368 Direct TLS address; null: the `xmpp` host at its port + 1 (5222 -> 5223)
    xmpp_direct_tls: HostPort | None = None
    #: the provisioning URL template (`http://` or `https://`) with `{mac}`; the device's file name is appended
    provisioning: str | None = None
    #: SHA-256 fingerprint ("AB:CD:...", 32 bytes) the PBX's certificate must have when the `sip`
    #: target is tls; null: the connection is encrypted but the certificate is not checked
    sip_tls_fingerprint: str | None = None
    #: the instance's PBX refuses SRTP offers (488): in media mode srtp, phone offers reach it as
    #: plain RTP and the relay bridges SRTP<->RTP from the first offer
    rtp_only: bool = False
    #: the PBX of a udp `sip` target also takes TCP on the same host and port: a request over
    #: 1,300 bytes goes to it over TCP (RFC 3261 §18.1.1: IP fragments get lost), the rest over UDP
    sip_offers_tcp: bool = False
    #: how the `/<name>` prefix of the web router reaches the `web` backend (services/http/rewrite.py):
    #: "rewrite": stripped, and the backend's redirects and cookie paths are mapped back under it;
    #: "forward_prefix": stripped and announced in X-Forwarded-Prefix, nothing rewritten
    web_prefix_mode: str = "rewrite"
    #: CIDRs on the instance's side whose media the relay sends to and latches from like its PBX's
    #: own address: media servers, and phones registered at a proxy-only PBX (kamailio, OpenSIPS)
    #: directly; the PBX's signalling address and its `sip` host are always trusted, nothing else is
    media_sources: tuple[str, ...] = ()

    @property
    def direct_tls_target(self) -> HostPort | None:
        """Where the instance's Direct TLS goes: `xmpp_direct_tls`, else the `xmpp` host at port + 1."""
        if self.xmpp_direct_tls is not None or self.xmpp is None:
            return self.xmpp_direct_tls
        return HostPort(self.xmpp.host, self.xmpp.port + 1)


def _parse_instance(r: _Reader, raw: Any, path: str) -> Instance | None:
    d = r.obj(raw, path, _fields(Instance))
    n0 = len(r.problems)
    name = r.get(d, path, "name", r.string)
    if name is not None and not INSTANCE_NAME_RE.match(name):
        r.fail(f"{path}.name", "expected a lowercase slug (a-z, 0-9, '-', '_'), at most 63 chars")
    web = r.field(d, path, Instance, "web", lambda v, p: r.url(v, p, schemes=("http", "https"), nullable=True))
    sip = r.field(d, path, Instance, "sip", r.sip_target)
    sip_domains = r.field(d, path, Instance, "sip_domains", lambda v, p: r.str_list(v, p, r.dns_name))
    xmpp = r.field(d, path, Instance, "xmpp", r.host_port)
    xmpp_domains = r.field(d, path, Instance, "xmpp_domains", lambda v, p: r.str_list(v, p, r.dns_name))
    xmpp_default = r.field(d, path, Instance, "xmpp_default", r.boolean)
    xmpp_pp = r.field(d, path, Instance, "xmpp_proxy_protocol", r.boolean)
    xmpp_direct = r.field(d, path, Instance, "xmpp_direct_tls", r.host_port)
    prov = r.field(d, path, Instance, "provisioning", lambda v, p: r.url(v, p, schemes=HTTP, nullable=True))
    if prov is not None and (why := template_problem(prov)):
        r.fail(f"{path}.provisioning", why)
    pin = r.field(d, path, Instance, "sip_tls_fingerprint", r.sha256_fingerprint)
    rtp_only = r.field(d, path, Instance, "rtp_only", r.boolean)
    offers_tcp = r.field(d, path, Instance, "sip_offers_tcp", r.boolean)
    prefix_mode = r.field(d, path, Instance, "web_prefix_mode", lambda v, p: r.choice(v, p, WEB_PREFIX_MODES))
    media_sources = r.field(d, path, Instance, "media_sources", lambda v, p: r.str_list(v, p, _network(r)))
    if pin is not None and sip is not None and sip.transport != "tls":
        r.fail(f"{path}.sip_tls_fingerprint", f"only for a tls sip target, not {sip.transport}")
    if offers_tcp and sip is not None and sip.transport != "udp":
        r.fail(f"{path}.sip_offers_tcp", f"only for a udp sip target, not {sip.transport}")
    if len(r.problems) > n0:
        return None
    assert name is not None
    return Instance(
        name=name, web=web, sip=sip, sip_domains=sip_domains or (), xmpp=xmpp,
        xmpp_domains=xmpp_domains or (), xmpp_default=bool(xmpp_default),
        xmpp_proxy_protocol=bool(xmpp_pp), xmpp_direct_tls=xmpp_direct, provisioning=prov,
        sip_tls_fingerprint=pin, rtp_only=bool(rtp_only), sip_offers_tcp=bool(offers_tcp),
        web_prefix_mode=prefix_mode, media_sources=media_sources or (),
    )
