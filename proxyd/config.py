"""ProxyConfig v1: the one contract between manager and proxyd, and the standalone file format.

Parsed and validated here and nowhere else. `parse_config()` collects *every* problem and raises
one `ConfigError` whose `.problems` name the field path of each (`services.sip.mode: expected
one of tls, udp, off`). The manager builds configs through the same `parse_config()` and
serialises them with `ProxyConfig.to_json()`, so no JSON is written by hand anywhere.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from proxyd import wirejson
from proxyd.provisioning_template import problem as template_problem
from proxyd.wirejson import MAX_CONFIG_BYTES

VERSION = 1

EMAIL_RE = re.compile(r"^[^@\s<>,;]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")
# An instance name is the first path segment of the web router and part of provisioning URLs,
# so it must be a plain slug: no encoding questions, no case folding surprises.
INSTANCE_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$")
DNS_NAME_RE = re.compile(
    r"^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$"
)
SIP_TRANSPORTS = ("udp", "tcp", "tls")
HTTP = ("http", "https")
WEB_PREFIX_MODES = ("rewrite", "forward_prefix")
PROVISIONING_MODES = ("encrypted", "https", "http_and_https", "off")
#: key types for the self-signed certificate (the first is the default); many deployed phone
#: firmwares provision and register over RSA only
TLS_KEY_TYPES = ("ecdsa-p256", "rsa-2048", "rsa-3072")
TLS_MODES = ("self-signed", "uploaded", "acme")
ACME_CHALLENGES = ("http-01", "tls-alpn-01", "dns-01")


#: problems named one by one in a ConfigError; a hostile document can make millions of them
MAX_PROBLEMS = 50
_MORE = "(further problems)"  # one shared string: what the reader keeps past MAX_PROBLEMS


class ConfigError(ValueError):
    """A config failed validation; `problems` lists `path: message` strings, the first MAX_PROBLEMS
    of them and then how many more there were."""

    def __init__(self, problems: Iterable[str]):
        listed = list(problems)
        if len(listed) > MAX_PROBLEMS:
            listed = [*listed[:MAX_PROBLEMS], f"... and {len(listed) - MAX_PROBLEMS} more problems"]
        self.problems = listed
        super().__init__("; ".join(self.problems))


# ---------------------------------------------------------------------------- typed object


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
class TlsConfig:
    #: the certificate chain (PEM) of every TLS listener; null with `key_pem` null: a self-signed
    #: certificate for `proxy.fqdn`, made once into the state dir
    certificate_pem: str | None = None
    #: the private key (PEM) matching `certificate_pem`; give both or neither
    key_pem: str | None = None
    #: the self-signed certificate's key, `ecdsa-p256`, `rsa-2048` or `rsa-3072` (many phone firmwares
    #: need RSA); used when no pair is configured; a change makes a new one, new handshakes get it at once
    key_type: str = TLS_KEY_TYPES[0]
    #: `self-signed` (made once for `proxy.fqdn`), `uploaded` (`certificate_pem` + `key_pem`), or
    #: `acme` (issued and renewed by proxyd from `acme_directory`; the key never leaves the proxy);
    #: omitted with a pair given: `uploaded`
    mode: str = TLS_MODES[0]
    #: mode acme: the CA's ACME directory URL (RFC 8555 section 7.1.1)
    acme_directory: str | None = None
    #: mode acme: the account's contact e-mail (the CA writes to it before a certificate expires)
    acme_email: str | None = None
    #: mode acme: further DNS names the certificate covers besides `proxy.fqdn`
    acme_names: tuple[str, ...] = ()
    #: mode acme: the plain-HTTP port the HTTP-01 challenge is answered on, only while an order is
    #: in flight (CAs validate on 80; only /.well-known/acme-challenge/ is answered there)
    acme_http_port: int = 80
    #: mode acme: a CA bundle file (PEM) that verifies the directory's HTTPS; null: the system's
    acme_ca_bundle: str | None = None
    #: mode acme: how the CA checks that the proxy owns the names: `http-01` (a token on
    #: `acme_http_port`), `tls-alpn-01` (RFC 8737, on the HTTPS port `services.web.port`) or
    #: `dns-01` (a TXT record the manager sets through the proxy's DNS account: managed proxies only)
    acme_challenge: str = ACME_CHALLENGES[0]


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class SipTarget:
    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.transport}:{HostPort(self.host, self.port)}"


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


@dataclass(frozen=True)
class Application:
    #: the application's name (unique), used in logs and metrics
    name: str
    #: the public TCP port of the application's own listener
    port: int
    #: the upstream URL that `public_prefix` maps to, e.g. `https://p5.local:8443/procurat/api/v1/`
    upstream: str
    #: the public listener speaks TLS (with the proxy's certificate)
    tls: bool = True
    #: the only public path prefix that is forwarded (starts and ends with `/`); all else is 404
    public_prefix: str = "/api/"
    #: check the upstream's certificate when `upstream` is https
    verify_upstream: bool = True


@dataclass(frozen=True)
class WebLimits:
    """What one client may hold of the HTTP listeners (router, applications, provisioning): each
    number bounds state a client can create (docs/security.md, HTTP limits)."""

    #: client connections one IP address may hold open at once (a browser opens 6 per origin: 256
    #: leaves room for a few dozen users behind one NAT address); more are closed at accept and logged
    connections_per_address: int = 256
    #: client connections of all HTTP listeners together; the effective cap is also at most half of
    #: the process's file limit less a reserve of 1,024, so accept() never hits EMFILE
    connections_total: int = 50_000
    #: seconds a TLS client has from accept to the end of its handshake (asyncio's default is 60);
    #: applies to listeners bound after the change
    tls_handshake_timeout: float = 10.0
    #: seconds a request head has from its first byte (or from connect) until it is whole; then 408
    head_timeout: float = 10.0
    #: seconds a keep-alive connection may sit idle between requests; also the longest stall of a body
    idle_timeout: float = 60.0
    #: seconds a request body may take before the minimum body rate applies
    body_grace: float = 10.0
    #: bytes per second a request body must average after `body_grace`; slower gets 408 (slow POST)
    min_body_rate: int = 1024
    #: requests one backend may have in flight at once (each holds one backend connection)
    backend_connections: int = 1024
    #: requests that may wait, per backend, for one of its `backend_connections`; beyond, 503 with Retry-After
    backend_queue: int = 256
    #: seconds a request may wait in a backend's queue; then 503 with Retry-After
    backend_queue_timeout: float = 5.0
    #: the Retry-After seconds of a 503 for a full backend queue
    retry_after: int = 1


@dataclass(frozen=True)
class WebService:
    #: `web_and_rest` (`/<instance>` and `/<instance>/services`), `rest_only` (only `/<instance>/services`), `off`
    mode: str = "web_and_rest"
    #: the HTTPS router's TCP port
    port: int = 443
    #: where the bare `/` redirects; null: 404
    redirect_url: str | None = None
    #: seconds a backend (instance web/REST, application, provisioning) may take to start its answer; then 504
    upstream_timeout: float = 60.0
    #: connection, deadline and backend-queue limits of every HTTP listener (router, applications, provisioning)
    limits: WebLimits = field(default_factory=WebLimits)


@dataclass(frozen=True)
class SipService:
    #: `tls` (phones connect over TLS on `tls_port`), `udp` (UDP and TCP on `udp_port`), `off`
    mode: str = "tls"
    #: the phone-facing UDP and TCP port in mode udp
    udp_port: int = 5060
    #: the phone-facing TLS port in mode tls
    tls_port: int = 5061
    #: requests per second one source may send before it is blocked for a while (pike); 0: no limit
    rate_limit: int = 300
    #: the address the backend side binds to (the UDP socket and TCP/TLS listeners the PBXs talk to)
    #: and names in its Via, Record-Route and Path towards them; null: the bind address
    backend_bind_address: str | None = None


@dataclass(frozen=True)
class MediaService:
    #: `srtp` (phones' media is SRTP) or `rtp`
    mode: str = "srtp"
    #: the first UDP port of the relay's range (even: RTP even, RTCP the next odd)
    port_min: int = 30000
    #: the last UDP port of the relay's range
    port_max: int = 35000
    #: seconds without packets after which a relayed stream is released
    idle_timeout: float = 60.0
    #: seconds after the answer within which the phone must send one proven packet (RTP/RTCP of
    #: the session, SRTP authenticated), else the call's media is released: ports are not held
    #: by calls that never carry media
    setup_timeout: float = 20.0
    #: m= lines one SDP may have (and so streams one call holds; 2 port pairs each): audio, video
    #: and a few more fit; a body with more is refused with 488 before any port is taken
    max_streams: int = 8
    #: streams held at once by calls offered from one phone IP address (an office behind one
    #: NAT address has many phones); more are refused with 503 and Retry-After
    max_streams_per_source: int = 64
    #: streams held at once by calls to or from one instance's PBX (its SIP host:port): about half
    #: the default range (1,250 streams), so one tenant's flood or runaway PBX leaves the others
    #: room; more are refused with 503 and Retry-After
    max_streams_per_instance: int = 600
    #: forward latched, untransformed streams (RTP, SRTP passthrough) in the kernel with nftables
    #: (table `inet pforte_media`); needs CAP_NET_ADMIN and net.ipv4.ip_forward=1, else (or false)
    #: every packet stays in userspace and `proxyd status` says why
    kernel_offload: bool = True
    #: the address written into SDP towards peers; null: the bind address (or `proxy.fqdn`'s address)
    public_address: str | None = None


@dataclass(frozen=True)
class ProvisioningService:
    #: `encrypted` (`/p/<token>` only), `https` (`/p/<instance>/<mac>` over TLS), `http_and_https`, `off`
    mode: str = "encrypted"
    #: the provisioning TLS port
    https_port: int = 8884
    #: the plain HTTP port (mode http_and_https only)
    http_port: int = 8880
    #: base64 of 32 random bytes: the key of the encrypted device URLs (required in mode encrypted);
    #: changing it invalidates every URL made with the old one
    key: str | None = None


@dataclass(frozen=True)
class XmppService:
    #: pass XMPP through to the instances' servers
    enabled: bool = True
    #: the client port (STARTTLS streams, routed by the stream header's `to`)
    port: int = 5222
    #: the XEP-0368 Direct TLS port (routed by SNI)
    direct_tls_port: int = 5223


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
class Network:
    #: `auto` (the host's network as it is; one proxy per host) or `manual` (the fields below, applied by netconf)
    mode: str = "auto"
    #: manual: the NIC the proxy owns
    interface: str | None = None
    #: manual: the NIC's address with prefix length (CIDR), e.g. `10.5.6.100/24`; listeners bind to it
    address: str | None = None
    #: manual: the default gateway, a neighbour inside `address`'s network
    gateway: str | None = None
    #: manual: the routing table for the proxy's traffic (1..2^31-1, not 253-255)
    table: int | None = None


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


def normalize_sha256_fingerprint(text: str) -> str | None:
    """A certificate's SHA-256 fingerprint, hex with or without colons, as "AB:CD:..."; None if it is none."""
    digits = text.strip().replace(":", "").upper()
    if len(digits) != 64 or any(c not in "0123456789ABCDEF" for c in digits):
        return None
    return ":".join(digits[i:i + 2] for i in range(0, 64, 2))


# ---------------------------------------------------------------------------- parsing

T = TypeVar("T")
_MISSING = object()


class _Reader:
    """Walks the raw JSON collecting problems with their field paths."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, path: str, msg: str) -> None:
        if len(self.problems) >= MAX_PROBLEMS:
            self.problems.append(_MORE)  # still counted (callers compare lengths), costs one pointer
            return
        line = f"{path or '(top level)'}: {msg}"
        # field names and values are whatever the document says: keep a log line a line
        self.problems.append(line if len(line) <= 300 else line[:300] + "...")

    def obj(self, raw: Any, path: str, allowed: Iterable[str]) -> dict[str, Any]:
        if not isinstance(raw, dict):
            self.fail(path, "expected an object")
            return {}
        for key in raw:
            if key not in allowed:
                self.fail(f"{path}.{key}" if path else key, "unknown field")
        return raw

    def get(
        self,
        d: dict[str, Any],
        path: str,
        key: str,
        check: Callable[[Any, str], T | None],
        default: Any = _MISSING,
    ) -> Any:
        """The checked value, the default when absent, or None after recording a problem."""
        p = f"{path}.{key}" if path else key
        if key not in d:
            if default is _MISSING:
                self.fail(p, "required")
                return None
            return default
        return check(d[key], p)

    def field(self, d: dict[str, Any], path: str, cls: type, key: str, check: Callable[[Any, str], T | None]) -> Any:
        """`get` with the default the dataclass `cls` declares for `key`: defaults are written once,
        in the dataclasses above (docs/config.md and the manager read them from there too)."""
        return self.get(d, path, key, check, default_of(cls, key))

    # scalar checks -------------------------------------------------------------------
    def boolean(self, v: Any, p: str) -> bool | None:
        if isinstance(v, bool):
            return v
        self.fail(p, "expected true or false")
        return None

    def integer(self, v: Any, p: str, lo: int, hi: int) -> int | None:
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(p, "expected an integer")
            return None
        if not lo <= v <= hi:
            self.fail(p, f"expected {lo}..{hi}, got {v}")
            return None
        return v

    def port(self, v: Any, p: str) -> int | None:
        return self.integer(v, p, 1, 65535)

    def number(self, v: Any, p: str, lo: float, hi: float) -> float | None:
        if isinstance(v, bool) or not isinstance(v, int | float):
            self.fail(p, "expected a number")
            return None
        if not lo <= v <= hi:
            self.fail(p, f"expected {lo}..{hi}, got {v}")
            return None
        return float(v)

    def string(self, v: Any, p: str, *, nullable: bool = False) -> str | None:
        if v is None and nullable:
            return None
        if not isinstance(v, str) or not v:
            self.fail(p, "expected a non-empty string" + (" or null" if nullable else ""))
            return None
        return v

    def choice(self, v: Any, p: str, options: tuple[str, ...]) -> str | None:
        if v not in options:
            self.fail(p, "expected one of " + ", ".join(options))
            return None
        return str(v)

    def ip(self, v: Any, p: str, *, nullable: bool = False) -> str | None:
        s = self.string(v, p, nullable=nullable)
        if s is None:
            return None
        try:
            return str(ipaddress.ip_address(s))
        except ValueError:
            self.fail(p, f"expected an IP address, got {s!r}")
            return None

    def dns_name(self, v: Any, p: str) -> str | None:
        s = self.string(v, p)
        if s is None:
            return None
        if _is_ip(s) or DNS_NAME_RE.match(s):
            return s.lower().rstrip(".")
        self.fail(p, f"expected a DNS name or IP address, got {s!r}")
        return None

    def url(self, v: Any, p: str, *, schemes: tuple[str, ...], nullable: bool = False) -> str | None:
        s = self.string(v, p, nullable=nullable)
        if s is None:
            return None
        try:
            parts = urlsplit(s)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            self.fail(p, f"invalid URL: {exc}")
            return None
        if parts.scheme not in schemes or not parts.hostname:
            self.fail(p, f"expected an absolute {'/'.join(schemes)} URL, got {s!r}")
            return None
        if any(c.isspace() or ord(c) < 0x20 for c in s):
            self.fail(p, "URL contains whitespace or control characters")
            return None
        return s

    def host_port(self, v: Any, p: str) -> HostPort | None:
        s = self.string(v, p, nullable=True)
        if s is None:
            return None
        hp = _split_host_port(s)
        if hp is None:
            self.fail(p, f"expected host:port, got {s!r}")
        return hp

    def sip_target(self, v: Any, p: str) -> SipTarget | None:
        s = self.string(v, p, nullable=True)
        if s is None:
            return None
        transport, _, rest = s.partition(":")
        hp = _split_host_port(rest) if transport in SIP_TRANSPORTS else None
        if hp is None:
            self.fail(p, f"expected (udp|tcp|tls):host:port, got {s!r}")
            return None
        return SipTarget(transport, hp.host, hp.port)

    def sha256_fingerprint(self, v: Any, p: str) -> str | None:
        s = self.string(v, p, nullable=True)
        if s is None:
            return None
        norm = normalize_sha256_fingerprint(s)
        if norm is None:
            self.fail(p, "expected a SHA-256 fingerprint: 64 hex digits, colons allowed")
        return norm

    def str_list(self, v: Any, p: str, item: Callable[[Any, str], str | None]) -> tuple[str, ...]:
        if not isinstance(v, list):
            self.fail(p, "expected a list")
            return ()
        out = [item(x, f"{p}[{i}]") for i, x in enumerate(v)]
        return tuple(x for x in out if x is not None)


def default_of(cls: type, key: str) -> Any:
    """The default a config dataclass declares for one of its fields (a required field has none)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == key)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise KeyError(f"{cls.__name__}.{key} is required: it has no default")


def _is_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
    except ValueError:
        return False
    return True


def _split_host_port(s: str) -> HostPort | None:
    if s.startswith("["):
        host, sep, rest = s[1:].partition("]:")
        if not sep or not _is_ip(host):
            return None
    else:
        host, sep, rest = s.rpartition(":")
        if not sep or not host or ":" in host:
            return None
        if not (_is_ip(host) or DNS_NAME_RE.match(host)):
            return None
    if not rest.isdigit() or not 1 <= int(rest) <= 65535:
        return None
    return HostPort(host, int(rest))


def _fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


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


def _cidr(s: str) -> str | None:
    """`s` as a normalised network (an address alone is its /32 or /128), or None."""
    try:
        return str(ipaddress.ip_network(s, strict=False))
    except ValueError:
        return None


def _network(r: _Reader) -> Callable[[Any, str], str | None]:
    """A CIDR, never a name."""
    def check(v: Any, p: str) -> str | None:
        s = r.string(v, p)
        if s is None:
            return None
        net = _cidr(s)
        if net is None:
            r.fail(p, f"expected a CIDR such as 10.0.0.0/24, got {s!r}")
        return net

    return check


def _source(r: _Reader) -> Callable[[Any, str], str | None]:
    def check(v: Any, p: str) -> str | None:
        s = r.string(v, p)
        if s is None:
            return None
        if (net := _cidr(s)) is not None:
            return net
        if DNS_NAME_RE.match(s):
            return s.lower().rstrip(".")
        r.fail(p, f"expected a CIDR or DNS name, got {s!r}")
        return None

    return check


def _parse_list(r: _Reader, top: dict[str, Any], key: str, item: Callable[..., T | None]) -> list[T]:
    raw = top.get(key, [])
    if not isinstance(raw, list):
        r.fail(key, "expected a list")
        return []
    out = [item(r, x, f"{key}[{i}]") for i, x in enumerate(raw)]
    return [x for x in out if x is not None]


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


def _parse_tls(r: _Reader, raw: Any) -> TlsConfig | None:
    if raw is None:
        return TlsConfig()
    d = r.obj(raw, "tls", _fields(TlsConfig))
    cert = r.field(d, "tls", TlsConfig, "certificate_pem", lambda v, p: r.string(v, p, nullable=True))
    key = r.field(d, "tls", TlsConfig, "key_pem", lambda v, p: r.string(v, p, nullable=True))
    kind = r.field(d, "tls", TlsConfig, "key_type", lambda v, p: r.choice(v, p, TLS_KEY_TYPES))
    if isinstance(d, dict) and "mode" not in d and cert is not None:
        d = {**d, "mode": "uploaded"}  # v1 configs said `uploaded` by giving the pair
    mode = r.field(d, "tls", TlsConfig, "mode", lambda v, p: r.choice(v, p, TLS_MODES))
    directory = r.field(d, "tls", TlsConfig, "acme_directory",
                        lambda v, p: r.url(v, p, schemes=("https",), nullable=True))
    email = r.field(d, "tls", TlsConfig, "acme_email", lambda v, p: r.string(v, p, nullable=True))
    names = r.field(d, "tls", TlsConfig, "acme_names", lambda v, p: r.str_list(v, p, r.dns_name))
    http_port = r.field(d, "tls", TlsConfig, "acme_http_port", r.port)
    bundle = r.field(d, "tls", TlsConfig, "acme_ca_bundle", lambda v, p: r.string(v, p, nullable=True))
    challenge = r.field(d, "tls", TlsConfig, "acme_challenge", lambda v, p: r.choice(v, p, ACME_CHALLENGES))
    if kind is None or mode is None or challenge is None:
        return None
    if (cert is None) != (key is None):
        r.fail("tls", "certificate_pem and key_pem go together: give both or neither")
        return None
    if mode == "uploaded" and cert is None:
        r.fail("tls.certificate_pem", "mode uploaded needs certificate_pem and key_pem")
        return None
    if mode != "uploaded" and cert is not None:
        r.fail("tls.mode", f"mode {mode} makes its own certificate: give no certificate_pem/key_pem")
        return None
    if mode == "acme" and directory is None:
        r.fail("tls.acme_directory", "mode acme needs the CA's directory URL")
        return None
    if email is not None and not EMAIL_RE.match(email):
        r.fail("tls.acme_email", f"expected an e-mail address, got {email!r}")
        return None
    if any(_is_ip(n) for n in names):
        r.fail("tls.acme_names", "ACME certificates are for DNS names, not IP addresses")
        return None
    if cert is not None and key is not None:
        from proxyd.tls import check_pair  # cryptography import only when a cert is given

        problem = check_pair(cert, key)
        if problem:
            r.fail("tls.certificate_pem", problem)
            return None
    return TlsConfig(cert, key, kind, mode, directory, email, tuple(names or ()), http_port or 80, bundle, challenge)


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


def _parse_application(r: _Reader, raw: Any, path: str) -> Application | None:
    d = r.obj(raw, path, _fields(Application))
    n0 = len(r.problems)
    name = r.get(d, path, "name", r.string)
    port = r.get(d, path, "port", r.port)
    tls = r.field(d, path, Application, "tls", r.boolean)
    prefix = r.field(d, path, Application, "public_prefix", r.string)
    if prefix is not None and not (prefix.startswith("/") and prefix.endswith("/")):
        r.fail(f"{path}.public_prefix", "expected a path that starts and ends with '/'")
    upstream = r.get(d, path, "upstream", lambda v, p: r.url(v, p, schemes=("http", "https")))
    verify = r.field(d, path, Application, "verify_upstream", r.boolean)
    if len(r.problems) > n0:
        return None
    assert name and port and upstream and prefix
    return Application(name, port, upstream, bool(tls), prefix, bool(verify))


def _parse_services(r: _Reader, raw: Any) -> Services | None:
    d = r.obj(raw, "services", _fields(Services))
    n0 = len(r.problems)

    def sub(key: str, allowed: tuple[str, ...]) -> tuple[dict[str, Any], str]:
        path = f"services.{key}"
        return r.obj(d.get(key, {}), path, allowed), path

    w, p = sub("web", _fields(WebService))
    web = WebService(
        mode=r.field(w, p, WebService, "mode", lambda v, q: r.choice(v, q, ("web_and_rest", "rest_only", "off"))),
        port=r.field(w, p, WebService, "port", r.port),
        redirect_url=r.field(w, p, WebService, "redirect_url", lambda v, q: r.url(v, q, schemes=HTTP, nullable=True)),
        upstream_timeout=r.field(w, p, WebService, "upstream_timeout", lambda v, q: r.number(v, q, 1, 3600)),
        limits=_parse_web_limits(r, w.get("limits", {}), f"{p}.limits"),
    )
    s, p = sub("sip", _fields(SipService))
    sip = SipService(
        mode=r.field(s, p, SipService, "mode", lambda v, q: r.choice(v, q, ("tls", "udp", "off"))),
        udp_port=r.field(s, p, SipService, "udp_port", r.port),
        tls_port=r.field(s, p, SipService, "tls_port", r.port),
        rate_limit=r.field(s, p, SipService, "rate_limit", lambda v, q: r.integer(v, q, 0, 1_000_000)),
        backend_bind_address=r.field(s, p, SipService, "backend_bind_address", lambda v, q: r.ip(v, q, nullable=True)),
    )
    m, p = sub("media", _fields(MediaService))
    media = MediaService(
        mode=r.field(m, p, MediaService, "mode", lambda v, q: r.choice(v, q, ("srtp", "rtp"))),
        port_min=r.field(m, p, MediaService, "port_min", r.port),
        port_max=r.field(m, p, MediaService, "port_max", r.port),
        idle_timeout=r.field(m, p, MediaService, "idle_timeout", lambda v, q: r.number(v, q, 1, 86400)),
        setup_timeout=r.field(m, p, MediaService, "setup_timeout", lambda v, q: r.number(v, q, 1, 3600)),
        max_streams=r.field(m, p, MediaService, "max_streams", lambda v, q: r.integer(v, q, 1, 64)),
        max_streams_per_source=r.field(m, p, MediaService, "max_streams_per_source",
                                       lambda v, q: r.integer(v, q, 1, 100_000)),
        max_streams_per_instance=r.field(m, p, MediaService, "max_streams_per_instance",
                                         lambda v, q: r.integer(v, q, 1, 100_000)),
        kernel_offload=r.field(m, p, MediaService, "kernel_offload", r.boolean),
        public_address=r.field(m, p, MediaService, "public_address", lambda v, q: r.ip(v, q, nullable=True)),
    )
    if isinstance(media.port_min, int) and isinstance(media.port_max, int):
        if media.port_min % 2:
            r.fail(f"{p}.port_min", "expected an even port (RTP uses even ports, RTCP the next odd)")
        if media.port_max - media.port_min < 1:
            r.fail(f"{p}.port_max", "expected port_max > port_min (at least one RTP/RTCP pair)")
    v, p = sub("provisioning", _fields(ProvisioningService))
    prov = ProvisioningService(
        mode=r.field(v, p, ProvisioningService, "mode", lambda x, q: r.choice(x, q, PROVISIONING_MODES)),
        https_port=r.field(v, p, ProvisioningService, "https_port", r.port),
        http_port=r.field(v, p, ProvisioningService, "http_port", r.port),
        key=r.field(v, p, ProvisioningService, "key", lambda x, q: _prov_key(r, x, q)),
    )
    if prov.mode == "encrypted" and prov.key is None and not any(
        x.startswith(f"{p}.key:") for x in r.problems
    ):
        r.fail(f"{p}.key", "required when mode is encrypted (base64 of 32 random bytes)")
    x, p = sub("xmpp", _fields(XmppService))
    xmpp = XmppService(
        enabled=r.field(x, p, XmppService, "enabled", r.boolean),
        port=r.field(x, p, XmppService, "port", r.port),
        direct_tls_port=r.field(x, p, XmppService, "direct_tls_port", r.port),
    )
    if len(r.problems) > n0:
        return None
    return Services(web=web, sip=sip, media=media, provisioning=prov, xmpp=xmpp)


def _parse_web_limits(r: _Reader, raw: Any, p: str) -> WebLimits:
    d = r.obj(raw, p, _fields(WebLimits))

    def num(key: str, lo: float, hi: float) -> Any:
        return r.field(d, p, WebLimits, key, lambda v, q: r.number(v, q, lo, hi))

    def count(key: str, lo: int, hi: int) -> Any:
        return r.field(d, p, WebLimits, key, lambda v, q: r.integer(v, q, lo, hi))

    return WebLimits(
        connections_per_address=count("connections_per_address", 1, 1_000_000),
        connections_total=count("connections_total", 64, 1_000_000),
        tls_handshake_timeout=num("tls_handshake_timeout", 1, 300),
        head_timeout=num("head_timeout", 1, 300),
        idle_timeout=num("idle_timeout", 1, 3600),
        body_grace=num("body_grace", 0, 3600),
        min_body_rate=count("min_body_rate", 1, 10**9),
        backend_connections=count("backend_connections", 1, 100_000),
        backend_queue=count("backend_queue", 0, 100_000),
        backend_queue_timeout=num("backend_queue_timeout", 0.1, 300),
        retry_after=count("retry_after", 1, 3600),
    )


def _prov_key(r: _Reader, v: Any, p: str) -> str | None:
    s = r.string(v, p, nullable=True)
    if s is None:
        return None
    import base64
    import binascii

    try:
        raw = base64.urlsafe_b64decode(s.encode()) if ("-" in s or "_" in s) else base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        r.fail(p, "expected base64")
        return None
    if len(raw) != 32:
        r.fail(p, f"expected 32 bytes of key material, got {len(raw)}")
        return None
    return s


def _parse_network(r: _Reader, raw: Any) -> Network | None:
    d = r.obj(raw, "network", _fields(Network))
    n0 = len(r.problems)
    mode = r.field(d, "network", Network, "mode", lambda v, p: r.choice(v, p, ("auto", "manual")))
    if mode == "auto":
        for key in ("interface", "address", "gateway", "table"):
            if d.get(key) is not None:
                r.fail(f"network.{key}", "only allowed in mode manual")
        return Network() if len(r.problems) == n0 else None
    iface = r.get(d, "network", "interface", r.string)
    if iface is not None and not re.match(r"^[A-Za-z0-9_.:-]{1,15}$", iface):
        r.fail("network.interface", f"invalid interface name {iface!r}")
    address = r.get(d, "network", "address", r.string)
    gateway = r.get(d, "network", "gateway", r.ip)
    table = r.get(d, "network", "table", lambda v, p: r.integer(v, p, 1, 2**31 - 1))
    if table in (253, 254, 255):
        r.fail("network.table", "tables 253-255 are the kernel's default/main/local")
    iface_net = None
    if address is not None:
        try:
            iface_net = ipaddress.ip_interface(address)
            if "/" not in address:
                raise ValueError("missing prefix length")
        except ValueError as exc:
            r.fail("network.address", f"expected an address with prefix (CIDR), e.g. 10.5.6.100/24: {exc}")
    if iface_net is not None and gateway is not None:
        gw = ipaddress.ip_address(gateway)
        if gw not in iface_net.network or gw == iface_net.ip:
            r.fail("network.gateway", f"{gateway} is not a neighbour inside {iface_net.network}")
    if len(r.problems) > n0:
        return None
    return Network(mode="manual", interface=iface, address=address, gateway=gateway, table=table)


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


# ---------------------------------------------------------------------------- files


def load_file(path: str | Path) -> ProxyConfig:
    """Read and validate a standalone config file (JSON), read no further than the size bound."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from exc
    return loads(data, source=str(path))


def loads(text: str | bytes, *, source: str = "config") -> ProxyConfig:
    """Decode within the wire bounds (size, depth), then validate: one ConfigError for any problem."""
    try:
        raw = wirejson.decode(text)
    except wirejson.WireJsonError as exc:
        raise ConfigError([f"{source}: {exc}"]) from exc
    return parse_config(raw)
