"""A real proxyd with HTTP, provisioning, SIP, media and XMPP up takes real traffic; its /metrics,
scraped over the admin TCP port as Prometheus would, moves with that traffic and passes
`promtool check metrics` without a single remark."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from tests.e2e.traffic import Traffic
from tests.support import require_peer


def test_metrics_after_real_traffic_are_promtool_clean(traffic: Traffic) -> None:
    promtool = require_peer("promtool")
    before, after, text, p = traffic.before, traffic.after, traffic.text, traffic.proxy

    def moved(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        assert key in after, f"{name}{labels} missing from the scrape"
        return after[key] - before.get(key, 0.0)

    assert moved("pforte_http_requests_total", service="http") == 2
    assert moved("pforte_http_responses_total", service="http", code_class="2xx") == 1
    assert moved("pforte_http_refused_requests_total", service="http", code="400") == 1
    assert moved("pforte_http_upstream_connects_total", service="http") == 1
    assert moved("pforte_http_upstream_connect_seconds_count", service="http") == 1
    assert moved("pforte_http_upstream_first_byte_seconds_count", service="http") == 1
    assert moved("pforte_http_upstream_first_byte_seconds_bucket", service="http", le="+Inf") == 1
    # >= 0, not > 0: uvloop's loop.time() moves in whole milliseconds, a loopback answer can take less
    assert 0 <= moved("pforte_http_upstream_first_byte_seconds_sum", service="http") < 10
    assert moved("pforte_http_request_duration_seconds_count", service="http") == 1
    assert moved("pforte_http_request_duration_seconds_sum", service="http") >= \
        moved("pforte_http_upstream_first_byte_seconds_sum", service="http")
    assert moved("pforte_http_refused_requests_total", service="provisioning", code="404") == 1
    assert moved("pforte_sip_messages_forwarded_total", kind="request") == 1
    assert moved("pforte_sip_messages_forwarded_total", kind="response") == 1
    assert moved("pforte_sip_local_responses_total", code="404") == 1
    assert moved("pforte_sip_requests_forwarded_total", method="OPTIONS") == 1
    assert moved("pforte_sip_requests_forwarded_total", method="INVITE") == 0  # there from the first scrape
    assert moved("pforte_sip_responses_forwarded_total", source="instance", code_class="2xx") == 1
    assert moved("pforte_sip_responses_forwarded_total", source="phone", code_class="2xx") == 0
    assert moved("pforte_http_requests_handled_total", service="http", route="application", method="read",
                 code_class="2xx") == 1
    assert moved("pforte_http_refusals_total", service="http", route="application", reason="non_canonical_path") == 1
    assert moved("pforte_http_refusals_total", service="provisioning", route="provisioning",
                 reason="unknown_instance") == 1
    assert moved("pforte_media_latches_total", kind="relatch") == 0
    assert moved("pforte_media_srtp_auth_failures_total") == 0
    assert moved("pforte_sip_routing_failures_total", reason="unknown_domain") == 1
    assert moved("pforte_xmpp_refused_connections_total", reason="garbage") == 1
    for svc in ("http", "provisioning", "sip", "media", "xmpp"):
        assert after[("pforte_service_up", frozenset({("service", svc)}))] == 1
    assert after[("pforte_xmpp_instance_active_sessions", frozenset({("instance", "pbx")}))] == 0
    assert after[("pforte_config_revision", frozenset())] == 1
    assert after[("pforte_media_port_headroom_ratio", frozenset())] == 1
    not_after = after[("pforte_tls_certificate_not_after_timestamp_seconds",
                       frozenset({("certificate", "server"), ("self_signed", "true")}))]
    assert not_after > time.time() + 800 * 86400  # the self-signed one lasts 825 days
    assert after[("process_open_fds", frozenset())] > 0
    assert after[("process_max_fds", frozenset())] > 0
    assert after[("process_resident_memory_bytes", frozenset())] > 0
    build = [labels for name, labels in after if name == "pforte_build_info"]
    assert len(build) == 1 and {k for k, _ in build[0]} == {"version", "python", "uvloop"}
    # no client address, path or Call-ID in any label
    for bad in ("127.0.0.1", "/api/../b", "nosuchdevice", "m1", "other.test"):
        assert not any(bad == v for _, labels in after for _, v in labels), bad

    # every family docs/operations.md lists is in the scrape (manager ones: managed mode only; ACME
    # ones: tls.mode acme only, scraped by tests/proxyd/test_acme.py)
    documented = set(re.findall(r"`((?:pforte|process)_[a-z_]+)", (Path(__file__).parents[2] / "docs" /
                                                                    "operations.md").read_text()))
    scraped = traffic.families()
    missing = {n for n in documented - scraped
               if not n.startswith(("pforte_manager_", "pforte_acme_")) and not n.endswith("_")}
    assert missing == set()

    res = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", ""), text
    assert "event=config_applied" in p.output()
