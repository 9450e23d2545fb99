"""proxyd's Prometheus metrics, built with `prometheus_client` at scrape time.

Nothing is counted twice: services keep their own counters for `stats()`, and `PforteCollector`
turns the daemon's status (the same dict `/status` shows) into typed families on each scrape,
using the per-service tables in `proxyd.metric_families`. Process metrics (CPU seconds, RSS, open
and max fds) come from prometheus_client's own ProcessCollector.

A stats key no table knows is still exported, as `pforte_<service>_events_total{event=...}`
(counters) or `pforte_<service>_values{key=...}` (gauges), so that a counter added to a service
shows up before it gets a family of its own.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from proxyd.metric_families import (
    TABLES,
    XMPP_INSTANCE_SESSIONS,
    XMPP_REFUSAL_REASONS,
    XMPP_REFUSED,
    Family,
    Rule,
    ServiceTable,
)

# The classic text format, which generate_latest() writes with our (all-ASCII) names; newer
# prometheus_client calls it 1.0.0, which Prometheus before 3.0 does not know.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SERVICE_STATES = ("running", "degraded", "stopped", "failed")  # degraded: running, self-test failing
MANAGER_STATES = ("connecting", "online", "unreachable", "revoked")  # proxyd.agent.runner


class Families:
    """Family objects by name, made on first use; yields them in the order they were made."""

    def __init__(self) -> None:
        self._by_name: dict[str, Metric] = {}

    def get(self, fam: Family) -> Metric:
        m = self._by_name.get(fam.name)
        if m is None:
            cls = _KINDS[fam.kind]
            m = self._by_name[fam.name] = cls(fam.name, fam.help, labels=list(fam.labels))
        return m

    def add(self, fam: Family, labels: tuple[str, ...] | list[str], value: float) -> None:
        m = self.get(fam)
        assert isinstance(m, CounterMetricFamily | GaugeMetricFamily)
        m.add_metric(list(labels), value)

    def add_histogram(self, fam: Family, labels: tuple[str, ...], h: dict[str, Any]) -> None:
        m = self.get(fam)
        assert isinstance(m, HistogramMetricFamily)
        m.add_metric(list(labels), [(str(le), n) for le, n in h["buckets"]], h["sum"])

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._by_name.values())


_KINDS: dict[str, type[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]] = {
    "counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "histogram": HistogramMetricFamily}


class PforteCollector(Collector):
    """Reads `status()` once per scrape and yields every pforte_* family."""

    def __init__(self, status: Callable[[], dict[str, Any]]):
        self.status = status

    def collect(self) -> Iterator[Metric]:
        st = self.status()
        out = Families()
        _daemon(st, out)
        _config(st, out)
        _certificates(st, out)
        _manager(st, out)
        for name, data in st.get("services", {}).items():
            if data.get("state") in ("running", "degraded"):
                _service(name, data, out)
        yield from out


def _g(name: str, help_: str, *labels: str) -> Family:
    return Family(name, "gauge", help_, labels)


def _c(name: str, help_: str, *labels: str) -> Family:
    return Family(name, "counter", help_, labels)


BUILD = _g("pforte_build_info", "proxyd build: version, Python version and uvloop version (none: stdlib loop)",
           "version", "python", "uvloop")
SERVICE_UP = _g("pforte_service_up", "1 when the service is running", "service")
SERVICE_STATE = _g("pforte_service_state", "The service's state: 1 for the current one", "service", "state")
SERVICE_ERROR = _g("pforte_service_apply_error", "1 when the service failed to apply the last revision it was "
                   "given (it keeps its previous view, or is not running)", "service")
ACCESS_REFUSED = _c("pforte_access_refused_connections", "Connections and datagrams refused by the source "
                    "allow-list, by service", "service")
REVISION = _g("pforte_config_revision", "Revision of the configuration being served")
APPLIED_AT = _g("pforte_config_last_apply_timestamp_seconds",
                "When the last configuration was applied (seconds since epoch; 0: never)")
FAILED_AT = _g("pforte_config_last_failed_apply_timestamp_seconds",
               "When a configuration was last rejected or failed to apply (seconds since epoch; 0: never)")
FAILURES = _c("pforte_config_apply_failures", "Configurations rejected as invalid or failed to apply")
CERT_NOT_AFTER = _g("pforte_tls_certificate_not_after_timestamp_seconds",
                    "Expiry of the server certificate (seconds since epoch)", "certificate", "self_signed")
ACME_LAST_ATTEMPT = _g("pforte_acme_last_attempt_timestamp_seconds",
                      "When proxyd last asked the ACME CA for a certificate (seconds since epoch; 0: never)", "name")
ACME_FAILURES = _g("pforte_acme_consecutive_failures", "ACME issuance attempts failed since the last success", "name")
ACME_DEGRADED = _g("pforte_acme_degraded", "1 when ACME renewal keeps failing and the certificate expires "
                   "within 14 days", "name")
ACME_RENEWER = _g("pforte_acme_renewer", "1 for the process the one ACME renewer runs in: parent (the parent of "
                  "--workers N, which fans challenges and certificates out to the workers) or single (one process)",
                  "process")
MANAGER_STATE = _g("pforte_manager_state", "Connection to the manager: 1 for the current state", "state")
MANAGER_HEARTBEAT = _g("pforte_manager_last_heartbeat_timestamp_seconds",
                       "When the manager last accepted a heartbeat (seconds since epoch; 0: never)")
MANAGER_CONTACT = _g("pforte_manager_last_contact_timestamp_seconds",
                     "When the manager last answered any request (seconds since epoch; 0: never)")
MANAGER_HEARTBEATS = _c("pforte_manager_heartbeats", "Heartbeats the manager accepted")
MEDIA_HEADROOM = _g("pforte_media_port_headroom_ratio", "Share of the media port range still free (0..1)")


def _daemon(st: dict[str, Any], out: Families) -> None:
    uvloop = "none"
    if st.get("loop") == "uvloop":
        import uvloop as _uv

        uvloop = _uv.__version__
    out.add(BUILD, (str(st.get("version", "")), platform.python_version(), uvloop), 1)
    services = st.get("services", {})
    refused = st.get("access_refused", {})
    for name, data in services.items():
        state = data.get("state", "stopped")
        out.add(SERVICE_UP, (name,), int(state in ("running", "degraded")))
        for s in SERVICE_STATES:
            out.add(SERVICE_STATE, (name, s), int(state == s))
        out.add(SERVICE_ERROR, (name,), int(bool(data.get("last_error"))))
    for name in dict.fromkeys([*services, *refused]):
        out.add(ACCESS_REFUSED, (name,), refused.get(name, 0))


def _config(st: dict[str, Any], out: Families) -> None:
    if st.get("revision") is not None:
        out.add(REVISION, (), st["revision"])
    out.add(APPLIED_AT, (), st.get("applied_at") or 0)
    out.add(FAILED_AT, (), st.get("failed_at") or 0)
    out.add(FAILURES, (), st.get("apply_failures") or 0)


def _certificates(st: dict[str, Any], out: Families) -> None:
    for cert in st.get("certificates") or []:
        out.add(CERT_NOT_AFTER, (cert["name"], str(bool(cert["self_signed"])).lower()), cert["not_after"])
    acme = st.get("acme") or {}
    for name in acme.get("names", []):
        out.add(ACME_LAST_ATTEMPT, (name,), acme["last_attempt"] or 0)
        out.add(ACME_FAILURES, (name,), acme["failures"])
        out.add(ACME_DEGRADED, (name,), int(bool(acme["degraded"])))
    if acme:
        out.add(ACME_RENEWER, (acme.get("process", "single"),), 1)


def _manager(st: dict[str, Any], out: Families) -> None:
    m = st.get("manager")
    if not m:
        return  # standalone mode: no manager families at all
    for s in MANAGER_STATES:
        out.add(MANAGER_STATE, (s,), int(m.get("state") == s))
    out.add(MANAGER_HEARTBEAT, (), m.get("last_heartbeat_at") or 0)
    out.add(MANAGER_CONTACT, (), m.get("last_contact_at") or 0)
    out.add(MANAGER_HEARTBEATS, (), m.get("heartbeats") or 0)


def _service(name: str, data: dict[str, Any], out: Families) -> None:
    table = TABLES.get(name, ServiceTable((), ()))
    prefix = (name,) if table.service_label else ()
    counters = {**dict.fromkeys(table.known_counters, 0), **data.get("counters", {})}
    _section(name, prefix, counters, table.counters, "counter", out)
    _section(name, prefix, data.get("gauges", {}), table.gauges, "gauge", out)
    for hname, h in data.get("histograms", {}).items():
        fam = (table.histograms or {}).get(hname)
        if fam is None:
            svc = name.replace("-", "_")
            fam = Family(f"pforte_{svc}_{hname}", "histogram", f"{hname} of {name}")
        out.add_histogram(fam, prefix if fam.labels[:1] == ("service",) else (), h)
    if name == "media":
        g = data.get("gauges", {})
        used, free = g.get("ports_in_use", 0), g.get("ports_available", 0)
        out.add(MEDIA_HEADROOM, (), free / (used + free) if used + free else 1.0)
    if name == "xmpp":
        for instance, d in data.get("by_instance", {}).items():
            out.add(XMPP_INSTANCE_SESSIONS, (str(instance),), d.get("active_sessions", 0))
        refused = {**dict.fromkeys(XMPP_REFUSAL_REASONS, 0),
                   **{r: d.get("refusals", 0) for r, d in data.get("by_reason", {}).items()}}
        for reason, n in refused.items():
            out.add(XMPP_REFUSED, (str(reason),), n)


def _section(service: str, prefix: tuple[str, ...], values: dict[str, Any], rules: tuple[Rule, ...],
             kind: str, out: Families) -> None:
    sums: dict[tuple[Family, tuple[str, ...]], float] = {}
    for key, value in values.items():
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, int | float):
            continue
        fam, labels = _match(service, key, rules, kind)
        if fam is None:
            continue
        # two keys may feed one series (several drop counters under one reason): they add up
        k = (fam, (*prefix, *labels) if fam.labels[:1] == ("service",) else labels)
        sums[k] = sums.get(k, 0) + value
    for (fam, labels), value in sums.items():
        out.add(fam, labels, value)


def _match(service: str, key: str, rules: tuple[Rule, ...], kind: str) -> tuple[Family | None, tuple[str, ...]]:
    for rule in rules:
        m = rule.pattern.fullmatch(key)
        if m:
            return rule.family, (*rule.fixed, *m.groups())
    svc = service.replace("-", "_")
    if kind == "counter":
        return _c(f"pforte_{svc}_events", f"Counters of {service} without a family of their own, by name",
                  "event"), (key,)
    return _g(f"pforte_{svc}_values", f"Gauges of {service} without a family of their own, by name", "key"), (key,)


def registry(status: Callable[[], dict[str, Any]]) -> CollectorRegistry:
    """A registry with process/platform/GC metrics and the pforte families read from `status`."""
    reg = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    GCCollector(registry=reg)
    reg.register(PforteCollector(status))
    return reg


def render(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)
