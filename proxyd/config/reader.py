"""The one validation pass's tools: `_Reader` walks the raw JSON and collects every problem with
its field path; `ConfigError` carries them; `default_of` reads a default from its dataclass."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from proxyd.config.values import (
    DNS_NAME_RE,
    SIP_TRANSPORTS,
    HostPort,
    SipTarget,
    _cidr,
    _is_ip,
    _split_host_port,
    normalize_sha256_fingerprint,
)

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
        in the section modules' dataclasses (docs/config.md and the manager read them from there too)."""
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


def _fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


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
