"""ProxyConfig v1: the one contract between manager and proxyd, and the standalone file format.

Parsed and validated here and nowhere else. `parse_config()` collects *every* problem and raises
one `ConfigError` whose `.problems` name the field path of each (`services.sip.mode: expected
one of tls, udp, off`). The manager builds configs through the same `parse_config()` and
serialises them with `ProxyConfig.to_json()`, so no JSON is written by hand anywhere.

One module per section of the document, each with its dataclass (the one place of its fields'
defaults and meanings, see docs/config.md) and the part of the one validation pass that reads it:

- `proxy`: the top level (`ProxyConfig`, `proxy`, `services`) and `parse_config()`
- `tls`, `instances`, `applications`, `network`: the top-level sections of those names
- `web`, `sip`, `media`, `provisioning`, `xmpp`: the sections under `services`
- `checks`: the rules across sections (names, domains, ports, loops into the proxy itself)
- `reader`: the problems with their field paths, `ConfigError`, the scalar checks, `default_of`
- `values`: the address-like values (`HostPort`, `SipTarget`) and pure checks on them
- `files`: reading a file or text within the wire bounds

Everything is imported from here (`from proxyd.config import ProxyConfig`); the modules are the
package's own layout.
"""

from proxyd.config.applications import Application
from proxyd.config.checks import LISTENER_NAMES, acme_http_listener, backends, listeners, plain_http_ports
from proxyd.config.files import load_file, loads
from proxyd.config.instances import INSTANCE_NAME_RE, WEB_PREFIX_MODES, Instance
from proxyd.config.media import MediaService
from proxyd.config.network import Network
from proxyd.config.provisioning import PROVISIONING_MODES, ProvisioningService
from proxyd.config.proxy import VERSION, ProxyConfig, ProxyInfo, Services, parse_config
from proxyd.config.reader import MAX_PROBLEMS, ConfigError, default_of
from proxyd.config.sip import SipService
from proxyd.config.tls import ACME_CHALLENGES, EMAIL_RE, TLS_KEY_TYPES, TLS_MODES, TlsConfig
from proxyd.config.values import DNS_NAME_RE, SIP_TRANSPORTS, HostPort, SipTarget, normalize_sha256_fingerprint
from proxyd.config.web import HTTP, WebLimits, WebService
from proxyd.config.xmpp import XmppService

__all__ = [
    "ACME_CHALLENGES", "DNS_NAME_RE", "EMAIL_RE", "HTTP", "INSTANCE_NAME_RE", "LISTENER_NAMES", "MAX_PROBLEMS",
    "PROVISIONING_MODES", "SIP_TRANSPORTS", "TLS_KEY_TYPES", "TLS_MODES", "VERSION", "WEB_PREFIX_MODES",
    "Application", "ConfigError", "HostPort", "Instance", "MediaService", "Network", "ProvisioningService",
    "ProxyConfig", "ProxyInfo", "SipService", "SipTarget", "Services", "TlsConfig", "WebLimits", "WebService",
    "XmppService", "acme_http_listener", "backends", "default_of", "listeners", "load_file", "loads",
    "normalize_sha256_fingerprint", "parse_config", "plain_http_ports",
]
