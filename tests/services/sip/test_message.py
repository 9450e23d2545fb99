"""The sans-IO parser: table-driven cases fed whole, byte-by-byte (stream framer) and with
trailing bytes; the RFC 4475 torture messages; hypothesis fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.sip.framing import StreamFramer
from services.sip.message import Message, SipError, parse
from services.sip.uri import parse_name_addr, parse_uri
from tests.services.sip.torture import PARSER, TORTURE, cases

BASE = (
    "INVITE sip:bob@pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
    "From: <sip:a@pbx.test>;tag=1\r\nTo: <sip:bob@pbx.test>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n"
    "Max-Forwards: 70\r\n{extra}Content-Length: {cl}\r\n\r\n{body}"
)


def msg(extra: str = "", body: str = "", cl: int | None = None) -> bytes:
    return BASE.format(extra=extra, body=body, cl=len(body) if cl is None else cl).encode()


TABLE: list[tuple[str, bytes, int | None]] = [
    ("plain", msg(), None),
    ("compact forms",
     msg("v: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK2\r\nm: <sip:a@127.0.0.1>\r\n"), None),
    ("folded header", msg("Subject: hello\r\n  world\r\n"), None),
    ("two vias one line",
     msg("Via: SIP/2.0/UDP 127.0.0.2;branch=z9hG4bKa, SIP/2.0/TCP 127.0.0.3;branch=z9hG4bKb\r\n"), None),
    ("body", msg("Content-Type: application/sdp\r\n", "v=0\r\n"), None),
    ("missing call-id", msg().replace(b"Call-ID: c1\r\n", b""), 400),
    ("bad max-forwards", msg().replace(b"Max-Forwards: 70", b"Max-Forwards: x"), 400),
    ("cseq mismatch", msg().replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), 400),
    ("huge cseq", msg().replace(b"CSeq: 1 ", b"CSeq: 99999999999 "), 400),
    ("short body", msg(body="abc", cl=10), 400),
    ("double content-length", msg("l: 0\r\n"), 400),
    ("bad version", msg().replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), 505),
    ("unknown scheme", msg().replace(b"INVITE sip:bob@pbx.test", b"INVITE foo:bob"), 416),
    ("oversized", msg(body="x" * 70000), 513),
]


@pytest.mark.parametrize(("name", "data", "status"), TABLE, ids=[t[0] for t in TABLE])
def test_table_whole_and_with_trailing_bytes(name: str, data: bytes, status: int | None) -> None:
    # trailing octets of a datagram beyond Content-Length are ignored (RFC 3261 §18.3), except
    # where the junk itself completes a too-short body
    variants = (data,) if name == "short body" else (data, data + b"junk after the message")
    for variant in variants:
        if status is None:
            m = parse(variant)
            assert parse(m.serialize()).serialize() == m.serialize()
        else:
            with pytest.raises(SipError) as exc:
                parse(variant)
            assert exc.value.status == status


@pytest.mark.parametrize(("name", "data", "status"), [t for t in TABLE if t[2] is None], ids=lambda v: str(v)[:20])
def test_table_byte_by_byte_on_a_stream(name: str, data: bytes, status: int | None) -> None:
    framer = StreamFramer()
    out = [m for b in data + b"\r\n\r\n" + data for m in framer.feed(bytes([b]))]
    assert out == [data, b"\r\n\r\n", data]
    assert parse(out[0], datagram=False).get("Call-ID") == "c1"


def test_stream_framing_errors() -> None:
    with pytest.raises(SipError):
        StreamFramer().feed(msg().replace(b"Content-Length: 0\r\n", b""))
    with pytest.raises(SipError):
        StreamFramer().feed(msg().replace(b"Content-Length: 0", b"Content-Length: -1"))


def test_a_stream_message_too_large_or_badly_framed_keeps_its_head_for_an_answer() -> None:
    """The framer cannot read such a message whole, but its header lines name it: the service
    answers 513 (or 400) to them instead of closing without a word."""
    for data, status in ((msg(cl=70_000), 513),  # announced beyond MAX_MESSAGE
                         (msg().replace(b"Content-Length: 0\r\n\r\n", b"X-Pad: " + b"p" * 80 + b"\r\n") * 1, 0),
                         (msg().replace(b"Content-Length: 0\r\n\r\n", b"".join(  # headers that never end
                             b"X-Pad-%d: %s\r\n" % (i, b"p" * 60) for i in range(1_200))), 513),
                         (msg().replace(b"Content-Length: 0", b"Content-Length: x"), 400)):
        framer = StreamFramer()
        if status == 0:  # an incomplete head under the limit: wait for more
            assert framer.feed(data) == []
            continue
        with pytest.raises(SipError) as info:
            framer.feed(data)
        assert info.value.status == status
        assert info.value.partial is not None and info.value.partial.get("Call-ID") == "c1"
        assert info.value.partial.get("Via") == "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1"
    with pytest.raises(SipError) as info:  # no header lines that name it: nothing to answer
        StreamFramer().feed(b"INVITE sip:bob@pbx.test SIP/2.0\r\n" + b"X" * 70_000)
    assert info.value.partial is None


def test_headers_values_and_uris() -> None:
    m = parse(msg("Via: SIP/2.0/UDP 127.0.0.2;branch=z9hG4bKa, SIP/2.0/TCP 127.0.0.3;branch=z9hG4bKb\r\n"))
    assert len(m.all("Via")) == 3
    u = parse_uri("sip:user;par=u%40example.net@example.com:5061;transport=tls;lr")
    assert (u.user, u.host, u.port, u.params) == ("user;par=u%40example.net", "example.com", 5061,
                                                   {"transport": "tls", "lr": None})
    na = parse_name_addr('"A \\"B\\"" <sip:a@b.test>;tag=9')
    assert na.params == {"tag": "9"} and na.uri.host == "b.test"


@pytest.mark.parametrize("case", cases(), ids=lambda c: c["name"])
def test_torture_parser(case: dict[str, str]) -> None:
    data = (TORTURE / case["file"]).read_bytes()
    expected = PARSER.get(case["name"])
    if expected is None:
        m = parse(data)
        again = parse(m.serialize())
        assert again.serialize() == m.serialize()
        assert again.body == m.body
    else:
        with pytest.raises(SipError) as exc:
            parse(data)
        assert exc.value.status == expected


def test_torture_details() -> None:
    read = lambda n: parse((TORTURE / f"{n}.dat").read_bytes())  # noqa: E731
    assert read("wsinv").get("Max-Forwards") == "0068"
    assert b"\x00" in read("intmeth").get("To").encode("latin-1")  # type: ignore[union-attr]
    assert read("dblreq").method == "REGISTER" and read("dblreq").body == b""
    assert read("esc02").get("C%6Fntact") is not None and read("esc02").method == "RE%47IST%45R"
    mp = read("mpart01")
    assert len(mp.body) == int(mp.get("Content-Length") or 0)
    assert read("inv2543").body.startswith(b"v=0")


@given(st.binary(max_size=600))
def test_fuzz_binary_never_crashes(data: bytes) -> None:
    try:
        parse(data)
    except SipError:
        pass
    try:
        StreamFramer().feed(data)
    except SipError:
        pass


TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.!%*_+`'~", min_size=1, max_size=12)


@given(st.lists(st.tuples(TOKEN, st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=30)),
                max_size=6), st.binary(max_size=80), st.sampled_from(list(cases())))
def test_fuzz_mutated_roundtrip_is_stable(extra: list[tuple[str, str]], body: bytes, case: dict[str, str]) -> None:
    base = (TORTURE / case["file"]).read_bytes()
    head, _, _ = base.partition(b"\r\n\r\n")
    lines = b"".join(f"X-{k}: {v.strip()}\r\n".encode("latin-1") for k, v in extra)
    data = head + b"\r\n" + lines + b"Content-Length: %d\r\n\r\n" % len(body) + body
    try:
        m = parse(data)
    except SipError:
        return
    once = m.serialize()
    assert isinstance(parse(once), Message)
    assert parse(once).serialize() == once
