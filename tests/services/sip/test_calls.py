"""State only where RFC 3261 creates it: the attacks of issue 20 §2 as real bytes through the
relay (a stray ACK/BYE/CANCEL never reaches the PBX, bare ACKs create nothing, the table is
capped, timer C and the linger end entries) and the limits on sizes and counts (400 + a log line)."""

from __future__ import annotations

import logging

import pytest

from services.sip.calls import LINGER, SESSION_TIMEOUT, TIMER_C
from services.sip.flow import Flow
from services.sip.framing import StreamFramer
from services.sip.message import parse, response
from services.sip.proxy import Send
from tests.services.sip.test_proxy import make_relay

PHONE = Flow("p", "udp", "127.0.0.2", 5070)
PHONE_TCP = Flow("p", "tcp", "127.0.0.2", 5070, 1)
PBX = Flow("b", "udp", "127.0.0.9", 5060)


def _req(method: str, call_id: str = "c1", to_tag: str = "", cseq: int = 1, extra: str = "",
         vias: int = 1) -> bytes:
    via = "".join(f"Via: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK{call_id[:8]}{cseq}x{i}\r\n" for i in range(vias))
    to = "<sip:bob@pbx.test>" + (f";tag={to_tag}" if to_tag else "")
    return (f"{method} sip:bob@pbx.test SIP/2.0\r\n{via}From: <sip:a@pbx.test>;tag=1\r\nTo: {to}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n{extra}"
            "Content-Length: 0\r\n\r\n").encode()


def _to_pbx(actions: list) -> bool:
    return any(isinstance(a, Send) and a.flow.side == "b" for a in actions)


def _answer(actions: list, status: int) -> str:
    [a] = actions
    assert isinstance(a, Send) and a.flow == PHONE, a
    assert a.data.startswith(f"SIP/2.0 {status} ".encode()), a.data[:60]
    return a.data.decode("latin-1")


def test_bare_ack_pairs_create_nothing_and_never_reach_the_pbx(caplog: pytest.LogCaptureFixture) -> None:
    """main made a dialog of each of 1,200 bare ACK pairs (60 KB Call-IDs: +69 MiB) and forwarded them."""
    caplog.set_level(logging.INFO, logger="services.sip")
    r = make_relay(limit=100_000)
    for i in range(1_200):
        body = "v=0\r\nc=IN IP4 127.0.0.2\r\nm=audio 4000 RTP/AVP 0\r\n"
        ack = _req("ACK", f"ack{i}", "t", extra="Content-Type: application/sdp\r\n").replace(
            b"Content-Length: 0\r\n\r\n", f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
        assert r.receive(ack, PHONE, 1.0) == []
    assert not r.dialogs.calls and not len(r.calls) and r.counters["refused_stray"] == 1_200
    assert any("reason=stray_ack" in m.getMessage() and "dropped without a response" in m.getMessage()
               for m in caplog.records)


@pytest.mark.parametrize("method", ["BYE", "CANCEL", "PRACK", "UPDATE"])
def test_stray_in_call_requests_get_481_and_never_reach_the_pbx(method: str) -> None:
    r = make_relay()
    _answer(r.receive(_req(method, "nothing-here", "t" if method != "CANCEL" else ""), PHONE, 1.0), 481)
    _answer(r.receive(_req("INVITE", "nothing-here", "t"), PHONE, 1.0), 481)  # a re-INVITE too


def test_a_call_lives_from_its_invite_to_the_linger_after_bye() -> None:
    r = make_relay()
    [inv] = r.receive(_req("INVITE"), PHONE, 0.0)
    assert isinstance(inv, Send) and inv.flow.side == "b"
    ok = response(parse(inv.data), 200, "OK", "t").serialize()
    r.receive(ok, PBX, 0.5)
    assert _to_pbx(r.receive(_req("ACK", to_tag="t"), PHONE, 1.0))
    assert _to_pbx(r.receive(_req("BYE", to_tag="t", cseq=2), PHONE, 10.0))
    assert _to_pbx(r.receive(_req("BYE", to_tag="t", cseq=2), PHONE, 10.5))  # a retransmission
    r.expire(10.0 + LINGER + 1)
    _answer(r.receive(_req("BYE", to_tag="t", cseq=3), PHONE, 10.0 + LINGER + 2), 481)


def test_timer_c_and_the_session_timeout_end_calls() -> None:
    r = make_relay()
    r.receive(_req("INVITE", "unanswered"), PHONE, 0.0)
    [inv] = r.receive(_req("INVITE", "answered"), PHONE, 0.0)
    assert isinstance(inv, Send)
    r.receive(response(parse(inv.data), 200, "OK", "t").serialize(), PBX, 1.0)
    r.expire(TIMER_C + 1)
    assert not r.calls.known("unanswered") and r.calls.known("answered")
    r.expire(1.0 + SESSION_TIMEOUT + 1)
    assert not r.calls.known("answered") and r.counters["calls_expired"] == 2


def test_a_full_call_table_answers_503_with_retry_after() -> None:
    r = make_relay()
    r.calls.max_calls = 3
    for i in range(3):
        assert _to_pbx(r.receive(_req("INVITE", f"c{i}"), PHONE, 0.0))
    text = _answer(r.receive(_req("INVITE", "c9"), PHONE, 0.0), 503)
    assert "Retry-After: 5" in text
    assert _to_pbx(r.receive(_req("INVITE", "c0", cseq=2), PHONE, 0.0))  # a known call is no new one


@pytest.mark.parametrize(("why", "data"), [
    ("call_id_too_long", _req("INVITE", "x" * 300)),
    ("too_many_via", _req("OPTIONS", vias=1_000)),
    ("too_many_route", _req("OPTIONS", extra="".join(f"Route: <sip:h{i}.example.com;lr>\r\n" for i in range(20)))),
    ("too_many_contact", _req("REGISTER", extra="Contact: " + ", ".join(f"<sip:a@10.0.0.{i}>" for i in range(30))
                              + "\r\n")),
    ("tag_too_long", _req("OPTIONS", to_tag="t" * 300)),
    ("too_many_headers", _req("OPTIONS", extra="".join(f"X-H{i}: {i}\r\n" for i in range(200)))),
    ("too_many_record_route", _req("OPTIONS", extra="Record-Route: " + ", ".join(
        f"<sip:h{i}.example.com;lr>" for i in range(10)) + "\r\nrecord-route : " + ", ".join(
        f"<sip:g{i}.example.com;lr>" for i in range(7)) + "\r\n")),
])
def test_sizes_and_counts_are_answered_400_and_logged(why: str, data: bytes, caplog: pytest.LogCaptureFixture) -> None:
    """main forwarded 1,000 Via headers (56 KB); each limit now answers 400 naming it."""
    caplog.set_level(logging.INFO, logger="services.sip")
    text = _answer(make_relay().receive(data, PHONE, 0.0), 400)
    assert why.replace("_", " ") in text.partition("\r\n")[0]
    assert any(f"reason={why} status=400" in m.getMessage() for m in caplog.records)


def test_a_register_with_1000_contacts_over_tcp_is_answered() -> None:
    """main let it vanish without a response or a log line."""
    contacts = "".join(f"Contact: <sip:a@10.0.{i >> 8}.{i & 255}:5060>\r\n" for i in range(1_000))
    data = _req("REGISTER", extra=contacts).replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")
    framer = StreamFramer()
    try:
        messages = framer.feed(data)
    except Exception as exc:  # the framer refuses it: the service answers or logs (see test_service)
        pytest.fail(f"framing refused a 1,000-Contact REGISTER without an answer: {exc!r}")
    [m] = messages
    [a] = make_relay().receive(m, PHONE_TCP, 0.0)
    assert isinstance(a, Send) and a.flow == PHONE_TCP and a.data.startswith(b"SIP/2.0 400 ")


def test_every_call_end_is_one_structured_log_line(caplog: pytest.LogCaptureFixture) -> None:
    """Issue #22 §4: one `event=sip_call_end` per call, whatever ends it: a BYE, a failure, timer
    C, the session timeout, or a refusal by pforte itself (with its reason)."""
    caplog.set_level(logging.INFO, logger="services.sip")
    r = make_relay()
    r.instances = {("udp", "127.0.0.9", 5060): "pbx"}
    for call_id, status in (("done", 200), ("busy", 486)):
        [inv] = r.receive(_req("INVITE", call_id), PHONE, 0.0)
        assert isinstance(inv, Send)
        r.receive(response(parse(inv.data), status, "x", "t").serialize(), PBX, 1.0)
    r.receive(_req("ACK", "done", to_tag="t"), PHONE, 1.0)
    r.receive(_req("BYE", "done", to_tag="t", cseq=2), PHONE, 61.0)
    r.receive(_req("BYE", "done", to_tag="t", cseq=2), PHONE, 61.5)  # a retransmission: no second line
    r.receive(_req("INVITE", "silent"), PHONE, 0.0)
    r.receive(_req("INVITE", "gone").replace(b"sip:bob@pbx.test SIP", b"sip:bob@nowhere.test SIP"), PHONE, 0.0)
    r.log_call_ends()
    r.expire(TIMER_C + 1)
    r.log_call_ends()
    lines = {m.getMessage().rpartition("call_id=")[2]: m.getMessage() for m in caplog.records
             if m.getMessage().startswith("event=sip_call_end")}
    assert sorted(lines) == ["busy", "done", "gone", "silent"]
    assert "service=sip client=127.0.0.2:5070 instance=pbx outcome=completed status=200 duration=61.000 " \
           "reason=-" in lines["done"]
    assert "outcome=failed status=486 duration=1.000 reason=failed" in lines["busy"]
    assert f"outcome=timer_c status=0 duration={TIMER_C + 1:.3f}" in lines["silent"]
    assert "outcome=refused status=404 duration=0.000 reason=unknown_domain" in lines["gone"]
    assert not r.calls.ended


def test_a_known_call_id_from_many_sources_holds_at_most_the_dialog_cap() -> None:
    """Each source address sending an INVITE with a known Call-ID is a pass of its own (a
    spiral's second pass): spoofed sources would hold one Dialog each for timer C. Past the
    cap such an INVITE is answered 503 + Retry-After; the call's own pass goes on."""
    r = make_relay()
    r.dialogs.max_dialogs = 4
    sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    invite = _req("INVITE", "known", extra="Content-Type: application/sdp\r\n").replace(
        b"Content-Length: 0\r\n\r\n", f"Content-Length: {len(sdp)}\r\n\r\n{sdp}".encode())
    assert r.receive(invite, PHONE, 0.0)  # a MediaStep: the offer of the first pass
    answers = [r.receive(invite, Flow("p", "udp", f"10.0.0.{n}", 5060), 0.0) for n in range(1, 10)]
    assert len(r.dialogs.calls) == 4 and r.counters["dialogs_full"] == 6
    for got in answers[3:]:
        [a] = got
        assert isinstance(a, Send) and a.data.startswith(b"SIP/2.0 503 ") and b"Retry-After: 5" in a.data
    assert r.receive(invite.replace(b"CSeq: 1", b"CSeq: 2"), PHONE, 0.0)  # the first pass's re-INVITE


def test_unproven_udp_sources_get_a_share_of_the_call_table() -> None:
    """Spoofed INVITEs (one per source, no ACK ever) could fill the call table for timer C and
    refuse every phone: UDP sources that never showed they receive get `max_unproven` calls;
    a TCP phone and a UDP phone that proved itself (its ACK echoed a 200's To tag) still call."""
    r = make_relay()
    r.calls.max_unproven = 2
    spoofed = [Flow("p", "udp", f"10.0.{n}.1", 5060) for n in range(3)]
    for n, src in enumerate(spoofed[:2]):
        assert _to_pbx(r.receive(_req("INVITE", f"s{n}"), src, 0.0))
    [a] = r.receive(_req("INVITE", "s2"), spoofed[2], 0.0)
    assert isinstance(a, Send) and a.data.startswith(b"SIP/2.0 503 ") and b"Retry-After: 5" in a.data
    assert r.counters["calls_full_unproven"] == 1
    assert _to_pbx(r.receive(_req("INVITE", "tcp"), PHONE_TCP, 0.0))  # a connection is no spoofed source
    # a UDP phone that receives: 503 now, and after its ACK echoes the 200 of a call it may make
    [a] = r.receive(_req("INVITE", "p1"), PHONE, 0.0)
    assert a.data.startswith(b"SIP/2.0 503 ")
    r.calls.max_unproven = 3
    [inv] = r.receive(_req("INVITE", "p1"), PHONE, 0.0)
    [ok] = r.receive(response(parse(inv.data), 200, "OK", "t1").serialize(), PBX, 0.5)
    assert ok.flow == PHONE
    r.receive(_req("ACK", "p1", to_tag="t1"), PHONE, 0.6)
    assert r.amp.verified(PHONE) and r.calls.unproven == 2  # p1 left the share with its ACK
    r.calls.max_unproven = 0
    assert _to_pbx(r.receive(_req("INVITE", "p2"), PHONE, 1.0))  # proven: only the whole table counts
    r.expire(TIMER_C + 2)  # the spoofed ones never got an answer: gone at timer C, their share with them
    assert r.calls.unproven == 0 and not r.calls.known("s0")


def test_a_spoofed_invite_the_pbx_answered_200_ends_at_timer_c() -> None:
    """A PBX without digest answers a spoofed INVITE 200; no ACK ever comes from that address:
    the call ends at timer C, not after the 4 h session timeout of a confirmed call."""
    r = make_relay()
    victim = Flow("p", "udp", "10.9.9.9", 5060)
    [inv] = r.receive(_req("INVITE", "spoof"), victim, 0.0)
    r.receive(response(parse(inv.data), 200, "OK", "t").serialize(), PBX, 0.1)
    assert r.calls.unproven == 1
    r.expire(TIMER_C + 1)
    assert not r.calls.known("spoof") and r.calls.unproven == 0
