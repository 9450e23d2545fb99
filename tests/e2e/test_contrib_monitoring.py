"""The Prometheus alert rules and the Grafana dashboard in contrib/: promtool accepts the rules
and their unit tests, every PromQL expression parses, and every metric they read is in a real
proxyd's scrape (the standalone one of tests/e2e/traffic.py, and a managed one for the
`pforte_manager_*` families), so a renamed family cannot leave an alert that never fires."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from proxyd.admin import fetch_status
from proxyd.agent import state as agent_state
from proxyd.statedir import StateDir
from tests.e2e.traffic import Traffic
from tests.proxyd.agent.fake_manager import FakeManager
from tests.proxyd.agent.test_agent import ManagedProxyd
from tests.support import base_config, require_peer

CONTRIB = Path(__file__).parents[2] / "contrib"
ALERTS = CONTRIB / "prometheus" / "alerts.yml"
DASHBOARD = CONTRIB / "grafana" / "pforte.json"
# made by Prometheus itself for each scrape target, not by proxyd
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
            "group_right", "inf", "nan"}
# Grafana's variables, as a dashboard user would have them, so that promtool can parse the query
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$instance": ".+",
                "$job": "pforte"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: what is left after strings, label matchers,
    ranges, grouping clauses, function names and keywords are taken out."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set(re.findall(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", s))
    return {n for n in names if n.lower() not in KEYWORDS}


def test_metric_names_finds_what_an_expression_reads() -> None:
    expr = ('histogram_quantile(0.95, sum by (instance, le) (rate(a_bucket{service="x",le!="1"}[5m]))) '
            '/ on (instance) group_left (code) b_total offset 5m > bool 1e3 and c - time() < 14 * 86400')
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def dashboard_exprs(dash: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((.+),\s*\w+\)", q)
            exprs.append(m[1] if m else q)
    return exprs


def grafana_to_promql(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"an undefined variable in {expr}"
    return expr


def test_alert_rules_pass_promtool_check_and_unit_tests() -> None:
    promtool = require_peer("promtool")
    res = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in res.stdout
    res = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=ALERTS.parent, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    names = {r["alert"] for r in alert_rules()}
    # what the issue asks the rules to cover
    for alert in ("PforteProxydDown", "PforteConfigApplyFailing", "PforteCertificateExpiringSoon",
                  "PforteMediaPortHeadroomLow", "PforteSipRefusalSpike", "PforteHttpRefusalSpike",
                  "PforteManagerUnreachable"):
        assert alert in names
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"], rule


def test_dashboard_is_a_grafana_dashboard_whose_queries_parse(tmp_path: Path) -> None:
    promtool = require_peer("promtool")
    dash = json.loads(DASHBOARD.read_text())
    assert dash["schemaVersion"] >= 36 and dash["uid"] and dash["title"]
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "job", "instance"}
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
    assert rows == ["Overview", "HTTP router", "Provisioning", "SIP", "Media", "XMPP", "Process"]
    cells: set[tuple[int, int]] = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert p["targets"] and len({t["refId"] for t in p["targets"]}) == len(p["targets"]), p["title"]
    # every query parses as PromQL: promtool checks them as recording rules
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": grafana_to_promql(e)} for i, e in enumerate(dashboard_exprs(dash))]}]}
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
    res = subprocess.run([promtool, "check", "rules", str(tmp_path / "queries.yml")], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.fixture
def managed_scrape(tmp_path: Path) -> Iterator[set[str]]:
    """The family and sample names of a managed proxyd's /metrics once a heartbeat went through."""
    mgr = FakeManager().start()
    state = StateDir(tmp_path / "state").ensure()
    agent_state.save(state, agent_state.AgentState(mgr.url, 7, "edge", "key-1"))
    p = ManagedProxyd(state.root)
    try:
        mgr.publish(base_config(revision=1))
        p.start()
        p.wait_status(lambda s: s["revision"] == 1 and s["manager"]["heartbeats"] > 0)
        code, body = fetch_status(state.root / "proxyd.sock", "/metrics")
        assert code == 200
        fams = list(text_string_to_metric_families(body.decode()))
        yield {f.name for f in fams} | {s.name for f in fams for s in f.samples}
    finally:
        p.stop()
        mgr.stop()


def test_every_metric_the_alerts_and_dashboard_read_is_scraped(traffic: Traffic, managed_scrape: set[str]) -> None:
    scraped = traffic.families() | managed_scrape | SYNTHETIC
    assert any(n.startswith("pforte_manager_") for n in managed_scrape)
    used: dict[str, set[str]] = {}
    for rule in alert_rules():
        for name in metric_names(rule["expr"]):
            used.setdefault(name, set()).add(f"alert {rule['alert']}")
    for expr in dashboard_exprs(json.loads(DASHBOARD.read_text())):
        for name in metric_names(expr):
            used.setdefault(name, set()).add("dashboard")
    assert len(used) > 40  # the extraction found the queries at all
    missing = {name: sorted(where) for name, where in used.items() if name not in scraped}
    assert missing == {}, f"read by alerts/dashboard but not in any scrape: {missing}"
    # and the other way round: no pforte family that an operator would miss on the dashboard
    shown = {re.sub(r"_(bucket|count|sum)$", "", n) for n in used}
    unshown = {f.name for f in text_string_to_metric_families(traffic.text) if f.name.startswith("pforte_")
               and f.name not in shown and f"{f.name}_total" not in shown}
    # a deliberately short list: rare error counters (in `proxyd status` and the log) and the
    # catch-all families of counters that have no family of their own yet
    assert unshown <= {"pforte_service_apply_error", "pforte_sip_normalised_messages",
                       "pforte_sip_silent_connections_closed", "pforte_sip_udp_errors",
                       "pforte_sip_backend_certificate_mismatches", "pforte_media_srtp_unusable_keys",
                       "pforte_xmpp_instance_active_sessions", "pforte_http_events", "pforte_sip_events",
                       "pforte_media_events", "pforte_xmpp_events", "pforte_http_values", "pforte_sip_values",
                       "pforte_media_values", "pforte_xmpp_values"}, unshown
