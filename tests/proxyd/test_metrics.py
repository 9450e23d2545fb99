"""The collector turns a status dict into typed, documented families at scrape time."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxyd import metrics
from proxyd.access import AccessList
from proxyd.config import ProxyConfig, parse_config
from proxyd.service import Histogram, Service, ServiceContext, ServiceError
from proxyd.statedir import StateDir
from proxyd.supervisor import ApplyError, Supervisor
from proxyd.tls import CertStore
from tests.support import base_config, require_peer


def status(**over: Any) -> dict[str, Any]:
    st: dict[str, Any] = {
        "version": "9.9.9", "loop": "asyncio", "revision": 7, "applied_at": 1700000000.5,
        "failed_at": None, "apply_failures": 0, "access_refused": {"sip": 3},
        "certificates": [{"name": "server", "fingerprint": "AB", "self_signed": False, "not_after": 1800000000.0}],
        "services": {
            "http": {"state": "running", "counters": {"requests": 5, "refused_400": 2, "responses_2xx": 3},
                     "gauges": {"active_connections": 1}},
            "provisioning": {"state": "running", "counters": {"refused_429": 1, "source_blocks": 1},
                             "gauges": {"blocked_sources": 1}},
            "sip": {"state": "running", "counters": {"backend_down_drops": 2, "framing_errors": 1,
                                                     "dropped_too_large": 4, "brand_new_counter": 9},
                    "gauges": {"dialogs": 2}},
            "media": {"state": "running", "counters": {"packets_from_phone": 10},
                      "gauges": {"ports_in_use": 25, "ports_available": 75},
                      "streams": [{"call_id": "secret-call-id@10.1.2.3", "rtp_phone": {"latched": "10.1.2.3:4000"}}]},
            "xmpp": {"state": "failed", "last_error": "revision 7: port in use"},
        },
    }
    st.update(over)
    return st


def scrape(st: dict[str, Any]) -> str:
    return metrics.render(metrics.registry(lambda: st)).decode()


def values(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def v(text: str, name: str, **labels: str) -> float:
    return values(text)[(name, frozenset(labels.items()))]


def test_promtool_has_no_remark_on_any_family() -> None:
    promtool = require_peer("promtool")
    manager = {"state": "online", "heartbeats": 4, "last_heartbeat_at": 1700000100.0, "last_contact_at": 1.0}
    text = scrape(status(manager=manager, failed_at=1700000050.0, apply_failures=2))
    res = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", ""), text


def test_every_family_is_typed_with_help_and_counters_end_in_total() -> None:
    fams = list(text_string_to_metric_families(scrape(status())))
    pforte = [f for f in fams if f.name.startswith("pforte_")]
    assert len(pforte) > 30
    for fam in pforte:
        assert fam.type in ("counter", "gauge"), fam.name
        assert fam.documentation, fam.name
        for s in fam.samples:
            assert s.name.endswith("_total") == (fam.type == "counter"), s.name
    names = {f.name for f in fams}
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds", "process_max_fds"} <= names


def test_keys_become_labelled_series_and_known_keys_start_at_zero() -> None:
    text = scrape(status())
    assert v(text, "pforte_http_requests_total", service="http") == 5
    assert v(text, "pforte_http_refused_requests_total", service="http", code="400") == 2
    assert v(text, "pforte_http_refused_requests_total", service="http", code="404") == 0  # known up front
    assert v(text, "pforte_http_responses_total", service="http", code_class="5xx") == 0
    assert v(text, "pforte_http_responses_total", service="provisioning", code_class="2xx") == 0
    assert v(text, "pforte_http_refused_requests_total", service="provisioning", code="429") == 1
    assert v(text, "pforte_provisioning_blocked_sources", service="provisioning") == 1
    assert v(text, "pforte_sip_messages_dropped_total", reason="too_large") == 4
    assert v(text, "pforte_sip_messages_dropped_total", reason="backend_down") == 2
    assert v(text, "pforte_sip_messages_dropped_total", reason="framing") == 1
    assert v(text, "pforte_sip_messages_dropped_total", reason="scanner") == 0
    assert v(text, "pforte_sip_dialogs") == 2
    assert v(text, "pforte_media_packets_total", source="phone") == 10
    assert v(text, "pforte_media_packets_total", source="instance") == 0
    assert v(text, "pforte_media_port_headroom_ratio") == 0.75
    assert v(text, "pforte_access_refused_connections_total", service="sip") == 3
    assert v(text, "pforte_access_refused_connections_total", service="xmpp") == 0


def test_histograms_are_cumulative_with_every_bucket_from_the_start() -> None:
    h = Histogram((0.1, 1.0))
    empty = h.to_json()
    assert empty == {"buckets": [["0.1", 0], ["1.0", 0], ["+Inf", 0]], "sum": 0.0, "count": 0}
    for x in (0.05, 0.1, 0.5, 3.0):
        h.observe(x)
    assert h.to_json() == {"buckets": [["0.1", 2], ["1.0", 3], ["+Inf", 4]], "sum": 3.65, "count": 4}
    http = {"state": "running", "counters": {}, "gauges": {},
            "histograms": {"upstream_first_byte_seconds": h.to_json(), "upstream_connect_seconds": empty}}
    text = scrape(status(services={"http": http}))
    assert v(text, "pforte_http_upstream_first_byte_seconds_bucket", service="http", le="0.1") == 2
    assert v(text, "pforte_http_upstream_first_byte_seconds_bucket", service="http", le="+Inf") == 4
    assert v(text, "pforte_http_upstream_first_byte_seconds_count", service="http") == 4
    assert v(text, "pforte_http_upstream_first_byte_seconds_sum", service="http") == 3.65
    assert v(text, "pforte_http_upstream_connect_seconds_count", service="http") == 0


def test_a_counter_without_a_family_is_still_exported_by_name() -> None:
    assert v(scrape(status()), "pforte_sip_events_total", event="brand_new_counter") == 9


def test_no_call_id_or_address_reaches_a_label() -> None:
    text = scrape(status())
    assert "secret-call-id" not in text and "10.1.2.3" not in text


def test_service_state_build_config_and_certificate() -> None:
    text = scrape(status())
    assert v(text, "pforte_service_up", service="http") == 1
    assert v(text, "pforte_service_up", service="xmpp") == 0
    assert v(text, "pforte_service_state", service="xmpp", state="failed") == 1
    assert v(text, "pforte_service_state", service="xmpp", state="running") == 0
    assert v(text, "pforte_service_apply_error", service="xmpp") == 1
    assert v(text, "pforte_service_apply_error", service="http") == 0
    assert not any(name.startswith("pforte_xmpp_") for name, _ in values(text))  # not running: no families
    build = [dict(lab) for name, lab in values(text) if name == "pforte_build_info"]
    assert build[0]["version"] == "9.9.9" and build[0]["uvloop"] == "none" and build[0]["python"].count(".") == 2
    assert v(text, "pforte_config_revision") == 7
    assert v(text, "pforte_config_last_apply_timestamp_seconds") == 1700000000.5
    assert v(text, "pforte_config_last_failed_apply_timestamp_seconds") == 0
    assert v(text, "pforte_tls_certificate_not_after_timestamp_seconds", certificate="server",
             self_signed="false") == 1800000000.0


def test_manager_families_only_in_managed_mode() -> None:
    assert "pforte_manager_" not in scrape(status())
    text = scrape(status(manager={"state": "unreachable", "heartbeats": 4, "last_heartbeat_at": 1700000100.0}))
    assert v(text, "pforte_manager_state", state="unreachable") == 1
    assert v(text, "pforte_manager_state", state="online") == 0
    assert v(text, "pforte_manager_last_heartbeat_timestamp_seconds") == 1700000100.0
    assert v(text, "pforte_manager_last_contact_timestamp_seconds") == 0
    assert v(text, "pforte_manager_heartbeats_total") == 4


def test_xmpp_sessions_by_kind_and_refusals_by_reason() -> None:
    xmpp = {"state": "running", "counters": {"sessions": 3, "sessions_starttls": 2, "sessions_direct_tls": 1},
            "gauges": {"active_sessions": 1}, "by_instance": {"a": {"active_sessions": 1}},
            "by_reason": {"garbage": {"refusals": 2}}}
    text = scrape(status(services={"xmpp": xmpp}))
    assert v(text, "pforte_xmpp_sessions_total", kind="starttls") == 2
    assert v(text, "pforte_xmpp_sessions_total", kind="direct_tls") == 1
    assert ("pforte_xmpp_sessions_total", frozenset()) not in values(text)  # the sum is not a series of its own
    assert v(text, "pforte_xmpp_refused_connections_total", reason="garbage") == 2
    assert v(text, "pforte_xmpp_refused_connections_total", reason="no_sni") == 0
    assert v(text, "pforte_xmpp_instance_active_sessions", instance="a") == 1


class Refuser(Service):
    """Runs while the web service is off; asked to run with it on, fails to start."""

    name = "refuser"

    @classmethod
    def view(cls, cfg: ProxyConfig) -> str | None:
        return cfg.services.web.mode

    async def start(self, view: str) -> None:
        if view != "off":
            raise ServiceError("cannot start")

    async def reconfigure(self, view: str) -> None:
        await self.start(view)

    async def stop(self, timeout: float) -> None:
        pass


def test_supervisor_status_has_what_the_collector_reads(tmp_path: Path) -> None:
    async def main() -> dict[str, Any]:
        ctx = ServiceContext(state=StateDir(tmp_path).ensure(), certs=CertStore(tmp_path / "certs"),
                             access=AccessList())
        sup = Supervisor(ctx, [Refuser])
        await sup.apply(parse_config(base_config(revision=3)))
        bad = parse_config(base_config(revision=4, services={"web": {"mode": "rest_only"}}))
        with pytest.raises(ApplyError):
            await sup.apply(bad)
        return sup.status()

    before = time.time()
    st = asyncio.run(main())
    assert st["revision"] == 3 and st["apply_failures"] == 1 and st["failed_at"] >= before
    assert st["applied_at"] <= st["failed_at"]
    (cert,) = st["certificates"]
    assert cert["self_signed"] is True and cert["not_after"] > time.time() + 800 * 86400
    text = scrape(st)
    assert v(text, "pforte_config_apply_failures_total") == 1
    assert v(text, "pforte_config_last_failed_apply_timestamp_seconds") == st["failed_at"]
