"""Sans-IO peeker for a TLS ClientHello: finds the SNI host name without terminating TLS.

`peek_client_hello(buf)` is a pure function of the bytes received so far. The ClientHello may
be fragmented over several TLS records (and those over several TCP segments); the handshake
fragments are joined until the whole ClientHello is present. Results:

- `NEED_MORE` while incomplete and below the limit,
- `Hello(sni)` (`sni` lower-cased without a trailing dot, or None without the extension),
- `Refusal(reason)` for anything that is not a well-formed ClientHello, or too large.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.xmpp.stream_header import NEED_MORE, Refusal, _NeedMore

#: Post-quantum key shares make real ClientHellos ~1.8 KiB; leave ample room, but bounded.
MAX_HELLO = 16384
_RECORD_HANDSHAKE = 22
_HANDSHAKE_CLIENT_HELLO = 1
_EXT_SERVER_NAME = 0


@dataclass(frozen=True)
class Hello:
    sni: str | None


Result = Hello | Refusal | _NeedMore


class _Bad(Exception):
    pass


def peek_client_hello(buf: bytes, limit: int = MAX_HELLO) -> Result:
    """Classify `buf` (everything the client sent so far); see the module docstring."""
    try:
        body = _handshake_message(buf, limit)
        if body is None:
            return Refusal("oversized") if len(buf) >= limit else NEED_MORE
        return Hello(_parse_hello(body))
    except _Bad as exc:
        return Refusal(str(exc))


def _handshake_message(buf: bytes, limit: int) -> bytes | None:
    """Join handshake fragments of the records in buf[:limit]; None while incomplete."""
    data = bytearray()
    pos = 0
    while True:
        head = buf[pos:pos + 5]
        if len(head) >= 1 and head[0] != _RECORD_HANDSHAKE:
            raise _Bad("not_tls")
        if len(head) >= 2 and head[1] != 3:
            raise _Bad("not_tls")
        if len(head) < 5:
            return None
        length = int.from_bytes(head[3:5], "big")
        if length == 0 or length > 16384:
            raise _Bad("bad_record")
        if pos + 5 + length > limit:
            raise _Bad("oversized")
        fragment = buf[pos + 5:pos + 5 + length]
        data += fragment
        if data[:1] and data[0] != _HANDSHAKE_CLIENT_HELLO:
            raise _Bad("not_client_hello")
        if len(data) >= 4:
            need = int.from_bytes(data[1:4], "big")
            if 4 + need > limit:
                raise _Bad("oversized")
            if len(data) >= 4 + need:
                return bytes(data[4:4 + need])
        if len(fragment) < length:
            return None
        pos += 5 + length


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise _Bad("truncated_hello")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def num(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, len_bytes: int) -> bytes:
        return self.take(self.num(len_bytes))

    def done(self) -> bool:
        return self.pos >= len(self.data)


def _parse_hello(body: bytes) -> str | None:
    r = _Reader(body)
    if r.num(1) != 3:
        raise _Bad("bad_version")
    r.take(1 + 32)  # minor version, random
    if len(r.vector(1)) > 32:
        raise _Bad("bad_session_id")
    suites = r.vector(2)
    if not suites or len(suites) % 2:
        raise _Bad("bad_cipher_suites")
    if not r.vector(1):
        raise _Bad("bad_compression")
    if r.done():
        return None
    exts = _Reader(r.vector(2))
    if not r.done():
        raise _Bad("trailing_data")
    sni: str | None = None
    seen: set[int] = set()
    while not exts.done():
        kind, data = exts.num(2), exts.vector(2)
        if kind in seen:
            raise _Bad("duplicate_extension")
        seen.add(kind)
        if kind == _EXT_SERVER_NAME:
            sni = _server_name(data)
    return sni


def _server_name(data: bytes) -> str | None:
    r = _Reader(data)
    names = _Reader(r.vector(2))
    if not r.done():
        raise _Bad("bad_sni")
    while not names.done():
        kind, name = names.num(1), names.vector(2)
        if kind != 0:
            continue
        try:
            host = name.decode("ascii").rstrip(".").lower()
        except UnicodeDecodeError:
            raise _Bad("bad_sni") from None
        if not host or any(c in host for c in "\x00/@ ") or not host.isprintable():
            raise _Bad("bad_sni")
        return host
    return None
