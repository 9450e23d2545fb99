"""Immutable route tables built from the config view, and the routing decision. Sans-IO.

A listener holds one table; reconfigure swaps the table object, so a request sees either the
old or the new table, never a mix. Unknown instances, modes that do not offer a path, and
instances without a web backend all give the same 404: nothing reveals which instances exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol
from urllib.parse import urlsplit

from services.http.rewrite import PrefixRule

if TYPE_CHECKING:
    from services.http.http1 import Head


@dataclass(frozen=True)
class Backend:
    scheme: str
    host: str
    port: int
    base_path: str  # without trailing '/'
    verify: bool = True

    def __post_init__(self) -> None:  # both are read per request
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        object.__setattr__(self, "key", (self.scheme, self.host, self.port, self.verify))
        object.__setattr__(self, "host_header", host if self.port == default else f"{host}:{self.port}")

    @property
    def origins(self) -> tuple[str, str]:
        """The upstream's own origin as it may write it: with the default port left out, and spelled out."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{self.host_header}", f"{self.scheme}://{host}:{self.port}"

    def prefix_rule(self, public: str, mode: str = "rewrite", *, instance: bool = False) -> PrefixRule:
        """The rule mapping `public` (no trailing '/') onto this backend's base path (see rewrite.py)."""
        return PrefixRule(public, self.base_path, mode == "rewrite", instance, self.origins, self.host, instance)

    @classmethod
    def from_url(cls, url: str, verify: bool = True) -> Backend:
        u = urlsplit(url)
        port = u.port or (443 if u.scheme == "https" else 80)
        return cls(u.scheme, u.hostname or "", port, u.path.rstrip("/"), verify)

    key: tuple[str, str, int, bool] = field(init=False, repr=False, compare=False)
    host_header: str = field(init=False, repr=False, compare=False)


@dataclass(slots=True)  # made per request: a frozen dataclass's __init__ costs several times more
class Forward:
    backend: Backend
    path: str  # path + query as sent upstream
    rule: PrefixRule | None  # how the public prefix maps onto the upstream's paths; None: no prefix
    host: str | None  # Host header to send; None keeps the client's
    #: upstream answers (403/404...) the client never sees: they are replaced by `deny.denied()`
    deny: UpstreamDenial | None = None
    instance: str | None = None  # the instance or application it reaches, for the request's log line


@dataclass(frozen=True)
class Redirect:
    location: str
    status: int = 302


@dataclass(frozen=True)
class Refuse:
    status: int
    reason: str = field(compare=False)  # for the log: refusals that look alike on the wire compare equal
    close: bool = False  # the connection closes after it even when the client asked to keep it
    extra: bytes = b""  # further header lines, each ending in CRLF (Retry-After)


class UpstreamDenial(Protocol):
    """A route whose backend's "no such thing" answers must look like the proxy's own denial."""

    statuses: frozenset[int]

    def denied(self, client: str) -> Refuse: ...


Decision = Forward | Redirect | Refuse
NOT_FOUND = Refuse(404, "not found")


class Router(Protocol):
    """What a listener asks per request: where this canonical path (from this client) goes."""

    def route(self, path: str, query: str, client: str = "", head: Head | None = None) -> Decision: ...

    def unreadable(self, reason: str, client: str) -> Refuse:
        """What a path that cannot be read as one canonical path gets (canonical.BadPath)."""
        ...


def non_canonical(reason: str, client: str = "") -> Refuse:
    return Refuse(400, f"non-canonical path: {reason}", close=True)


@dataclass(frozen=True)
class WebTable:
    mode: str  # web_and_rest | rest_only
    redirect_url: str | None
    instances: tuple[tuple[str, Backend], ...]
    #: instance name -> web_prefix_mode, where it is not "rewrite"
    prefix_modes: tuple[tuple[str, str], ...] = ()

    kind: ClassVar[str] = "instance"  # route kind in metrics and the request log (proxyd/events.py)
    unreadable = staticmethod(non_canonical)

    def __post_init__(self) -> None:
        modes = dict(self.prefix_modes)
        object.__setattr__(self, "_by_name", {
            name: (b, b.prefix_rule(f"/{name}", modes.get(name, "rewrite"), instance=True))
            for name, b in self.instances})

    def route(self, path: str, query: str, client: str = "", head: Head | None = None) -> Decision:
        if path == "/":
            return Redirect(self.redirect_url) if self.redirect_url else NOT_FOUND
        name, sep, rest = path[1:].partition("/")  # '/<instance>/<rest...>'
        entry = self._by_name.get(name)  # type: ignore[attr-defined]
        if entry is None:
            return NOT_FOUND
        backend, rule = entry
        if not sep:
            return Redirect(f"/{name}/{query}", 301)  # so the UI's relative links resolve
        rest = "/" + rest
        if self.mode == "rest_only" and not (rest == "/services" or rest.startswith("/services/")):
            return NOT_FOUND
        return Forward(backend, backend.base_path + rest + query, rule, None, None, name)


@dataclass(frozen=True)
class AppTable:
    public_prefix: str
    backend: Backend
    name: str | None = None  # the application's name, for the request log

    kind: ClassVar[str] = "application"
    unreadable = staticmethod(non_canonical)

    def __post_init__(self) -> None:  # an application's upstream never knows the public prefix
        object.__setattr__(self, "_rule", self.backend.prefix_rule(self.public_prefix.rstrip("/")))

    def route(self, path: str, query: str, client: str = "", head: Head | None = None) -> Decision:
        prefix = self.public_prefix
        if not path.startswith(prefix):
            return NOT_FOUND
        b = self.backend
        return Forward(b, b.base_path + "/" + path[len(prefix):] + query, self._rule,  # type: ignore[attr-defined]
                       b.host_header, None, self.name)
