"""The checks across sections, run once the whole config is typed: unique names and domains,
listeners that collide, and backends that would loop into the proxy's own listeners."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from proxyd.config.reader import _Reader
from proxyd.config.values import HostPort

if TYPE_CHECKING:
    from proxyd.config.proxy import ProxyConfig


def listeners(cfg: ProxyConfig) -> list[tuple[str, str, int, int]]:
    """Every (service field path, protocol, first port, last port) the config would bind."""
    s = cfg.services
    out: list[tuple[str, str, int, int]] = []
    if s.web.mode != "off":
        out.append(("services.web.port", "tcp", s.web.port, s.web.port))
    for i, app in enumerate(cfg.applications):
        out.append((f"applications[{i}].port", "tcp", app.port, app.port))
    if s.sip.mode == "udp":  # phones may use TCP on the same port (RFC 3261 §18)
        out.append(("services.sip.udp_port", "udp", s.sip.udp_port, s.sip.udp_port))
        out.append(("services.sip.udp_port", "tcp", s.sip.udp_port, s.sip.udp_port))
    if s.sip.mode == "tls":
        out.append(("services.sip.tls_port", "tcp", s.sip.tls_port, s.sip.tls_port))
    if s.sip.mode != "off":
        out.append(("services.media.port_min", "udp", s.media.port_min, s.media.port_max))
    if s.provisioning.mode != "off":
        port = s.provisioning.https_port
        out.append(("services.provisioning.https_port", "tcp", port, port))
    if s.provisioning.mode == "http_and_https":
        out.append(("services.provisioning.http_port", "tcp", s.provisioning.http_port, s.provisioning.http_port))
    if s.xmpp.enabled:
        out.append(("services.xmpp.port", "tcp", s.xmpp.port, s.xmpp.port))
        out.append(("services.xmpp.direct_tls_port", "tcp", s.xmpp.direct_tls_port, s.xmpp.direct_tls_port))
    if acme_http_listener(cfg):  # bound only while an order is in flight
        out.append(("tls.acme_http_port", "tcp", cfg.tls.acme_http_port, cfg.tls.acme_http_port))
    return out


def plain_http_ports(cfg: ProxyConfig) -> set[int]:
    """The ports of the router's plain-HTTP listeners (applications without TLS, provisioning HTTP)."""
    ports = {app.port for app in cfg.applications if not app.tls}
    if cfg.services.provisioning.mode == "http_and_https":
        ports.add(cfg.services.provisioning.http_port)
    return ports


def acme_http_listener(cfg: ProxyConfig) -> bool:
    """Whether HTTP-01 needs a listener of its own: no plain-HTTP listener of the router has the port."""
    t = cfg.tls
    return t.mode == "acme" and t.acme_challenge == "http-01" and t.acme_http_port not in plain_http_ports(cfg)


def _cross_checks(r: _Reader, cfg: ProxyConfig) -> None:
    seen: dict[str, int] = {}
    for i, inst in enumerate(cfg.instances):
        if inst.name in seen:
            r.fail(f"instances[{i}].name", f"duplicate instance name {inst.name!r} (also instances[{seen[inst.name]}])")
        seen.setdefault(inst.name, i)
    for kind in ("sip_domains", "xmpp_domains"):
        owner: dict[str, str] = {}
        for i, inst in enumerate(cfg.instances):
            for dom in getattr(inst, kind):
                if dom in owner and owner[dom] != inst.name:
                    r.fail(f"instances[{i}].{kind}", f"{dom!r} already belongs to instance {owner[dom]!r}")
                owner.setdefault(dom, inst.name)
    defaults = [inst.name for inst in cfg.instances if inst.xmpp_default]
    if len(defaults) > 1:
        r.fail("instances", f"only one instance may be xmpp_default, got {', '.join(defaults)}")
    app_names: set[str] = set()
    for i, app in enumerate(cfg.applications):
        if app.name in app_names:
            r.fail(f"applications[{i}].name", f"duplicate application name {app.name!r}")
        app_names.add(app.name)
    taken: list[tuple[str, str, int, int]] = []
    for path, proto, lo, hi in listeners(cfg):
        for opath, oproto, olo, ohi in taken:
            if proto == oproto and lo <= ohi and olo <= hi:
                r.fail(path, f"{proto} port {lo if lo == hi else f'{lo}-{hi}'} collides with {opath}")
                break
        taken.append((path, proto, lo, hi))
    if cfg.tls.mode == "acme" and cfg.tls.acme_challenge == "tls-alpn-01" and cfg.services.web.mode == "off":
        r.fail("tls.acme_challenge", "tls-alpn-01 is answered on the HTTPS listener: services.web.mode is off")
    _self_loops(r, cfg)


# what each listener path of `listeners()` is called in a problem message
LISTENER_NAMES = {
    "services.web.port": "web (HTTPS) listener", "services.sip.udp_port": "SIP listener",
    "services.sip.tls_port": "SIP TLS listener", "services.media.port_min": "media relay ports",
    "services.provisioning.https_port": "provisioning HTTPS listener",
    "services.provisioning.http_port": "provisioning HTTP listener",
    "services.xmpp.port": "XMPP STARTTLS listener", "services.xmpp.direct_tls_port": "XMPP Direct TLS listener",
    "tls.acme_http_port": "ACME HTTP-01 listener",
}


def backends(cfg: ProxyConfig) -> list[tuple[str, str, str, int, bool]]:
    """Every (field path, transport, host, port, derived) the config sends traffic to; `derived`:
    the field is unset and this is its default."""
    out: list[tuple[str, str, str, int, bool]] = []

    def url(path: str, value: str | None) -> None:
        if value is not None:
            u = urlsplit(value)
            out.append((path, "tcp", u.hostname or "", u.port or (443 if u.scheme == "https" else 80), False))

    for i, inst in enumerate(cfg.instances):
        p = f"instances[{i}]"
        url(f"{p}.web", inst.web)
        if inst.sip is not None:
            transport = "udp" if inst.sip.transport == "udp" else "tcp"
            out.append((f"{p}.sip", transport, inst.sip.host, inst.sip.port, False))
        if inst.xmpp is not None:
            out.append((f"{p}.xmpp", "tcp", inst.xmpp.host, inst.xmpp.port, False))
        direct = inst.direct_tls_target
        if direct is not None:
            out.append((f"{p}.xmpp_direct_tls", "tcp", direct.host, direct.port, inst.xmpp_direct_tls is None))
        url(f"{p}.provisioning", inst.provisioning)
    for i, app in enumerate(cfg.applications):
        url(f"applications[{i}].upstream", app.upstream)
    return out


def _self_loops(r: _Reader, cfg: ProxyConfig) -> None:
    """A backend that is one of the proxy's own listeners would feed the proxy its own traffic."""
    bind = ipaddress.ip_address(cfg.bind_address)
    own = listeners(cfg)
    apps = {f"applications[{i}].port": f"application {a.name!r} listener" for i, a in enumerate(cfg.applications)}
    for path, proto, host, port, derived in backends(cfg):
        if port > 65535:  # only the derived Direct TLS default can be out of range: xmpp on 65535, + 1
            r.fail(path, f"the default (xmpp port + 1) is {port}, not a port: set it")
            continue
        if not _reaches_proxy(host, cfg, bind):
            continue
        for lpath, lproto, lo, hi in own:
            if proto == lproto and lo <= port <= hi:
                name = LISTENER_NAMES.get(lpath) or apps.get(lpath, lpath)
                where = HostPort(str(bind), lo) if lo == hi else f"{HostPort(str(bind), lo)}-{hi}"
                default = " (the default: the xmpp port + 1)" if derived else ""
                r.fail(path, f"points at this proxy's own {name} {where}{default}")
                break


def _reaches_proxy(host: str, cfg: ProxyConfig, bind: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Would a connection to `host` land on a socket bound to `bind`?

    Decided from literals only: the proxy's own fqdn, `localhost` (and names under it, RFC 6761),
    IP addresses. Other DNS names are not resolved here: a check must give the same answer on the
    manager and on every proxy, whatever their resolvers say at that moment.
    """
    host = host.lower().rstrip(".")
    if host == cfg.proxy.fqdn:
        return True
    if host == "localhost" or host.endswith(".localhost"):
        targets: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [
            ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1")]
    else:
        try:
            targets = [ipaddress.ip_address(host.partition("%")[0])]
        except ValueError:
            return False
    for t in targets:
        if isinstance(t, ipaddress.IPv6Address) and t.ipv4_mapped is not None:
            t = t.ipv4_mapped
        if t.is_unspecified:  # connect() to 0.0.0.0 or :: reaches the host's own loopback
            t = ipaddress.ip_address("127.0.0.1" if t.version == 4 else "::1")
        if not bind.is_unspecified:
            if t == bind:
                return True
        # 0.0.0.0 receives on every local address; which addresses are local is not known here, but
        # loopback always is. `::` counts for IPv4 too: a socket bound to it may be dual-stack (Linux's default).
        elif t.is_loopback and (t.version == bind.version or bind.version == 6):
            return True
    return False
