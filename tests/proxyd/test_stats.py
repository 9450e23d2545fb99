"""The typed service report and its JSON: what `/status` shows is what every reader gets back."""

from __future__ import annotations

from proxyd.service import LATENCY_BUCKETS, Histogram
from proxyd.stats import ServiceStats, ServiceStatus


def test_a_report_survives_its_json_with_types_and_the_status_shape() -> None:
    h = Histogram(LATENCY_BUCKETS)
    h.observe(0.004)
    stats = ServiceStats(listeners=["tcp:0.0.0.0:5222"], counters={"sessions": 3}, gauges={"active_sessions": 1},
                         histograms={"request_duration_seconds": h.to_json()},
                         breakdowns={"by_instance": {"inst1": {"active_sessions": 1}}},
                         detail={"offload": {"mode": "userspace", "reason": "no CAP_NET_ADMIN"}})
    data = ServiceStatus("running", stats, last_error="revision 3: port taken").to_json()
    # the shape /status always had: the tables and detail at the top level beside state
    assert data["by_instance"] == {"inst1": {"active_sessions": 1}} and data["offload"]["mode"] == "userspace"
    assert data["state"] == "running" and data["last_error"] == "revision 3: port taken"
    back = ServiceStatus.from_json(data)
    assert back.stats == stats and back.last_error == "revision 3: port taken" and back.state == "running"
    assert back.problem == "revision 3: port taken"


def test_json_from_another_version_is_read_leniently_not_trusted() -> None:
    odd = {"state": "exploded", "listeners": "tcp:1", "counters": {"ok": 1, "bad": "x", "flag": True},
           "gauges": [], "histograms": {"h": 3}, "by_reason": {"r": {"refusals": 2}, "junk": 5},
           "workers": True, "degraded": ""}
    st = ServiceStatus.from_json(odd)
    assert st.state == "stopped"  # an unknown state is not shown as running
    assert st.stats.listeners == [] and st.stats.counters == {"ok": 1, "flag": True} and st.stats.gauges == {}
    assert st.stats.histograms == {} and st.stats.breakdowns == {"by_reason": {"r": {"refusals": 2}}}
    assert st.workers is None and st.degraded is None and st.problem is None


def test_a_failed_service_says_why_as_its_problem() -> None:
    st = ServiceStatus.from_json({"state": "failed", "last_error": "revision 4: cannot bind 0.0.0.0:5061"})
    assert st.problem == "failed to start: revision 4: cannot bind 0.0.0.0:5061"
    assert ServiceStatus.from_json({"state": "failed"}).problem == "failed to start: not running"
