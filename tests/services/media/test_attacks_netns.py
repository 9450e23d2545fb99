"""Issue 21's attacks on the media relay, through a running proxyd with real SIP and RTP/SRTP,
inside a network namespace with only `lo` up: the SDPs name third-party, internal, loopback and
unspecified addresses, and a recorder listens on each (`netns_attacks.py`)."""

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
ADDRESSES = ("10.1.0.2", "10.1.0.3", "10.9.9.9", "192.0.2.66", "192.0.2.67")


@pytest.fixture(scope="module")
def seen() -> dict[str, Any]:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a private network namespace")
    adds = " && ".join(f"ip addr add {a}/32 dev lo" for a in ADDRESSES)
    script = f"ip link set lo up && {adds} && exec {sys.executable} -m tests.services.media.netns_attacks"
    if not _RUN:  # once per module, also when it fails (a failing fixture would run again per test)
        _RUN.append(subprocess.run(["unshare", "-n", "--", "sh", "-c", script], cwd=ROOT, capture_output=True,
                                   text=True, timeout=120))
    res = _RUN[0]
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


_RUN: list[subprocess.CompletedProcess[str]] = []


@pytest.mark.parametrize("target", ["third_party", "loopback", "internal", "unspecified"])
def test_nothing_is_sent_where_the_sdp_points_before_the_phone_proves_itself(seen: dict[str, Any],
                                                                             target: str) -> None:
    got = seen["reflection"][target]
    assert got["recorded"] == 0  # no RTP, RTCP, nor anything to an ICE candidate's address
    assert not got["ice_in_offer"]  # candidates and ICE credentials are removed
    assert got["pbx_got"] == 1 and got["phone_got_after_latch"] == 5  # once proven, media flows


def test_junk_from_another_port_of_the_phone_does_not_move_the_stream(seen: dict[str, Any]) -> None:
    assert seen["hijack_rtp"] == {"phone_got": 10, "attacker_got": 0, "pbx_got_junk": 0}


def test_srtp_failing_authentication_does_not_move_the_stream(seen: dict[str, Any]) -> None:
    assert seen["hijack_srtp"] == {"phone_got": 10, "attacker_got": 0, "pbx_got_junk": 0}


def test_junk_from_a_third_party_does_not_keep_a_call_alive(seen: dict[str, Any]) -> None:
    released = seen["junk_keeps_alive"]["released_after"]
    assert released is not None and released < 5  # idle_timeout 2 s, checked once a second


def test_an_offer_takes_all_its_ports_or_none_and_every_exit_gives_them_back(seen: dict[str, Any]) -> None:
    ex = seen["exhaustion"]
    free = {"active_calls": 0, "active_streams": 0, "ports_in_use": 0, "ports_available": 12, "ports_blocked": 0}
    assert ex["start"] == free
    assert ex["four_m"]["status"] == "SIP/2.0 503 no media ports available" and ex["four_m"]["retry_after"]
    assert ex["four_m"]["gauges"] == free  # the pairs of the streams that fitted were given back
    assert ex["many_m"]["status"].startswith("SIP/2.0 488") and ex["many_m"]["gauges"] == free
    assert ex["per_source"][:2] == ["pbx", "pbx"]
    assert ex["per_source"][2].startswith("SIP/2.0 503") and "Retry-After=None" not in ex["per_source"][2]
    assert ex["other_source"] == "pbx"
    assert ex["full"]["ports_in_use"] == 12 and ex["full"]["ports_available"] == 0
    # CANCEL and 486 gave back two calls' ports; the answered call that never latched goes at set-up timeout
    assert ex["after_cancel_and_486"]["active_calls"] == 1 and ex["after_cancel_and_486"]["ports_in_use"] == 4
    assert ex["end"] == free and ex["setup_timeout_after"] < 4
    assert ex["again"] == "pbx"
    assert ex["counters"] == {"setup_timeout_released": 1, "refused_source_limit": 1, "ports_exhausted": 1,
                              "refused_488": 1}


def test_a_transport_error_and_a_reload_give_every_port_back(seen: dict[str, Any]) -> None:
    ex = seen["exits"]
    free = {"active_calls": 0, "active_streams": 0, "ports_in_use": 0, "ports_available": 12, "ports_blocked": 0}
    assert ex["start"] == free
    # the TCP PBX refused the connection: released at once, not at Timer C (200 s)
    assert ex["transport_error"]["gauges"] == free and ex["transport_error"]["released_after"] < 3
    assert ex["counters"] == {"unsent_invites_released": 1}
    # the ringing call keeps its 4 ports of the old range; the new range's 12 are all free
    assert ex["reload_during_call"] == {**free, "active_calls": 1, "active_streams": 1, "ports_in_use": 4}
    assert ex["ports"] == {"old_in_old_range": True, "new_in_new_range": True}
    assert ex["end"] == free
