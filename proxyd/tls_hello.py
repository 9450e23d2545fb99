"""Read the server name and the ALPN offer from a TLS ClientHello: a pure function of the bytes.

Why: a TLS-ALPN-01 validation (RFC 8737) must get the challenge certificate, every other client
the proxy's own, and the only difference is the ALPN offer `acme-tls/1`. OpenSSL picks the
certificate before it looks at ALPN, and Python's SNI callback does not see the offer, so the
listener reads it from the ClientHello before the handshake starts (proxyd/tls_accept.py).

`peek_hello(buf)` returns None while more bytes are needed, a `Hello` once the ClientHello is
complete, and raises `NotHello` for anything else (OpenSSL then refuses it as it always does).
"""

from __future__ import annotations

from dataclasses import dataclass

#: a ClientHello is a few hundred bytes, post-quantum key shares a few KiB; more is no client of ours
MAX_HELLO = 16384
HANDSHAKE = 22
CLIENT_HELLO = 1
EXT_SERVER_NAME = 0
EXT_ALPN = 16


class NotHello(ValueError):
    pass


@dataclass(frozen=True)
class Hello:
    server_name: str | None
    alpn: tuple[str, ...]


def peek_hello(buf: bytes, limit: int = MAX_HELLO) -> Hello | None:
    """The ClientHello at the start of buf (TLS records), None while incomplete."""
    body = bytearray()
    pos = 0
    while True:
        if len(buf) < pos + 5:
            _check_short(buf, limit)
            return None
        if buf[pos] != HANDSHAKE or buf[pos + 1] != 3:
            raise NotHello("not a TLS handshake record")
        size = int.from_bytes(buf[pos + 3:pos + 5], "big")
        if size == 0:
            raise NotHello("empty record")
        if len(buf) < pos + 5 + size:
            _check_short(buf, limit)
            return None
        body += buf[pos + 5:pos + 5 + size]
        pos += 5 + size
        if len(body) >= 4:
            if body[0] != CLIENT_HELLO:
                raise NotHello("first handshake message is no ClientHello")
            need = 4 + int.from_bytes(body[1:4], "big")
            if need > limit:
                raise NotHello("ClientHello too large")
            if len(body) >= need:
                return _parse(bytes(body[4:need]))


def _check_short(buf: bytes, limit: int) -> None:
    if len(buf) > limit + 5 * 8:  # a few record headers on top of the largest hello
        raise NotHello("ClientHello too large")
    return None


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise NotHello("ClientHello truncated")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def num(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, n: int) -> bytes:
        return self.take(self.num(n))


def _parse(body: bytes) -> Hello:
    r = _Reader(body)
    r.take(2 + 32)  # legacy_version, random
    r.vector(1)  # legacy_session_id
    r.vector(2)  # cipher_suites
    r.vector(1)  # legacy_compression_methods
    if r.pos == len(body):
        return Hello(None, ())  # no extensions at all (an old client)
    ext = _Reader(r.vector(2))
    name: str | None = None
    alpn: tuple[str, ...] = ()
    while ext.pos < len(ext.data):
        kind, data = ext.num(2), _Reader(ext.vector(2))
        if kind == EXT_SERVER_NAME:
            names = _Reader(data.vector(2))
            while names.pos < len(names.data):
                name_type, value = names.num(1), names.vector(2)
                if name_type == 0:
                    name = value.decode("ascii", "replace").lower()
        elif kind == EXT_ALPN:
            protos = _Reader(data.vector(2))
            offered = []
            while protos.pos < len(protos.data):
                offered.append(protos.vector(1).decode("ascii", "replace"))
            alpn = tuple(offered)
    return Hello(name, alpn)
