"""The ClientHello peek: server name and ALPN offer from real hellos (Python's OpenSSL client),
fed whole, byte by byte, split over records, with trailing bytes; anything else is NotHello."""

from __future__ import annotations

import ssl

import pytest

from proxyd.tls_hello import Hello, NotHello, peek_hello


def real_hello(server_name: str | None, alpn: list[str] | None) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_name_and_alpn_from_a_whole_hello_and_one_byte_at_a_time():
    hello = real_hello("Proxy.Example.NET", ["acme-tls/1"])
    assert peek_hello(hello) == Hello("proxy.example.net", ("acme-tls/1",))
    for end in range(len(hello)):
        assert peek_hello(hello[:end]) is None
    assert peek_hello(hello + b"\x17\x03\x03junk") == Hello("proxy.example.net", ("acme-tls/1",))


def test_a_hello_without_name_or_alpn_and_one_with_two_protocols():
    assert peek_hello(real_hello(None, None)) == Hello(None, ())
    assert peek_hello(real_hello("a.test", ["h2", "http/1.1"])) == Hello("a.test", ("h2", "http/1.1"))


def test_a_hello_split_over_two_records():
    hello = real_hello("a.test", ["acme-tls/1"])
    body = hello[5:]
    cut = len(body) // 3
    split = (hello[:3] + cut.to_bytes(2, "big") + body[:cut]
             + hello[:3] + (len(body) - cut).to_bytes(2, "big") + body[cut:])
    assert peek_hello(split) == Hello("a.test", ("acme-tls/1",))


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\n\r\n",                      # plain HTTP on the TLS port
    b"\x16\x03\x01\x00\x00",                        # an empty record
    b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00",    # a ServerHello, not a ClientHello
    b"\x16\x03\x01\x00\x08\x01\x00\x00\x04\x03\x03\x00\x00",  # a hello cut short inside its body
    b"\x16\x03\x01\x00\x04\x01\xff\xff\xff",        # a hello claiming 16 MiB
])
def test_anything_else_is_not_a_hello(data):
    with pytest.raises(NotHello):
        peek_hello(data)


def test_a_hello_dribbled_in_one_byte_records_ends_at_the_limit():
    """4 KiB announced, sent one byte per record: six bytes on the wire per byte of hello."""
    head = b"\x16\x03\x01\x00\x04\x01\x00\x10\x00"
    one = b"\x16\x03\x01\x00\x01\x00"
    assert peek_hello(head + one * 2000) is None  # 12 KB: still waiting
    with pytest.raises(NotHello):
        peek_hello(head + one * 3000)
