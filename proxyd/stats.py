"""What a service reports about itself, typed: `ServiceStats` is made by each service's
`report()`; `ServiceStatus` adds what the supervisor and daemon know about it (state, last
error, a failing self-test). `/status` shows them as JSON (`to_json`), and the readers of that
JSON — `/metrics`, the workers' parent that sums its workers, the manager reading heartbeats —
turn it back with `from_json`, so every reader sees the same fields with the same types.

The JSON shape is the one `/status` always had: `listeners`, `counters`, `gauges`, `histograms`,
then per-key tables (`by_instance`, `by_reason`) and service-specific detail at the top level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: the states a service can be in (degraded: running while its exposure self-test fails)
STATES = ("running", "degraded", "stopped", "failed")
#: keys of a status entry that are the supervisor's, not the service's
_STATUS_KEYS = ("state", "last_error", "degraded", "stats_error", "workers")


@dataclass
class ServiceStats:
    #: "<proto>://<address>:<port>" per listening socket
    listeners: list[str] = field(default_factory=list)
    #: monotonically increasing counts (Prometheus counters)
    counters: dict[str, int] = field(default_factory=dict)
    #: values that go up and down, and configured limits (Prometheus gauges)
    gauges: dict[str, float] = field(default_factory=dict)
    #: `proxyd.service.Histogram.to_json()` by name
    histograms: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: tables by a key other than the service, e.g. `by_instance` -> {instance: {gauge: value}}
    breakdowns: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    #: JSON-able detail for `/status` readers only (media's offload state, a sample of streams)
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"listeners": list(self.listeners), "counters": dict(self.counters),
                               "gauges": dict(self.gauges)}
        if self.histograms:
            out["histograms"] = dict(self.histograms)
        out.update(self.breakdowns)
        out.update(self.detail)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServiceStats:
        """The inverse of `to_json`, lenient: a key of the wrong type (a newer or older proxyd) is
        left out rather than failing the reader; supervisor keys are ignored."""
        def table(key: str) -> dict[str, Any]:
            value = data.get(key)
            return dict(value) if isinstance(value, dict) else {}

        listeners = data.get("listeners")
        out = cls(listeners=[str(x) for x in listeners] if isinstance(listeners, list) else [],
                  counters={k: v for k, v in table("counters").items() if _number(v)},
                  gauges={k: v for k, v in table("gauges").items() if _number(v)},
                  histograms={k: v for k, v in table("histograms").items() if isinstance(v, dict)})
        known = ("listeners", "counters", "gauges", "histograms", *_STATUS_KEYS)
        for key, value in data.items():
            if key in known:
                continue
            if key.startswith("by_") and isinstance(value, dict):
                out.breakdowns[key] = {str(k): v for k, v in value.items() if isinstance(v, dict)}
            else:
                out.detail[key] = value
        return out


@dataclass
class ServiceStatus:
    """One service as `/status` shows it."""

    state: str
    stats: ServiceStats = field(default_factory=ServiceStats)
    #: why the last start or reconfigure of this service failed (it keeps its previous view)
    last_error: str | None = None
    #: why its exposure self-test fails for the applied revision (state `degraded`)
    degraded: str | None = None
    #: the service's report() raised: status still answers, saying so
    stats_error: str | None = None
    #: how many workers run it (a parent's merged status only)
    workers: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, **self.stats.to_json()}
        for key in ("last_error", "degraded", "stats_error", "workers"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServiceStatus:
        def text(key: str) -> str | None:
            value = data.get(key)
            return str(value) if value else None

        state = data.get("state")
        workers = data.get("workers")
        return cls(state=state if state in STATES else "stopped", stats=ServiceStats.from_json(data),
                   last_error=text("last_error"), degraded=text("degraded"), stats_error=text("stats_error"),
                   workers=workers if isinstance(workers, int) and not isinstance(workers, bool) else None)

    @property
    def problem(self) -> str | None:
        """What an operator must look at for this service, or None."""
        if self.state == "failed":
            return f"failed to start: {self.last_error or 'not running'}"
        return self.last_error or self.degraded


def _number(v: Any) -> bool:
    return isinstance(v, int | float)  # a bool counts as 0/1, as Prometheus would show it
