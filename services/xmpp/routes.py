"""Where an XMPP stream goes: the immutable route table the service swaps in on reconfigure."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    instance: str
    host: str
    port: int
    direct_host: str
    direct_port: int
    proxy_protocol: bool


@dataclass(frozen=True)
class RouteTable:
    domains: tuple[tuple[str, Route], ...] = ()
    default: Route | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "_map", dict(self.domains))

    def by_domain(self, domain: str | None) -> Route | None:
        return self._map.get(domain.lower()) if domain else None  # type: ignore[attr-defined]
