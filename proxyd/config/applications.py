"""`applications[]`: on-premises applications of which only one path prefix is exposed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxyd.config.reader import _fields, _Reader


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
