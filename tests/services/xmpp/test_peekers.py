"""The sans-IO peekers: whole, byte by byte, with trailing junk, hostile input, and fuzzed."""

from __future__ import annotations

import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.xmpp.client_hello import MAX_HELLO, Hello, peek_client_hello
from services.xmpp.proxy_protocol import SIGNATURE, v2_header
from services.xmpp.stream_header import MAX_PREFIX, NEED_MORE, Header, Refusal, peek_stream_header

HEADER = (b"<?xml version='1.0'?>\n<stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' to='A.Example.COM' version='1.0'>")


def feed(peek, data: bytes):  # type: ignore[no-untyped-def]
    """Feed one byte at a time like a slow client; the first decisive answer."""
    for i in range(1, len(data) + 1):
        result = peek(data[:i])
        if result is not NEED_MORE:
            return result
    return NEED_MORE


def client_hello(sni: str | None, *, alpn: bool = False) -> bytes:
    ctx = ssl.create_default_context()
    if alpn:
        ctx.set_alpn_protocols(["xmpp-client"])
    if sni is None:
        ctx.check_hostname = False
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def test_stream_header_whole_bytewise_and_trailing_junk() -> None:
    want = Header(to="a.example.com", default_ns="jabber:client", end=len(HEADER))
    assert peek_stream_header(HEADER) == want
    assert feed(peek_stream_header, HEADER) == want
    assert peek_stream_header(HEADER + b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\x00\xff") == want
    for i in range(len(HEADER)):
        assert peek_stream_header(HEADER[:i]) is NEED_MORE


@pytest.mark.parametrize(("data", "to"), [
    (b"<stream:stream to='x.org'>", "x.org"),
    (b"\xef\xbb\xbf  <stream:stream to=\"x.org.\" >", "x.org"),
    (b"<s:stream to = 'user@X.org/res'>", "x.org"),
    (b"<stream to='&#x78;&#46;org'>", "x.org"),
    (b"<stream:stream version='1.0' xmlns='jabber:client'>", None),
    (b"<stream:stream to='a&amp;b'>", "a&b"),
])
def test_stream_header_variants(data: bytes, to: str | None) -> None:
    result = peek_stream_header(data)
    assert isinstance(result, Header) and result.to == to
    assert feed(peek_stream_header, data) == result


@pytest.mark.parametrize(("data", "reason"), [
    (b"GET / HTTP/1.1\r\n", "garbage"),
    (b"\x16\x03\x01\x02\x00", "garbage"),
    (b"<!DOCTYPE x [<!ENTITY a 'b'>]><stream:stream to='&a;'>", "garbage"),
    (b"<stream:stream to='&a;'>", "bad_entity"),
    (b"<stream:stream to='&#0;'>", "bad_char_ref"),
    (b"<stream:stream to='a' to='b'>", "duplicate_attribute"),
    (b"<stream:stream to='a'/>", "empty_stream"),
    (b"<message to='a'>", "not_stream"),
    (b"<?php echo 1 ?><stream:stream>", "processing_instruction"),
    (b"<stream:stream to='a<b'>", "garbage"),
    (b"<stream:stream to='a'version='1'>", "garbage"),
    (b"<stream:stream to='\xff'>", "bad_utf8"),
])
def test_stream_header_refusals(data: bytes, reason: str) -> None:
    assert peek_stream_header(data) == Refusal(reason)
    assert feed(peek_stream_header, data) == Refusal(reason)


def test_stream_header_oversized_prefix() -> None:
    data = b"<stream:stream to='a' x='" + b"y" * MAX_PREFIX
    assert peek_stream_header(data) == Refusal("oversized")
    assert peek_stream_header(b" " * MAX_PREFIX) == Refusal("oversized")
    assert peek_stream_header(data[:MAX_PREFIX - 1]) is NEED_MORE


@given(st.binary(max_size=300))
def test_stream_header_fuzz_never_raises_and_is_prefix_consistent(data: bytes) -> None:
    whole = peek_stream_header(data)
    first = feed(peek_stream_header, data)
    assert first == whole or (isinstance(first, Header) and isinstance(whole, Header))
    if isinstance(whole, Header):
        assert first == whole


@given(st.binary(max_size=60), st.integers(min_value=0, max_value=len(HEADER)))
def test_stream_header_fuzz_mutations(junk: bytes, cut: int) -> None:
    data = HEADER[:cut] + junk + HEADER[cut:]
    assert feed(peek_stream_header, data) == peek_stream_header(data)


@pytest.mark.parametrize("alpn", [False, True])
def test_client_hello_sni_whole_bytewise_and_fragmented(alpn: bool) -> None:
    hello = client_hello("B.Example.com", alpn=alpn)
    assert peek_client_hello(hello) == Hello("b.example.com")
    assert feed(peek_client_hello, hello) == Hello("b.example.com")
    assert peek_client_hello(hello + b"\x17\x03\x03junk") == Hello("b.example.com")
    # the same handshake message split into three TLS records
    body = hello[5:]
    parts = [body[:7], body[7:100], body[100:]]
    records = b"".join(b"\x16\x03\x01" + len(p).to_bytes(2, "big") + p for p in parts)
    assert feed(peek_client_hello, records) == Hello("b.example.com")


def test_client_hello_without_sni_and_refusals() -> None:
    assert peek_client_hello(client_hello(None)) == Hello(None)
    assert peek_client_hello(b"<stream:stream to='a'>") == Refusal("not_tls")
    assert peek_client_hello(b"\x16\x03\x01\x00\x00") == Refusal("bad_record")
    assert peek_client_hello(b"\x16\x03\x01\x00\x04\x02\x00\x00\x00") == Refusal("not_client_hello")
    big = b"\x16\x03\x01\x40\x00\x01\xff\xff\xff"
    assert peek_client_hello(big) == Refusal("oversized")
    one_byte_records = b"".join(b"\x16\x03\x01\x00\x01" + bytes([b]) for b in b"\x01\x00\x30\x00")
    many = one_byte_records + b"\x16\x03\x01\x00\x01\x03" * 4000
    assert peek_client_hello(many) == Refusal("oversized")
    assert len(many) > MAX_HELLO


@given(st.binary(max_size=400))
def test_client_hello_fuzz_never_raises(data: bytes) -> None:
    for candidate in (data, b"\x16\x03\x01" + data):
        assert feed(peek_client_hello, candidate) == peek_client_hello(candidate)


@given(st.integers(min_value=0), st.binary(min_size=1, max_size=8))
def test_client_hello_fuzz_mutations(pos: int, junk: bytes) -> None:
    hello = client_hello("x.example")
    pos %= len(hello)
    data = hello[:pos] + junk + hello[pos + len(junk):]
    assert feed(peek_client_hello, data) == peek_client_hello(data)


def test_proxy_v2_header() -> None:
    h = v2_header(("127.0.0.2", 40000), ("127.0.0.1", 5222))
    assert h.startswith(SIGNATURE) and h[12:14] == b"\x21\x11"
    assert h[16:] == bytes([127, 0, 0, 2, 127, 0, 0, 1]) + (40000).to_bytes(2, "big") + (5222).to_bytes(2, "big")
    assert v2_header(("::1", 1), ("127.0.0.1", 2))[12] == 0x20
