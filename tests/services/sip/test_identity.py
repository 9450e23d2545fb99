"""Identity and routing policed at the border (issue 20 §3), each attack as real bytes through the
relay: what a phone asserts about itself, where it asks its request to go, which instance's
addresses it names, and sips: over hops without TLS."""

from __future__ import annotations

import logging

import pytest

from services.sip.flow import Flow, FlowSigner
from services.sip.message import parse
from services.sip.protect import RateLimiter
from services.sip.proxy import Local, Relay, Send, Target
from tests.services.sip.test_proxy import make_relay

PHONE = Flow("p", "udp", "127.0.0.2", 5070)
PHONE_TLS = Flow("p", "tls", "127.0.0.2", 5071, 3)


def _invite(ruri: str = "sip:bob@pbx.test", extra: str = "", frm: str = "a@pbx.test", to: str = "bob@pbx.test",
            method: str = "INVITE") -> bytes:
    return (f"{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bKi1\r\n{extra}"
            f"From: <sip:{frm}>;tag=1\r\nTo: <sip:{to}>\r\nCall-ID: id1\r\nCSeq: 1 {method}\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()


def _forwarded(actions: list) -> bytes:
    [a] = actions
    assert isinstance(a, Send) and a.flow.side == "b", getattr(a, "data", a)[:80]
    return a.data


def _refused(actions: list, status: int) -> None:
    [a] = actions
    assert isinstance(a, Send) and a.flow.side == "p" and a.data.startswith(f"SIP/2.0 {status} ".encode()), a.data[:80]


@pytest.mark.parametrize("line", [
    "P-Asserted-Identity: <sip:ceo@pbx.test>", "p-asserted-identity: <sip:ceo@pbx.test>",
    "P-Asserted-Identity : <sip:ceo@pbx.test>", "P-ASSERTED-IDENTITY\t: tel:+15551234",
    "P-Preferred-Identity: <sip:ceo@pbx.test>", "p-preferred-identity  :<sip:ceo@pbx.test>",
])
def test_asserted_identity_from_a_phone_never_reaches_the_pbx(line: str, caplog: pytest.LogCaptureFixture) -> None:
    """main forwarded P-Asserted-Identity, also in lower case and with a space before the colon."""
    caplog.set_level(logging.INFO, logger="services.sip")
    out = _forwarded(make_relay().receive(_invite(extra=line + "\r\n"), PHONE, 0.0))
    assert b"identity" not in out.lower() and b"ceo@" not in out and b"+1555" not in out
    assert parse(out).get("Call-ID") == "id1"
    assert any("reason=identity_from_phone" in m.getMessage() for m in caplog.records)


def test_a_pbx_may_assert_identity_towards_phones() -> None:
    """Only the phone side is untrusted: the PBX's P-Asserted-Identity goes on (RFC 3325 §5)."""
    r = make_relay()
    path = _forwarded(r.receive(
        b"REGISTER sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bKr\r\n"
        b"From: <sip:a@pbx.test>;tag=1\r\nTo: <sip:a@pbx.test>\r\nCall-ID: r\r\nCSeq: 1 REGISTER\r\n"
        b"Contact: <sip:a@127.0.0.2:5070>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", PHONE, 0.0))
    route = parse(path).get("Path")
    inv = (f"INVITE sip:a@127.0.0.2:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:5060;branch=z9hG4bKp\r\n"
           f"Route: {route}\r\nP-Asserted-Identity: <sip:100@pbx.test>\r\nFrom: <sip:100@pbx.test>;tag=9\r\n"
           "To: <sip:a@pbx.test>\r\nCall-ID: in1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    [a] = r.receive(inv.encode(), Flow("b", "udp", "127.0.0.9", 5060), 1.0)
    assert isinstance(a, Send) and a.flow == PHONE and b"P-Asserted-Identity: <sip:100@pbx.test>" in a.data


@pytest.mark.parametrize("route", ["<sip:10.0.0.5;lr>", "<sip:127.0.0.1:5080;lr>", "<sip:pbx-internal.lan;lr>"])
def test_a_preloaded_route_is_refused(route: str) -> None:
    """main forwarded preloaded Route headers naming internal hosts or loopback ports unchanged."""
    r = make_relay()
    _refused(r.receive(_invite(extra=f"Route: {route}\r\n"), PHONE, 0.0), 403)
    ours = "<sip:127.0.0.1:5060;lr>"  # ours first, then another: still preloaded on an initial request
    _refused(r.receive(_invite(extra=f"Route: {ours}, {route}\r\n"), PHONE, 0.0), 403)
    assert r.counters["preloaded_route"] == 2
    assert _forwarded(r.receive(_invite(extra=f"Route: {ours}\r\n"), PHONE, 0.0))  # only ours: fine


def test_maddr_is_removed_from_the_request_uri() -> None:
    out = _forwarded(make_relay().receive(_invite("sip:bob@pbx.test;maddr=10.0.0.7;transport=udp"), PHONE, 0.0))
    assert out.startswith(b"INVITE sip:bob@pbx.test;transport=udp SIP/2.0\r\n") and b"10.0.0.7" not in out


@pytest.mark.parametrize("ruri", ["sip:bob@127.0.0.1:5080", "sip:bob@127.0.0.5", "sip:bob@10.1.2.3",
                                  "sip:bob@[::1]:5060", "sip:bob@224.0.0.1", "sip:bob@0.0.0.0"])
def test_a_request_uri_naming_loopback_or_an_address_not_of_the_instance_is_refused(ruri: str) -> None:
    """main routed such a request by its To domain and passed the Request-URI on to the PBX."""
    _refused(make_relay().receive(_invite(ruri), PHONE, 0.0), 403)


def test_a_request_uri_naming_us_or_the_instances_pbx_is_routed() -> None:
    r = make_relay()
    assert _forwarded(r.receive(_invite("sip:bob@127.0.0.1:5060"), PHONE, 0.0))  # our address and port
    assert _forwarded(r.receive(_invite("sip:bob@127.0.0.9"), PHONE, 0.0))  # the instance's PBX


def _two_tenants() -> Relay:
    phone = {"udp": Local("udp", "127.0.0.1", 5060)}
    return Relay({"a.test": Target("udp", "127.0.0.9", 5060), "b.test": Target("udp", "127.0.0.10", 5060)}, phone,
                 {"udp": Local("udp", "127.0.0.1", 6000)}, frozenset({"proxy.test"}), RateLimiter(limit=1000),
                 FlowSigner())


@pytest.mark.parametrize(("frm", "to"), [("alice@b.test", "alice@b.test"), ("alice@a.test", "alice@b.test"),
                                         ("alice@b.test", "alice@a.test"), ("alice@elsewhere.example", "x@a.test")])
def test_a_register_naming_another_tenant_is_403(frm: str, to: str) -> None:
    """main forwarded a REGISTER for another tenant's AOR: only the Request-URI domain was checked."""
    r = _two_tenants()
    _refused(r.receive(_invite("sip:a.test", frm=frm, to=to, method="REGISTER"), PHONE, 0.0), 403)
    assert r.counters["foreign_domain"] == 1
    assert _forwarded(r.receive(_invite("sip:a.test", frm="alice@a.test", to="alice@a.test", method="REGISTER"),
                                PHONE, 0.0))


def test_sips_never_over_a_hop_without_tls() -> None:
    """main forwarded a sips: Request-URI received over UDP, over UDP (RFC 5630)."""
    r = make_relay()
    _refused(r.receive(_invite("sips:bob@pbx.test"), PHONE, 0.0), 416)
    tls = _invite("sips:bob@pbx.test").replace(b"SIP/2.0/UDP", b"SIP/2.0/TLS")
    _refused(r.receive(tls, PHONE_TLS, 0.0), 480)  # the instance's PBX is reached over UDP
