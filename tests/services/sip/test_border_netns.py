"""The attacks of issue 20 against a running proxyd in a private network namespace (only `lo`
up, plus 10.0.0.5 on it for an internal host): the recorders on every address the messages name
fail the test when one receives what the border must stop (`netns_border.py`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.netns
ROOT = Path(__file__).resolve().parents[3]


def _run(module: str = "netns_border") -> dict[str, Any]:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private network namespace")
    script = ("ip link set lo up && ip addr add 10.0.0.5/32 dev lo && "
              f"exec {sys.executable} -m tests.services.sip.{module}")
    res = subprocess.run(["unshare", "-n", "--", "sh", "-c", script], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_the_border_stops_what_must_not_reach_a_pbx() -> None:
    got = _run()
    nothing = {"pbx_a": [], "pbx_b": [], "loopback": [], "internal": []}
    refused = {
        "preloaded_route": "403", "ruri_internal": "403", "ruri_loopback": "403", "other_tenant_register": "403",
        "sips_over_udp": "416", "stray_bye": "481", "stray_cancel": "481", "many_via": "400",
        "long_call_id_invite": "400",
    }
    for name, status in refused.items():
        r = got[name]
        assert [a.split(" ")[1] for a in r["answer"]] == [status], (name, r["answer"])
        assert {k: r[k] for k in nothing} == nothing, (name, "reached a recorder")
    for name in ("stray_ack", "long_call_id_ack"):
        ack = got[name]
        assert ack["answer"] == [] and {k: ack[k] for k in nothing} == nothing, name
    assert got["sip"]["gauges"]["calls"] == 2 and got["sip"]["gauges"]["dialogs"] <= 2  # identity, maddr
    # what is forwarded reaches only tenant a's PBX, cleaned
    [inv] = got["identity"]["pbx_a"]
    assert "identity" not in inv.lower() and "ceo@" not in inv
    [inv] = got["maddr"]["pbx_a"]
    assert inv.startswith("INVITE sip:bob@a.test SIP/2.0\r\n") and "10.0.0.5" not in inv
    for name in ("identity", "maddr"):
        assert not got[name]["internal"] and not got[name]["loopback"] and not got[name]["pbx_b"]
    # 60 wrong passwords: the PBX sees 10, then the border answers 403 itself
    brute = got["brute_force"]
    assert len(brute["pbx_a"]) == 10 and all(m.startswith("REGISTER ") for m in brute["pbx_a"])
    assert brute["answer"].count("SIP/2.0 401 Unauthorized") == 10
    assert brute["answer"].count("SIP/2.0 403 Forbidden") == 50


def test_a_spoofed_udp_source_gets_at_most_three_times_what_it_sent() -> None:
    """A spoofer sends INVITEs and OPTIONS with a victim's address; the PBX answers 100, 180 and
    a 200 it retransmits until an ACK that never comes. The victim receives at most
    AMPLIFICATION_FACTOR × what was sent in its name, while a real phone's 20 calls complete
    and its ACKs (echoing the 200's To tag) verify it (`netns_amplification.py`)."""
    got = _run("netns_amplification")
    assert got["calls"] == ["completed"] * 20
    assert got["pbx_sent_to_victim"] > 3 * got["spoofer_sent"]  # what would reach the victim without the budget
    assert 0 < got["victim_received"] <= 3 * got["spoofer_sent"]
    counters, gauges = got["sip"]["counters"], got["sip"]["gauges"]
    assert counters["amplification_limited"] > 0 and counters["udp_verifications"] == 1
    assert gauges["udp_sources_verified"] == 1 and gauges["udp_sources_unverified"] == 1  # the phone; the victim


def test_a_spoofed_source_flood_evicts_no_phone_and_no_table_grows() -> None:
    """20,000 spoofed sources (OPTIONS, REGISTER, SUBSCRIBE, one each) while a registered phone
    probes with OPTIONS and calls: every table the flood fills stays at its bound, and the
    phone's own entries (its Flow, its token) are the ones made for its first datagram — main
    cleared these tables wholesale at 4,096 sources (`netns_flood.py`)."""
    got = _run("netns_flood")
    assert got["registered"] and got["calls"] == ["completed"] * 3
    assert got["unanswered"] == 0 and got["answered"] == 200
    for name, (size, bound, phone_kept) in got["tables"].items():
        assert 0 < size <= bound, name
        assert phone_kept in (True, None), name
    assert got["tables"]["udp_flows"][0] == got["tables"]["udp_flows"][1]  # full: the flood did evict
