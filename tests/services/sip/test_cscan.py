"""The C scanner reads every input exactly as the Python scanner does: same verdict, same fields.

The module is imported directly, so a tree whose extension did not build fails here instead of
quietly testing the Python scanner twice."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.sip import _cscan  # type: ignore[attr-defined]
from services.sip.message import MAX_MESSAGE, SipError, parse, valid_request_uri
from services.sip.scan import _NAME_ADDR, _VIA, SCANNER, Sip, Via, _line_cached, scan, scan_py, serialize_py
from tests.services.sip.test_scan import SAMPLES

FIELDS = ("start", "method", "uri", "status", "lines", "via_idx", "route_idx", "contact_idx", "rr_idx", "path_idx",
          "mf", "mf_idx", "cl_idx", "call_id", "cseq", "cseq_method", "to", "from_", "ctype", "ua", "proxy_require",
          "body")


def view(s: Sip | None) -> object:
    if s is None:
        return None
    return ({f: getattr(s, f) for f in FIELDS},
            [(v.transport, v.host, v.port, v.params, v.raw, v.sent_by) for v in s.vias])


def same(data: bytes) -> None:
    for datagram in (True, False):
        s = _cscan.scan(data, datagram)
        assert view(s) == view(scan_py(data, datagram)), data[:300]
        if s is not None:
            assert _cscan.serialize(s.start, s.lines, s.body) == serialize_py(s.start, s.lines, s.body)


def test_serialize_after_edits() -> None:
    s = scan(SIPP_RESPONSE)
    assert s is not None and s.serialize() == SIPP_RESPONSE
    s.set_top_via(None)
    s.insert_before(0, "Via: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKx")
    s.lines[5] = ""  # Record-Route removed
    s.body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"
    assert _cscan.serialize(s.start, s.lines, s.body) == serialize_py(s.start, s.lines, s.body)
    assert parse(s.serialize()).all("Via") == [
        "SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKx",
        "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1-0;rport=5070;received=127.0.0.1"]
    for wide in ("To: \u0100", "To: \U0001f600"):  # beyond latin-1: refused as str.encode refuses it
        with pytest.raises(UnicodeEncodeError):
            _cscan.serialize(s.start, [*s.lines, wide], b"")
    assert _cscan.serialize("SIP/2.0 200 \xe9", ["", "X: \xff"], b"") == b"SIP/2.0 200 \xe9\r\nX: \xff\r\n\r\n"


def test_the_relay_uses_the_c_scanner() -> None:
    assert SCANNER == "c" and scan is _cscan.scan


@pytest.mark.parametrize("data", SAMPLES)
def test_samples_and_their_normal_forms(data: bytes) -> None:
    same(data)
    try:
        same(parse(data).serialize())
    except SipError:
        pass


SIPP_RESPONSE = (b"SIP/2.0 200 OK\r\n"
                 b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKpf1a2b;pf=AbC-_9, "
                 b"SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1-0;rport=5070;received=127.0.0.1\r\n"
                 b"From: sipp <sip:sipp@pbx.test>;tag=1\r\nTo: <sip:service@pbx.test>;tag=2\r\n"
                 b"Call-ID: 1-4242@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
                 b"Record-Route: <sip:t1@127.0.0.1:5060;transport=udp;lr>, <sip:t2@127.0.0.1:5060;lr>\r\n"
                 b"Contact: <sip:127.0.0.1:5080;transport=UDP>\r\nContent-Type: application/sdp\r\n"
                 b"Content-Length: 4\r\n\r\nv=0\n")


@pytest.mark.parametrize("data", [
    SIPP_RESPONSE,
    SIPP_RESPONSE.replace(b"Content-Length: 4", b"l: 4").replace(b"Via:", b"v :"),
    SIPP_RESPONSE.replace(b"\r\n\r\n", b"\r\nProxy-Require: foo\r\nProxy-Require:  bar \t\r\n\r\n"),
    SIPP_RESPONSE.replace(b"127.0.0.1:5070", b"[::1]:5070"),  # IPv6: the Python reader decides
    SIPP_RESPONSE.replace(b"UDP 127.0.0.1:5070", b"udp LocalHost:05070"),  # sent_by normalised
    SIPP_RESPONSE.replace(b"UDP 127.0.0.1:5070", b"Udp h"),
    SIPP_RESPONSE.replace(b"sipp <sip:", b'"A \\"b\\"" <sip:'),  # escaped quotes: the Python reader
    SIPP_RESPONSE.replace(b"5080", b"65536"), SIPP_RESPONSE.replace(b"5080", b"05080"),
    SIPP_RESPONSE.replace(b"5070;", b"0;"), SIPP_RESPONSE.replace(b"Contact: <", b"Contact: *\r\nX: <"),
    SIPP_RESPONSE.replace(b"1 INVITE", b"4294967296 INVITE"), SIPP_RESPONSE.replace(b"1 INVITE", b"1  INVITE"),
    SIPP_RESPONSE.replace(b"1 INVITE", b"1"), SIPP_RESPONSE.replace(b"200 OK", b"200"),
    SIPP_RESPONSE.replace(b"200 OK", b"700 OK"), SIPP_RESPONSE.replace(b"\r\n\r\n", b"\r\nTo: <sip:a@b>\r\n\r\n"),
    SIPP_RESPONSE.replace(b"Content-Length: 4", b"Content-Length: 5"),
    SIPP_RESPONSE.replace(b"SIP/2.0 200 OK", b"ACK sip:a@b SIP/2.0"),  # ACK with CSeq INVITE
    SIPP_RESPONSE.replace(b"SIP/2.0 200 OK", b"BYE sip:a@b SIP/2.0"),  # CSeq method mismatch
    SIPP_RESPONSE.replace(b"SIP/2.0 200 OK", b"INVITE sip:a@b SIP/2.0\r\nMax-Forwards: 0"),
    SIPP_RESPONSE.replace(b"SIP/2.0 200 OK", b"INVITE sip:a@b SIP/2.0\r\nMax-Forwards: 256"),
    SIPP_RESPONSE.replace(b"SIP/2.0 200 OK", b"INVITE sip:a@b SIP/2.0\r\nMax-Forwards: 0070"),
    SIPP_RESPONSE.replace(b"SIP/2.0 200 OK", b"INVITE <sip:a@b> SIP/2.0"),
    SIPP_RESPONSE.replace(b"SIP/2.0 200 OK", b"INVITE  sip:a@b SIP/2.0"),
    SIPP_RESPONSE.replace(b"SIP/2.0 200 OK", b"INV@TE sip:a@b SIP/2.0"),
    SIPP_RESPONSE.replace(b"SIP/2.0 200 OK", b"INVITE sip:a@b SIP/2.0 "),
    SIPP_RESPONSE.replace(b"\r\nFrom", b"\r\n\x85From"), SIPP_RESPONSE.replace(b"Via: ", b"Via: \xa0"),
    SIPP_RESPONSE.replace(b"Call-ID: ", b"Call-ID:\t"), SIPP_RESPONSE[:60], b"",
    SIPP_RESPONSE.replace(b"\r\n\r\n", b"\r\n\r\n" + b"x" * 65600),
    # quoted header parameters (RFC 5626 instance ids, RFC 5627 GRUUs): ";" "," "<>" inside quotes
    *(SIPP_RESPONSE.replace(b"transport=UDP>", b"transport=UDP>" + p) for p in (
        b';+sip.instance="<urn:uuid:1-2>";reg-id=1', b';pub-gruu="sip:a@b;gr=urn:uuid:1-2"', b';x="a,b"',
        b';x="a,b";y="<c;d>"', b';x="a\\";b"', b';x="open', b';x="a";"b"', b';x="a"b', b";x=a;b=")),
    SIPP_RESPONSE.replace(b"tag=2", b'tag=2;x="<y;z>"'), SIPP_RESPONSE.replace(b"tag=1", b'x="a;tag=9";tag=1'),
    SIPP_RESPONSE.replace(b"Contact: <sip:127.0.0.1:5080;transport=UDP>", b'Contact: sip:c@h;x="<u;v>"'),
    SIPP_RESPONSE.replace(b"Contact: <sip:127.0.0.1:5080;transport=UDP>",
                          b'Contact: <sip:c@h>;x="a,b", *, <sip:d@h>;y="<e>,f"'),
])
def test_edge_cases(data: bytes) -> None:
    same(data)


JUNK = st.text(alphabet=st.sampled_from(list("<>@;:=\",. \t\r\n\\*0123456789sipSIP/aA-_%\x85\xa0\xe9\x00")),
               max_size=12)


@settings(max_examples=300)
@given(st.sampled_from([*SAMPLES, SIPP_RESPONSE]), st.integers(0, 2000), JUNK, st.integers(0, 3))
def test_fuzz_mutations(data: bytes, at: int, junk: str, cut: int) -> None:
    at %= len(data) + 1
    same(data[:at] + junk.encode("latin-1") + data[at + cut:])


#: a header of SIPP_RESPONSE and the name it is written with instead
LINES = {b"To: <sip:service@pbx.test>;tag=2": "To", b"From: sipp <sip:sipp@pbx.test>;tag=1": "f",
         b"Contact: <sip:127.0.0.1:5080;transport=UDP>": "Contact", b"Call-ID": "Route: <sip:x@y>\r\nCall-ID"}


@settings(max_examples=200)
@given(st.sampled_from(sorted(LINES)), st.from_regex(_NAME_ADDR, fullmatch=True), JUNK)
def test_fuzz_name_addrs(line: bytes, value: str, junk: str) -> None:
    name = LINES[line]
    for v in (value, value + junk, junk + value):
        new = name.encode() if name.endswith("Call-ID") else f"{name}: {v}".encode()  # wire bytes: UTF-8
        same(SIPP_RESPONSE.replace(line, new.replace(b"<sip:x@y>", v.encode())))


_QUOTED = st.text(alphabet=st.sampled_from(list(';,<>=:@ "\\aZ9\xe9')), max_size=10).map(lambda t: f'"{t}"')
_HPARAM = st.tuples(st.sampled_from(["+sip.instance", "pub-gruu", "reg-id", "x", "tag"]),
                    st.one_of(st.none(), st.sampled_from(["1", "a.b"]), _QUOTED))


@settings(max_examples=300)
@given(st.sampled_from(sorted(LINES)), st.lists(_HPARAM, max_size=4))
def test_fuzz_quoted_header_parameters(line: bytes, params: list[tuple[str, str | None]]) -> None:
    """Header parameters with quoted values (closed or not, escapes, ";" "," "<>" inside) after
    To, From and Contact: both scanners give the same verdict and fields."""
    tail = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params).encode("latin-1")
    if line.endswith(b"Call-ID"):
        line, tail = b"Contact: <sip:127.0.0.1:5080;transport=UDP>", b", <sip:a@b>" + tail
    same(SIPP_RESPONSE.replace(line, line + tail))


@settings(max_examples=200)
@given(st.from_regex(_VIA, fullmatch=True), st.from_regex(_VIA, fullmatch=True), JUNK)
def test_fuzz_vias(a: str, b: str, junk: str) -> None:
    for v in (a, f"{a}, {b}", f"{a},{junk}{b}", a + junk):
        same(SIPP_RESPONSE.replace(b"Via: ", f"Via: {v}\r\nVia: ".encode(), 1))


@pytest.mark.parametrize("answer", [("x", None), (1,), (-1, "v"), (99, "v"), (8, "not a tuple of Vias"), 7])
def test_a_line_reader_breaking_its_contract_raises(answer: object) -> None:
    """The C side checks what the Python reader returns instead of trusting its shape."""
    ipv6 = SIPP_RESPONSE.replace(b"127.0.0.1:5070", b"[::1]:5070")  # a line only the reader reads
    _cscan.configure(Sip, Via, lambda line: answer, valid_request_uri, MAX_MESSAGE)
    try:
        with pytest.raises(TypeError):
            _cscan.scan(ipv6)
    finally:
        _cscan.configure(Sip, Via, _line_cached, valid_request_uri, MAX_MESSAGE)
    assert _cscan.scan(ipv6) is not None


def test_configure_wants_the_via_class_it_knows() -> None:
    class Other:
        __slots__ = ("transport", "host")

    with pytest.raises((TypeError, AttributeError)):
        _cscan.configure(Sip, Other, _line_cached, valid_request_uri, MAX_MESSAGE)
    assert _cscan.scan(SIPP_RESPONSE) is not None  # the configuration in use stays
