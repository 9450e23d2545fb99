"""The sans-IO relay core: RFC 4475 messages through the relay, routing, tokens, protection."""

from __future__ import annotations

import base64
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.sip.flow import Flow, FlowSigner
from services.sip.message import parse
from services.sip.protect import RateLimiter
from services.sip.proxy import (
    BRANCH,
    Local,
    MediaStep,
    Relay,
    Send,
    Target,
    _client_via,
    _client_via_general,
    _own_token,
    _own_token_general,
)
from services.sip.scan import Via, scan
from services.sip.uri import parse_name_addr
from tests.services.sip.captured import INSTANCE, LINPHONE_REGISTER, kamailio_register_ok
from tests.services.sip.torture import TORTURE, cases, relay_outcome

DOMAINS = ["example.com", "example.net", "example.org", "chair-dnrc.example.com", "pbx.test",
           "biloxi.com", "registrar.example.com", "atlanta.com", "example.edu", "example.test"]
PBX = Target("udp", "127.0.0.9", 5060)
PHONE = Flow("p", "udp", "127.0.0.2", 5070)


def make_relay(limit: int = 1000) -> Relay:
    phone = {"udp": Local("udp", "127.0.0.1", 5060), "tcp": Local("tcp", "127.0.0.1", 5060)}
    return Relay({d: PBX for d in DOMAINS}, phone, {"udp": Local("udp", "127.0.0.1", 6000)},
                 frozenset({"proxy.test"}), RateLimiter(limit=limit))


def outcome(actions: list[Send | MediaStep]) -> tuple[str, bytes]:
    if not actions:
        return "drop", b""
    a = actions[0]
    if isinstance(a, MediaStep):
        return "forward", a.msg.serialize()
    if a.flow == PHONE:
        return a.data.split(b" ")[1].decode(), a.data
    return "forward", a.data


@pytest.mark.parametrize("case", cases(), ids=lambda c: c["name"])
def test_torture_through_relay(case: dict[str, str]) -> None:
    data = (TORTURE / case["file"]).read_bytes()
    got, out = outcome(make_relay().receive(data, PHONE, 0.0))
    want = relay_outcome(case["name"])
    assert got == want, out[:300]
    if got == "forward":
        fwd = parse(out)
        assert fwd.all("Via")[0].startswith("SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKpf")
        assert "received=127.0.0.2" in fwd.all("Via")[1] and "rport=5070" in fwd.all("Via")[1]
    if case["name"] == "esc02":
        assert parse(out).get("Path") is None  # RE%47IST%45R is not REGISTER
    if case["name"] == "dblreq":
        assert b"INVITE" not in out


def test_torture_reinvite_of_a_known_call_is_forwarded_normalised() -> None:
    """wsinv is a re-INVITE: stray on its own (481), forwarded once its call is known."""
    data = (TORTURE / "wsinv.dat").read_bytes()
    data = data.replace(b"Route:\r\n <sip:services.example.com;lr;unknownwith=value;unknown-no-value>\r\n", b"")
    r = make_relay()
    r.calls.invite(parse(data).get("Call-ID") or "", 0.0)
    got, out = outcome(r.receive(data, PHONE, 0.0))
    assert got == "forward" and parse(out).get("Max-Forwards") == "67"


def test_torture_rfc2543_invite_gets_max_forwards_69() -> None:
    """inv2543 with To/From in a domain of the instance (as sent it names third parties: 403)."""
    data = (TORTURE / "inv2543.dat").read_bytes()
    data = data.replace(b"ift.client.example.net", b"example.com").replace(b"ss1.example.net", b"example.com")
    got, out = outcome(make_relay().receive(data, PHONE, 0.0))
    assert got == "forward" and parse(out).get("Max-Forwards") == "69"


def test_torture_multipart_body_goes_through_unchanged() -> None:
    """mpart01 without its preloaded Route (to a loopback port: refused, issue 20 §3)."""
    data = (TORTURE / "mpart01.dat").read_bytes().replace(b"Route: <sip:127.0.0.1:5080>\r\n", b"")
    got, out = outcome(make_relay().receive(data, PHONE, 0.0))
    assert got == "forward" and parse(out).body == parse(data).body


def test_flow_tokens_are_authenticated() -> None:
    s = FlowSigner()
    tok = s.mint(PHONE)
    assert s.open(tok) == PHONE
    forged = FlowSigner().mint(Flow("p", "udp", "127.0.0.66", 1))
    assert s.open(forged) is None
    # one character of the sealed part changed (not the last two, whose low bits may be padding:
    # "AA" there once decoded to the same bytes in 1 of 256 runs)
    mid = len(tok) // 2
    assert s.open(tok[:mid] + ("A" if tok[mid] != "A" else "B") + tok[mid + 1:]) is None
    assert s.open("garbage") is None
    # sealed, not just signed: the phone's address cannot be read out of the token
    assert b"127.0.0.2" not in base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4))
    assert "127.0.0.2" not in tok and s.mint(PHONE) == tok


def _invite(route: str = "", ruri: str = "sip:bob@pbx.test", extra: str = "") -> bytes:
    return (f"INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bKx1\r\n{route}"
            "From: <sip:a@pbx.test>;tag=1\r\nTo: <sip:bob@pbx.test>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n"
            f"Max-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n").encode()


def test_invite_record_route_and_response_path() -> None:
    r = make_relay()
    [send] = r.receive(_invite(), PHONE, 0.0)
    assert isinstance(send, Send) and send.flow == Flow("b", "udp", "127.0.0.9", 5060)
    fwd = parse(send.data)
    assert len(fwd.all("Record-Route")) == 2
    resp = (b"SIP/2.0 200 OK\r\n" + b"".join(f"Via: {v}\r\n".encode() for v in fwd.all("Via"))
            + b"From: <sip:a@pbx.test>;tag=1\r\nTo: <sip:bob@pbx.test>;tag=2\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n"
            + b"Content-Length: 0\r\n\r\n")
    [back] = r.receive(resp, Flow("b", "udp", "127.0.0.9", 5060), 0.0)
    assert isinstance(back, Send) and back.flow == PHONE
    assert len(parse(back.data).all("Via")) == 1
    # a response claiming to come back from the phone side for the phone's own request is refused
    assert r.receive(resp, PHONE, 0.0) == []


def test_requests_to_a_tcp_phone_name_our_tcp_side() -> None:
    """A request from the PBX to a phone registered over TCP: our Via and the phone-side
    Record-Route say TCP (the phone answers and routes over its connection), and it goes to that
    connection's flow."""
    r = make_relay()
    phone = Flow("p", "tcp", "127.0.0.2", 40000, 7)
    route = f"Route: <sip:{r.signer.mint(phone)}@127.0.0.1:6000;lr>\r\n"
    pbx = Flow("b", "udp", "127.0.0.9", 5060)
    [send] = r.receive(_invite(route, ruri="sip:a@127.0.0.2:40000;transport=tcp"), pbx, 0.0)
    assert isinstance(send, Send) and send.flow == phone
    fwd = parse(send.data)
    assert fwd.all("Via")[0].startswith("SIP/2.0/TCP 127.0.0.1:5060;")
    assert "transport=tcp" in fwd.all("Record-Route")[0] and "transport=udp" in fwd.all("Record-Route")[1]


def test_token_of_a_transport_no_longer_served_is_relayed_not_raised() -> None:
    """The flow key outlives restarts: a Path token minted in mode udp reaches a relay in mode
    tls. It is routed to its flow (which the service then finds no socket for) without an error."""
    r = Relay({d: PBX for d in DOMAINS}, {"tls": Local("tls", "127.0.0.1", 5061)},
              {"udp": Local("udp", "127.0.0.1", 6000)}, frozenset({"proxy.test"}), RateLimiter(limit=1000))
    route = f"Route: <sip:{r.signer.mint(PHONE)}@127.0.0.1:6000;lr>\r\n"
    [send] = r.receive(_invite(route, ruri="sip:a@127.0.0.2:5070"), Flow("b", "udp", "127.0.0.9", 5060), 0.0)
    assert isinstance(send, Send) and send.flow == PHONE


def test_requests_to_an_unavailable_stream_pbx_get_503() -> None:
    """The service says a TCP PBX rests after a failed connect: requests to it are answered 503
    with Retry-After; an ACK gets nothing; UDP targets are never asked."""
    r = make_relay()
    asked: list[Flow] = []
    r.unavailable = lambda flow: asked.append(flow) is None
    assert r.receive(_invite(), PHONE, 0.0)[0].flow.transport == "udp" and asked == []  # type: ignore[union-attr]
    r.domains = {"pbx.test": Target("tcp", "127.0.0.9", 5060)}
    r.backend["tcp"] = Local("tcp", "127.0.0.1", 6000)
    [reply] = r.receive(_invite(), PHONE, 0.0)
    assert outcome([reply])[0] == "503" and b"\r\nRetry-After: 5\r\n" in reply.data  # type: ignore[union-attr]
    assert asked == [Flow("b", "tcp", "127.0.0.9", 5060)]
    ack = _invite().replace(b"INVITE sip", b"ACK sip").replace(b"1 INVITE", b"1 ACK")
    assert r.receive(ack, PHONE, 0.0) == []


def test_forged_route_and_unknown_domain() -> None:
    r = make_relay()
    forged = "Route: <sip:" + FlowSigner().mint(Flow("b", "udp", "127.0.0.66", 9)) + "@127.0.0.1:5060;lr>\r\n"
    [sent] = r.receive(_invite(forged, ruri="sip:bob@pbx.test"), PHONE, 0.0)
    assert isinstance(sent, Send) and sent.flow.ip == PBX.host  # routed by domain, never to the forged flow
    # an address that is neither ours nor an instance's PBX in the Request-URI: refused
    assert outcome(r.receive(_invite(forged, ruri="sip:bob@127.0.0.66"), PHONE, 0.0))[0] == "403"
    assert outcome(r.receive(_invite(ruri="sip:bob@nowhere.test"), PHONE, 0.0))[0] == "404"
    assert r.counters["unknown_domain"] == 1


def test_scanner_dropped_and_keepalive_answered() -> None:
    r = make_relay()
    assert r.receive(_invite(extra="User-Agent: friendly-scanner\r\n"), PHONE, 0.0) == []
    assert r.counters["dropped_scanner"] == 1 and r.counters["scanner_friendly_scanner"] == 1
    assert [a.data for a in r.receive(b"\r\n\r\n", PHONE, 0.0)] == [b"\r\n"]  # type: ignore[union-attr]


def test_flood_blocks_one_source_only() -> None:
    r = make_relay(limit=20)
    for _ in range(50):
        r.receive(_invite(), PHONE, 0.0)
    assert r.counters["dropped_rate_limited"] == 30
    assert r.receive(_invite(), PHONE, 5.0) == []  # still blocked
    other = Flow("p", "udp", "127.0.0.3", 5070)
    assert outcome(r.receive(_invite(), other, 5.0))[0] == "forward"
    assert outcome(r.receive(_invite(), PHONE, 100.0))[0] == "forward"  # block expired


def test_sdp_goes_to_media_and_bye_releases() -> None:
    r = make_relay()
    body = "v=0\r\nc=IN IP4 127.0.0.2\r\nm=audio 4000 RTP/AVP 0\r\n"
    data = _invite(extra="Content-Type: application/sdp\r\n").replace(
        b"Content-Length: 0\r\n\r\n", f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
    [step] = r.receive(data, PHONE, 0.0)
    assert isinstance(step, MediaStep) and step.op == "offer" and step.side == "phone"
    assert step.instance_rtp_only is False
    bye = _invite().replace(b"INVITE sip", b"BYE sip").replace(b"1 INVITE", b"2 BYE")
    r.receive(bye, PHONE, 1.0)
    assert r.released == ["c1"]
    # the PBX target refuses SRTP offers: the phone's offer says so to the media relay
    r.rtp_only = frozenset({(PBX.transport, PBX.host, PBX.port)})
    [step] = r.receive(data.replace(b"Call-ID: c1", b"Call-ID: c2"), PHONE, 2.0)
    assert isinstance(step, MediaStep) and step.instance_rtp_only is True


@given(st.sampled_from(cases()), st.integers(min_value=0, max_value=2000), st.binary(max_size=8),
       st.sampled_from(["p", "b"]))
def test_fuzz_relay_never_raises(case: dict[str, str], pos: int, junk: bytes, side: str) -> None:
    """Mutated torture messages from either side: actions or nothing, never an exception."""
    data = bytearray((TORTURE / case["file"]).read_bytes())
    pos = min(pos, len(data))
    data[pos:pos + len(junk)] = junk
    actions = make_relay().receive(bytes(data), Flow(side, "udp", "127.0.0.2", 5070), 0.0)
    for a in actions:
        assert isinstance(a, Send | MediaStep)
        if isinstance(a, Send) and a.flow.side == side:  # only locally generated replies go back
            assert a.flow.ip == "127.0.0.2"


def _scanned_top_via(params: str, more: str = "") -> Via | None:
    msg = scan(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:6000" + params.encode() + more.encode() +
               b"\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
               b"Content-Length: 0\r\n\r\n")
    return None if msg is None else msg.vias[0]


_VALUE = st.from_regex(r"(z9hG4bK(pf)?)?[A-Za-z0-9_=-]{0,6}", fullmatch=True)
_PARAM = st.tuples(st.sampled_from(["branch", "Branch", "pf", "PF", "rport", "received", "x"]),
                   st.one_of(st.none(), st.just(""), _VALUE))
_PARAMS = st.lists(_PARAM, max_size=4).map(lambda ps: "".join(f";{k}" if v is None else f";{k}={v}" for k, v in ps))
_MORE = st.sampled_from(["", ", SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1"])


@given(_PARAMS, st.sampled_from(["", ";rport"]), _MORE)
def test_client_via_fast_shape_reads_like_the_general_case(params: str, rport: str, more: str) -> None:
    """Whatever params a request's top Via brings (as the scanner reads them), the quick read of
    the common shape writes what the general one writes."""
    src = Flow("p", "udp", "192.0.2.7", 40000)
    for p in (params, ";branch=z9hG4bK-1-0" + rport, ";branch=" + params + rport):
        top = _scanned_top_via(p, more)
        if top is not None:
            assert _client_via(top, top.sent_by, src) == _client_via_general(top, top.sent_by, src)


@given(_PARAMS, _MORE)
def test_own_via_fast_shape_reads_like_the_general_case(params: str, more: str) -> None:
    """Whatever params a response's top Via brings (as the scanner reads them), the quick read of
    our own shape finds the token the general one finds."""
    for p in (params, f";branch={BRANCH}0a1b;pf=tok" + params, f";branch={BRANCH}0a1b" + params):
        top = _scanned_top_via(p, more)
        if top is not None:
            assert _own_token(top) == _own_token_general(top)


def test_linphone_registers_and_kamailio_answer_reaches_it() -> None:
    """linphonec's REGISTER (RFC 5626 Contact) to kamailio and kamailio's 200 OK (RFC 5627 GRUUs)
    back: the flow alias goes into the Contact URI, the instance id arrives unchanged, and the
    200 OK, whose quoted GRUUs hold ";", is forwarded to the phone."""
    r = make_relay()
    phone = Flow("p", "udp", "127.0.0.2", 5070)
    [send] = r.receive(LINPHONE_REGISTER.replace(b"sip:example.com", b"sip:pbx.test"), phone, 0.0)
    assert isinstance(send, Send) and send.flow == Flow("b", "udp", "127.0.0.9", 5060)
    contact = parse_name_addr(parse(send.data).get("Contact") or "")
    assert contact.params["+sip.instance"] == f'"<{INSTANCE}>"' and contact.params["reg-id"] == "1"
    assert r.signer.open(contact.uri.params["pf-flow"] or "") == phone
    assert contact.uri.params["transport"] == "udp" and contact.uri.host == "127.0.0.2"
    [back] = r.receive(kamailio_register_ok(send.data), Flow("b", "udp", "127.0.0.9", 5060), 0.0)
    assert isinstance(back, Send) and back.flow == phone
    assert f';pub-gruu="sip:alice@example.com;gr={INSTANCE}"'.encode() in back.data
    assert r.counters["malformed"] == 0


# ---- the all-in-one layout: the PBX on the proxy's address, another port -------------------
ALL_IN_ONE_PBX = Flow("b", "udp", "127.0.0.1", 5080)


def all_in_one_relay() -> Relay:
    phone = {"udp": Local("udp", "127.0.0.1", 5060), "tcp": Local("tcp", "127.0.0.1", 5060)}
    backend = {"udp": Local("udp", "127.0.0.1", 6000), "tcp": Local("tcp", "127.0.0.1", 6000)}
    return Relay({"pbx.test": Target("udp", "127.0.0.1", 5080)}, phone, backend, frozenset({"proxy.test"}))


def _answer(req: bytes, record_route: str, contact: str) -> bytes:
    """The 200 OK a UAS behind a record-routing PBX sends back for `req` (as received by the PBX,
    with the PBX's Record-Route on top of pforte's)."""
    m = parse(req)
    lines = ["SIP/2.0 200 OK", *(f"Via: {v}" for v in m.all("Via")), f"Record-Route: {record_route}",
             *(f"Record-Route: {v}" for v in m.all("Record-Route")), f"From: {m.get('From')}",
             f"To: {m.get('To')};tag=as5f1c", f"Call-ID: {m.get('Call-ID')}", f"CSeq: {m.get('CSeq')}",
             f"Contact: {contact}", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def _in_dialog(ok: bytes, method: str, cseq: int, via: str) -> bytes:
    """An in-dialog request as the UAC (baresip) builds it from the 200 OK it got: Request-URI
    the remote Contact, Route the Record-Route reversed (RFC 3261 §12.1.2)."""
    m = parse(ok)
    target = parse_name_addr(m.get("Contact") or "").uri
    routes = list(reversed(m.all("Record-Route")))
    lines = [f"{method} {target} SIP/2.0", f"Via: {via}", "Max-Forwards: 70",
             *(f"Route: {r}" for r in routes), f"From: {m.get('From')}", f"To: {m.get('To')}",
             f"Call-ID: {m.get('Call-ID')}", f"CSeq: {cseq} {method}", "User-Agent: baresip v1.0.0",
             "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def test_all_in_one_ack_and_bye_keep_the_pbx_route() -> None:
    """kamailio on 127.0.0.1:5080, pforte on 127.0.0.1:5060/6000: the phone's ACK and BYE name
    pforte's two Record-Routes, then the PBX's. Only ours are popped: the PBX gets its own Route
    (once it was taken for ours by its host alone: the PBX resent its 200 OK, the BYE got 404)."""
    r = all_in_one_relay()
    [inv] = r.receive(_invite(), PHONE, 0.0)
    assert isinstance(inv, Send) and inv.flow == ALL_IN_ONE_PBX
    pbx_rr = "<sip:127.0.0.1:5080;lr;ftag=1>"
    [ok] = r.receive(_answer(inv.data, pbx_rr, "<sip:bob@127.0.0.1:5090>"), ALL_IN_ONE_PBX, 0.1)
    assert isinstance(ok, Send) and ok.flow == PHONE
    for method, cseq in (("ACK", 1), ("BYE", 2)):
        req = _in_dialog(ok.data, method, cseq, f"SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK{method};rport")
        [fwd] = r.receive(req, PHONE, 0.2)
        assert isinstance(fwd, Send) and fwd.flow == ALL_IN_ONE_PBX, method
        got = parse(fwd.data)
        assert got.all("Route") == [pbx_rr] and got.uri == "sip:bob@127.0.0.1:5090", method


@pytest.mark.parametrize(("route", "ours"), [
    ("<sip:127.0.0.1:5060;lr>", True), ("<sip:127.0.0.1;lr>", True), ("<sip:proxy.test;lr>", True),
    ("<sip:127.0.0.1:6000;transport=tcp;lr>", True), ("<sip:127.0.0.1:5060;transport=TCP;lr>", True),
    ("<sip:127.0.0.1:5080;lr>", False), ("<sip:127.0.0.1:5060;transport=tls;lr>", False),
    ("<sips:127.0.0.1:5060;lr>", False), ("<sip:proxy.test:5080;lr>", False), ("<sip:127.0.0.9:5060;lr>", False),
])
def test_a_route_is_ours_by_host_port_and_transport(route: str, ours: bool) -> None:
    assert all_in_one_relay()._names_us(parse_name_addr(route).uri) is ours


# ---- spirals and loops: phone -> pforte -> PBX -> pforte -> phone ---------------------------
PHONE_B = Flow("p", "udp", "127.0.0.3", 5072)
PBX_FLOW = Flow("b", "udp", "127.0.0.9", 5060)


def _pbx_forwards(req: bytes, ruri: str | None = None, route: str | None = None, rr: bool = False) -> bytes:
    """`req` as kamailio sends it on (as received from pforte): its Via on top, Max-Forwards less
    one, the Request-URI and Route replaced when given, its Record-Route added when `rr`."""
    head, _, body = req.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, uri, version = lines[0].split(" ")
    out = [f"{method} {ruri or uri} {version}", "Via: SIP/2.0/UDP 127.0.0.9:5060;branch=z9hG4bKk1d.0"]
    if rr:
        out.append("Record-Route: <sip:127.0.0.9;lr;ftag=1>")
    if route is not None:
        out.append(f"Route: {route}")
    for ln in lines[1:]:
        name = ln.partition(":")[0]
        if name == "Max-Forwards":
            ln = f"Max-Forwards: {int(ln.partition(':')[2]) - 1}"
        elif name == "Route" and route is not None:
            continue
        out.append(ln)
    return "\r\n".join(out).encode("latin-1") + b"\r\n\r\n" + body


def _pbx_answers(resp: bytes) -> bytes:
    """A response kamailio sends back: its own (top) Via removed."""
    head, _, body = resp.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    via = next(i for i, ln in enumerate(lines) if ln.startswith("Via:"))
    return "\r\n".join(lines[:via] + lines[via + 1:]).encode("latin-1") + b"\r\n\r\n" + body


def _register_b(r: Relay) -> tuple[str, str]:
    """Phone B registers through pforte: (its Contact and Path as the PBX stored them)."""
    reg = (b"REGISTER sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.3:5072;branch=z9hG4bKr1;rport\r\n"
           b"From: <sip:bob@pbx.test>;tag=r1\r\nTo: <sip:bob@pbx.test>\r\nCall-ID: reg-b\r\nCSeq: 1 REGISTER\r\n"
           b"Contact: <sip:bob@127.0.0.3:5072>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    [fwd] = r.receive(reg, PHONE_B, 0.0)
    assert isinstance(fwd, Send)
    m = parse(fwd.data)
    return str(parse_name_addr(m.get("Contact") or "").uri), m.get("Path") or ""


def test_extension_to_extension_call_spirals_through_pforte() -> None:
    """Phone A calls phone B, both registered through pforte: the PBX sends the INVITE back to
    pforte towards B's Contact over B's Path. Our Via is in it already, but the Request-URI and
    Route changed: a spiral (RFC 3261 §16.3 step 4), forwarded, not answered with 482. The call
    completes both ways through the two passes."""
    r = make_relay()
    contact_b, path_b = _register_b(r)
    [inv1] = r.receive(_invite(), PHONE, 1.0)
    assert isinstance(inv1, Send) and inv1.flow == PBX_FLOW
    [inv2] = r.receive(_pbx_forwards(inv1.data, ruri=contact_b, route=path_b, rr=True), PBX_FLOW, 1.1)
    assert isinstance(inv2, Send) and inv2.flow == PHONE_B, inv2.data[:200]
    assert parse(inv2.data).uri == contact_b and r.counters["spirals"] == 1 and r.counters["loops"] == 0
    # B answers; the 200 OK goes back over both passes to A
    ok_b = _answer(inv2.data, "", "<sip:bob@127.0.0.3:5072>").replace(b"Record-Route: \r\n", b"")
    [ok1] = r.receive(ok_b, PHONE_B, 1.2)
    assert isinstance(ok1, Send) and ok1.flow == PBX_FLOW
    [ok2] = r.receive(_pbx_answers(ok1.data), PBX_FLOW, 1.3)
    assert isinstance(ok2, Send) and ok2.flow == PHONE and b"SIP/2.0 200 OK" in ok2.data
    # A's ACK and B's BYE follow the Record-Route set through both passes
    ack = _in_dialog(ok2.data, "ACK", 1, "SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bKa1;rport")
    [ack1] = r.receive(ack, PHONE, 1.4)
    assert isinstance(ack1, Send) and ack1.flow == PBX_FLOW
    assert parse(ack1.data).all("Route")[0] == "<sip:127.0.0.9;lr;ftag=1>"
    pbx_ack = _pbx_forwards(ack1.data, route=", ".join(parse(ack1.data).all("Route")[1:]))
    [ack2] = r.receive(pbx_ack, PBX_FLOW, 1.5)
    assert isinstance(ack2, Send) and ack2.flow == PHONE_B
    rr_b = ", ".join(parse(inv2.data).all("Record-Route"))
    bye = (f"BYE sip:a@127.0.0.2:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.3:5072;branch=z9hG4bKb1;rport\r\n"
           f"Route: {rr_b}\r\nFrom: <sip:bob@pbx.test>;tag=as5f1c\r\nTo: <sip:a@pbx.test>;tag=1\r\n"
           "Call-ID: c1\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
    [bye1] = r.receive(bye, PHONE_B, 2.0)
    assert isinstance(bye1, Send) and bye1.flow == PBX_FLOW
    [bye2] = r.receive(_pbx_forwards(bye1.data, route=", ".join(parse(bye1.data).all("Route")[1:])), PBX_FLOW, 2.1)
    assert isinstance(bye2, Send) and bye2.flow == PHONE
    assert r.counters["loops"] == 0 and r.counters["spirals"] == 3


def test_a_real_loop_is_refused_with_482_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A PBX that sends the INVITE back unchanged (only its Via and Max-Forwards differ)."""
    r = make_relay()
    [inv1] = r.receive(_invite(), PHONE, 1.0)
    assert isinstance(inv1, Send)
    with caplog.at_level(logging.INFO, logger="services.sip"):
        [reply] = r.receive(_pbx_forwards(inv1.data), PBX_FLOW, 1.1)
    assert isinstance(reply, Send) and reply.flow == PBX_FLOW and reply.data.startswith(b"SIP/2.0 482 ")
    assert r.counters["loops"] == 1
    assert any("reason=loop" in rec.getMessage() and "c1" in rec.getMessage() for rec in caplog.records)
    # an in-dialog request from a phone whose Route set does not start with ours (every call
    # is record-routed through us, so it was not learned from a dialog): refused, not sent on
    bye = (b"BYE sip:bob@127.0.0.9:5090 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bKb2;rport\r\n"
           b"Route: <sip:127.0.0.9;lr;ftag=1>\r\nFrom: <sip:a@pbx.test>;tag=1\r\nTo: <sip:bob@pbx.test>;tag=2\r\n"
           b"Call-ID: c1\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    [refused] = r.receive(bye, PHONE, 2.0)
    assert isinstance(refused, Send) and refused.flow == PHONE and refused.data.startswith(b"SIP/2.0 403 ")
    assert r.counters["preloaded_route"] == 1


def test_cancel_and_failure_ack_share_the_invite_branch() -> None:
    """A stateless proxy's CANCEL and non-2xx ACK must carry the INVITE's branch downstream
    (RFC 3261 §16.11): the loop mark in it leaves out what differs between them."""
    r = make_relay()
    branches = []
    for method, to in (("INVITE", ""), ("CANCEL", ""), ("ACK", ";tag=pbx9")):
        data = (_invite().replace(b"INVITE sip", f"{method} sip".encode()).replace(b"1 INVITE", f"1 {method}".encode())
                .replace(b"<sip:bob@pbx.test>\r\n", f"<sip:bob@pbx.test>{to}\r\n".encode()))
        [fwd] = r.receive(data, PHONE, 0.0)
        branches.append(parse(fwd.data).all("Via")[0])  # type: ignore[union-attr]
    assert branches[0] == branches[1] == branches[2]


def _with_sdp(data: bytes, ip: str, port: int = 4000) -> bytes:
    body = f"v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
    return data.replace(b"Content-Length: 0\r\n\r\n", f"Content-Type: application/sdp\r\nContent-Length: "
                        f"{len(body)}\r\n\r\n{body}".encode())


def _sent(actions: list[Send | MediaStep]) -> tuple[str, Flow, bytes]:
    """("media <op> <side>" or "send", where to, what) — a MediaStep as a pass-through relay sends it."""
    [a] = actions
    if isinstance(a, MediaStep):
        return f"media {a.op} {a.side}", a.flow, a.msg.serialize()
    return "send", a.flow, a.data


def test_each_pass_of_a_spiralling_call_has_media_of_its_own() -> None:
    """A call through pforte twice (phone A -> pforte -> PBX -> pforte -> phone B) is two
    dialogs: every SDP goes to the media relay, on the pass of the phone it came from or goes to
    (keys `c1` and `c1 <B's address>`), whichever side offers; each pass is released on its own."""
    r = make_relay()
    contact_b, path_b = _register_b(r)
    [a] = r.receive(_with_sdp(_invite(), "127.0.0.2"), PHONE, 1.0)
    assert isinstance(a, MediaStep) and (a.op, a.side, a.call_id) == ("offer", "phone", "c1")
    inv1 = a.msg.serialize()
    pass_b = "c1 127.0.0.3:5072"
    [a] = r.receive(_pbx_forwards(inv1, ruri=contact_b, route=path_b, rr=True), PBX_FLOW, 1.1)
    assert isinstance(a, MediaStep) and (a.op, a.side, a.call_id, a.flow) == ("offer", "instance", pass_b, PHONE_B)
    inv2 = a.msg.serialize()
    ok_b = _with_sdp(_answer(inv2, "<sip:127.0.0.9;lr;ftag=1>", "<sip:bob@127.0.0.3:5072>"), "127.0.0.3")
    [a] = r.receive(ok_b, PHONE_B, 1.2)
    assert isinstance(a, MediaStep) and (a.op, a.side, a.call_id, a.flow) == ("answer", "phone", pass_b, PBX_FLOW)
    r.dialogs.answered(pass_b)
    [a] = r.receive(_pbx_answers(a.msg.serialize()), PBX_FLOW, 1.3)
    assert isinstance(a, MediaStep) and (a.op, a.side, a.call_id, a.flow) == ("answer", "instance", "c1", PHONE)
    r.dialogs.answered("c1")
    # B puts the call on hold: its re-INVITE is an offer on B's pass, then on A's
    rr_b = ", ".join(parse(inv2).all("Record-Route"))
    in_dialog = (f"INVITE sip:a@127.0.0.2:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.3:5072;branch=z9hG4bKh1\r\n"
                 f"Route: {rr_b}\r\nFrom: <sip:bob@pbx.test>;tag=as5f1c\r\nTo: <sip:a@pbx.test>;tag=1\r\n"
                 "Call-ID: c1\r\nCSeq: 2 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
    [a] = r.receive(_with_sdp(in_dialog, "127.0.0.3"), PHONE_B, 2.0)
    assert isinstance(a, MediaStep) and (a.op, a.side, a.call_id, a.flow) == ("offer", "phone", pass_b, PBX_FLOW)
    re1 = a.msg.serialize()
    route = ", ".join(parse(re1).all("Route")[1:])
    [a] = r.receive(_pbx_forwards(re1, route=route), PBX_FLOW, 2.1)
    assert isinstance(a, MediaStep) and (a.op, a.side, a.call_id, a.flow) == ("offer", "instance", "c1", PHONE)
    bye = in_dialog.replace(b"INVITE sip", b"BYE sip").replace(b"2 INVITE", b"3 BYE")
    got, to, bye1 = _sent(r.receive(bye, PHONE_B, 3.0))
    assert r.released == [pass_b]
    _sent(r.receive(_pbx_forwards(bye1, route=", ".join(parse(bye1).all("Route")[1:])), PBX_FLOW, 3.1))
    assert r.released == [pass_b, "c1"] and r.dialogs.calls == {}


def test_a_call_id_with_whitespace_is_refused() -> None:
    """RFC 3261 §25.1: a Call-ID is a word, no whitespace; a spiral's second pass is keyed by the
    Call-ID, a space and its phone's address, which no phone's Call-ID may then spell."""
    r = make_relay()
    [a] = r.receive(_invite().replace(b"Call-ID: c1", b"Call-ID: c1 127.0.0.3:5072"), PHONE, 1.0)
    assert isinstance(a, Send) and a.data.startswith(b"SIP/2.0 400 Bad Request (call id malformed)")


def test_an_unsent_invite_and_timer_c_end_an_unanswered_dialog_for_its_media_to_go_back() -> None:
    """Every way out of an offer releases the call's media: an INVITE the transport could not send
    (`Relay.unsent`: the PBX refused the connection) at once, an unanswered one at Timer C."""
    from services.sip.dialogs import SETUP_TIMEOUT

    r = make_relay()
    [a] = r.receive(_with_sdp(_invite(), "127.0.0.2"), PHONE, 1.0)
    assert isinstance(a, MediaStep) and a.op == "offer"
    sent = a.msg.serialize()
    assert r.unsent(b"BYE sip:x SIP/2.0\r\n\r\n") == []  # only an INVITE sets a call up
    assert r.unsent(sent) == ["c1"] and "c1" not in r.dialogs.calls
    assert r.unsent(sent) == [] and r.counters["unsent_invites_released"] == 1
    r = make_relay()
    r.receive(_with_sdp(_invite(), "127.0.0.2"), PHONE, 1.0)
    assert r.expire(1.0 + SETUP_TIMEOUT - 1) == []
    assert r.expire(1.0 + SETUP_TIMEOUT + 1) == ["c1"]
