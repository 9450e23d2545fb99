"""Why a message went nowhere is logged — once per reason and interval, the rest summed up."""

from __future__ import annotations

import logging

import pytest

from services.sip.flow import Flow
from services.sip.reasonlog import ReasonLog
from tests.services.sip.test_proxy import PHONE, _invite, make_relay

LOG = logging.getLogger("test.reasonlog")


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    out = [r.getMessage() for r in caplog.records if r.name == LOG.name]
    caplog.clear()
    return out


def test_first_occurrence_then_one_summary_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)
    rl = ReasonLog(LOG, interval=10.0)
    rl.note("scanner", 0.0, "drop reason=%s n=%d", "scanner", 1)
    assert lines(caplog) == ["drop reason=scanner n=1"]
    for i in range(2, 1000):
        rl.note("scanner", i / 100, "drop reason=%s n=%d", "scanner", i)
    rl.note("loop", 5.0, "refused reason=%s", "loop")  # another reason is not held back by the first
    assert lines(caplog) == ["refused reason=loop"]
    rl.flush(9.9)
    assert lines(caplog) == []  # the interval is not over
    rl.flush(10.0)
    assert lines(caplog) == ["event=sip_log_suppressed reason=scanner count=998 seconds=10"]
    rl.flush(30.0)
    assert lines(caplog) == []  # nothing more to say
    rl.note("scanner", 31.0, "drop reason=%s n=%d", "scanner", 1000)
    rl.note("scanner", 32.0, "drop reason=%s n=%d", "scanner", 1001)
    rl.note("scanner", 45.0, "drop reason=%s n=%d", "scanner", 1002)  # over: summary, then this one
    assert lines(caplog) == ["drop reason=scanner n=1000",
                             "event=sip_log_suppressed reason=scanner count=1 seconds=14",
                             "drop reason=scanner n=1002"]


def test_relay_drops_and_refusals_are_logged_with_their_reason(caplog: pytest.LogCaptureFixture) -> None:
    """Each way the relay lets a message go nowhere, or answers it itself, says why."""
    cases = [
        (_invite(extra="User-Agent: friendly-scanner\r\n"), PHONE, "event=sip_drop reason=scanner"),
        (_invite(ruri="sip:bob@nowhere.test"), PHONE, "reason=unknown_domain status=404"),
        (_invite().replace(b"Max-Forwards: 70", b"Max-Forwards: 0"), PHONE, "reason=too_many_hops status=483"),
        (_invite(extra="Proxy-Require: foo\r\n"), PHONE, "reason=proxy_require status=420"),
        (_invite(), Flow("b", "udp", "127.0.0.9", 5060), "reason=no_flow status=404"),
        (_invite("Route: <sip:127.0.0.9;lr>\r\n"), Flow("b", "udp", "127.0.0.9", 5060), "reason=route_not_ours"),
        (_invite(ruri="sip:bob@nowhere.test").replace(b"INVITE sip", b"ACK sip").replace(b"1 INVITE", b"1 ACK"),
         PHONE, "reason=stray_ack status=481 method=ACK"),
        (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.9;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n"
         b"To: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n", PHONE, "reason=stray_response"),
        (b"INVITE sip:bob@pbx.test SIP/2.0\r\nVia: x\r\n\r\n", PHONE, "event=sip_malformed status=400"),
        (b"x" * 70000, PHONE, "event=sip_drop reason=too_large"),
    ]
    with caplog.at_level(logging.INFO, logger="services.sip"):
        for data, src, want in cases:
            caplog.clear()
            make_relay().receive(data, src, 0.0)
            got = [rec.getMessage() for rec in caplog.records]
            assert any(want in m for m in got), (want, got)


def test_a_flood_of_one_reason_logs_two_lines(caplog: pytest.LogCaptureFixture) -> None:
    r = make_relay(limit=100_000)
    with caplog.at_level(logging.INFO, logger="services.sip"):
        for i in range(5000):
            r.receive(_invite(extra="User-Agent: sipvicious\r\n"), PHONE, i / 1000)
        r.expire(20.0)
    got = [rec.getMessage() for rec in caplog.records]
    assert got == ["event=sip_drop reason=scanner src=127.0.0.2:5070",
                   "event=sip_log_suppressed reason=scanner count=4999 seconds=20"]
