"""What this proxy exposes, and the probes that prove it. Sans-IO: a description, no sockets.

`listing(cfg)` says per listener what is reachable (instances and their modes, applications and
their prefixes, SIP domains, XMPP names, the provisioning mode). `probes(cfg)` are raw requests
an outsider could send to the HTTP listeners, one handful per refusal class (path readings,
authority, override headers, Upgrade, framing) plus the allowed canonical forms, each with the
outcome the config promises. `judge()` compares what a runner observed with that promise; the
runner (`proxyd exposure`) only moves the bytes.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from proxyd.config import ProxyConfig

FORWARDED = "forwarded"  # reached the backend: any answer the proxy did not make itself (or its 502/504)
CLOSED = "closed"  # the connection was closed without an answer (allow_sources)
#: what the proxy itself answers (services/http/proxy.simple_response): a text/plain body "<status> <reason>\n"
_OWN = re.compile(rb"HTTP/1\.1 (\d{3}) ([^\r]*)\r\nContent-Type: text/plain; charset=utf-8\r\n"
                  rb"Content-Length: \d+\r\n(?:[^\r]*\r\n)*\r\n\1 \2\n", re.S)
_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


@dataclass(frozen=True)
class Listener:
    kind: str  # router | application | provisioning | sip | xmpp
    scheme: str  # https | http | sip-udp | sip-tls | xmpp
    host: str  # the address a local runner connects to
    port: int
    reachable: tuple[str, ...]  # one line per thing it lets through

    @property
    def http(self) -> bool:
        return self.scheme in ("http", "https")

    @property
    def name(self) -> str:
        return f"{self.kind} {self.scheme}://{self.host}:{self.port}"


@dataclass(frozen=True)
class Probe:
    listener: Listener
    klass: str  # allowed | path | authority | override | upgrade | framing | denial
    what: str
    request: bytes
    expect: tuple[str, ...]  # FORWARDED, CLOSED, or proxy statuses as strings ("400", "404"...)


def local_address(bind: str) -> str:
    """Where a runner on this host reaches a listener bound to `bind`."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(bind, bind)


def _loopback_allowed(cfg: ProxyConfig, addr: str) -> bool:
    if not cfg.allow_sources:
        return True
    ip = ipaddress.ip_address(addr)
    for entry in cfg.allow_sources:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue  # a DNS name: not resolved here, so not counted as allowing loopback
    return False


def listing(cfg: ProxyConfig) -> list[Listener]:
    host, svc = local_address(cfg.bind), cfg.services
    out: list[Listener] = []
    if svc.web.mode != "off":
        offered = "/<instance>/ (web UI) and /<instance>/services/" if svc.web.mode == "web_and_rest" \
            else "/<instance>/services/ only"
        lines = [f"mode {svc.web.mode}: {offered}; names {', '.join((cfg.proxy.fqdn, *cfg.proxy.aliases))}"]
        lines += [f"instance {i.name}: /{i.name}/ -> {i.web} ({i.web_prefix_mode})" for i in cfg.instances if i.web]
        if svc.web.redirect_url:
            lines.append(f"/ redirects to {svc.web.redirect_url}")
        out.append(Listener("router", "https", host, svc.web.port, tuple(lines)))
    for app in cfg.applications:
        out.append(Listener("application", "https" if app.tls else "http", host, app.port,
                            (f"application {app.name}: {app.public_prefix} -> {app.upstream}",)))
    prov = svc.provisioning
    if prov.mode != "off":
        form = "/p/<token>[/<file>]" if prov.mode == "encrypted" else "/p/<instance>/<mac>[/<file>]"
        names = tuple(f"instance {i.name}: {form}" for i in cfg.instances if i.provisioning)
        out.append(Listener("provisioning", "https", host, prov.https_port, (f"mode {prov.mode}", *names)))
        if prov.mode == "http_and_https":
            out.append(Listener("provisioning", "http", host, prov.http_port, (f"mode {prov.mode}", *names)))
    domains = tuple(f"instance {i.name}: {', '.join(i.sip_domains)}" for i in cfg.instances if i.sip and i.sip_domains)
    if svc.sip.mode != "off" and domains:
        out.append(Listener("sip", "sip-tls", host, svc.sip.tls_port, (f"mode {svc.sip.mode}", *domains)))
    names = tuple(f"instance {i.name}: {', '.join(i.xmpp_domains)}" for i in cfg.instances if i.xmpp and i.xmpp_domains)
    if svc.xmpp.enabled and names:
        out.append(Listener("xmpp", "xmpp", host, svc.xmpp.port, names))
    return out


def _req(target: str, host: str, *extra: str, method: str = "GET", line_end: str = "\r\n") -> bytes:
    head = f"{method} {target} HTTP/1.1{line_end}Host: {host}\r\n" + "".join(e + "\r\n" for e in extra)
    return (head + "Connection: close\r\n\r\n").encode("latin-1")


def _route_probes(li: Listener, allowed: list[str], refused_path: str, host: str, fqdn: str) -> list[Probe]:
    """The classes every routed listener gets: `allowed` are canonical paths the config lets
    through, `refused_path` one it does not (404)."""
    base = allowed[0].rstrip("/")
    out = [Probe(li, "allowed", f"GET {p}", _req(p, host), (FORWARDED,)) for p in allowed]
    out.append(Probe(li, "allowed", f"GET {base}/%7E (escaped unreserved: forwarded canonical)",
                     _req(f"{base}/%7E", host), (FORWARDED,)))
    for what in ("..;/", ".;x/", "%2e%2e/", "%2F", "%5C..%5C", "%25%32%65", "%c0%ae%c0%ae/", "%EF%BC%8E%EF%BC%8E/",
                 "x./", "x%20/", "/"):
        out.append(Probe(li, "path", f"{base}/{what}", _req(f"{base}/{what}x", host), ("400",)))
    out.append(Probe(li, "path", refused_path, _req(refused_path, host), ("404",)))
    if base != base.upper():
        out.append(Probe(li, "path", f"case variant {base.upper()}/", _req(base.upper() + "/", host), ("404",)))
    if fqdn != "localhost":
        out.append(Probe(li, "authority", "Host: localhost", _req(allowed[0], "localhost"), ("421",)))
    out.append(Probe(li, "authority", "userinfo in Host", _req(allowed[0], f"evil@{host}"), ("400",)))
    out.append(Probe(li, "authority", "two Host fields", _req(allowed[0], host, f"Host: {host}"), ("400",)))
    for name in ("X-Original-URL", "X-Rewrite-URL", "X-Override-URL"):
        out.append(Probe(li, "override", f"{name}: {allowed[0]} on {refused_path}",
                         _req(refused_path, host, f"{name}: {allowed[0]}"), ("404",)))
    out.append(Probe(li, "upgrade", "Upgrade: websocket without a handshake",
                     _req(allowed[0], host, "Connection: Upgrade", "Upgrade: websocket"), ("400",)))
    out.append(Probe(li, "upgrade", "Upgrade: h2c (stripped, served as HTTP)",
                     _req(allowed[0], host, "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c",
                          "HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA"), (FORWARDED,)))
    out.append(Probe(li, "framing", "bare LF after the request line", _req(allowed[0], host, line_end="\n"), ("400",)))
    out.append(Probe(li, "framing", "Content-Length with Transfer-Encoding",
                     _req(allowed[0], host, "Content-Length: 4", "Transfer-Encoding: chunked", method="POST"),
                     ("400",)))
    out.append(Probe(li, "framing", "Transfer-Encoding: gzip",
                     _req(allowed[0], host, "Transfer-Encoding: gzip", method="POST"), ("501",)))
    out.append(Probe(li, "framing", "HTTP/2.0 in the request line",
                     _req(allowed[0], host).replace(b"HTTP/1.1", b"HTTP/2.0", 1), ("505",)))
    return out


def probes(cfg: ProxyConfig) -> list[Probe]:
    out: list[Probe] = []
    fqdn = cfg.proxy.fqdn
    for li in listing(cfg):
        if not li.http:
            continue
        found: list[Probe] = []
        if li.kind == "router":
            inst = next((i.name for i in cfg.instances if i.web), None)
            if inst is None:
                continue
            if cfg.services.web.mode == "web_and_rest":
                found = _route_probes(li, [f"/{inst}/", f"/{inst}/services/"], "/pforte-no-such-instance/", fqdn,
                                      fqdn)
            else:
                found = _route_probes(li, [f"/{inst}/services/"], f"/{inst}/", fqdn, fqdn)
        elif li.kind == "application":
            app = next(a for a in cfg.applications if a.port == li.port)
            found = _route_probes(li, [app.public_prefix], "/pforte-outside-the-prefix/", fqdn, fqdn)
        else:  # provisioning: only a few denials, each counts against this host's own limit (20 a minute)
            inst = next((i.name for i in cfg.instances if i.provisioning), "x")
            for what, target in (("unknown token or instance", "/p/pforte-probe-AAAAAAAAAAAAAAAAAAAA"),
                                 ("group-bit MAC", f"/p/{inst}/01005E000001"),
                                 ("an escaped '/'", f"/p/{inst}%2F08C25A4F0321"),
                                 ("path parameter", f"/p/{inst};x/08C25A4F0321")):
                found.append(Probe(li, "denial", what, _req(target, fqdn), ("404",)))
            found.append(Probe(li, "denial", "POST with a body", _req(f"/p/{inst}/08C25A4F0321", fqdn,
                               "Content-Length: 0", method="POST"), ("404",)))
        if not _loopback_allowed(cfg, li.host):
            found = [Probe(p.listener, p.klass, p.what, p.request, (CLOSED,)) for p in found]
        out += found
    return out


def outcome(response: bytes) -> str:
    """What a runner saw: CLOSED, FORWARDED, or the status the proxy answered itself."""
    if not response:
        return CLOSED
    own = _OWN.match(response)
    if own is not None:
        status = own[1].decode()
        return FORWARDED if status in ("502", "504") else status  # the proxy tried the backend
    m = _STATUS.match(response)
    if m is not None and m[1] == b"101":
        return "101"  # a tunnel: never what a probe may get
    return FORWARDED if m is not None else "garbled"


RESULT_FILE = "exposure.json"  # in the state dir: the last self-test, read by the daemon's status
SERVICE_OF = {"router": "http", "application": "http", "provisioning": "provisioning"}


def degraded(result: dict | None, revision: int | None) -> dict[str, str]:
    """service name -> why it is Degraded, from the last self-test of the revision now applied."""
    if not result or result.get("revision") != revision:
        return {}
    out: dict[str, str] = {}
    for f in result.get("failed", []):
        svc = SERVICE_OF.get(str(f.get("listener", "")).split(" ")[0], "http")
        out.setdefault(svc, f"exposure self-test: {f.get('listener')} {f.get('class')} {f.get('what')!r} "
                            f"expected {'/'.join(f.get('expect', []))}, got {f.get('got')}")
    return out


def judge(probe: Probe, response: bytes) -> tuple[bool, str]:
    got = outcome(response)
    return got in probe.expect, got
