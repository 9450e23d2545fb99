"""Differential: our chunked reader against h11's, on generated and mutated chunked bodies.

h11 is an independent HTTP/1.1 parser (used in tests only). We are stricter than h11 (no
whitespace before a chunk line's CRLF, extensions by the RFC grammar and of limited length), so
the property is one-way:
whenever we accept a body, h11 accepts it too, with the same payload and the same end; and
whatever h11 refuses, we refuse.
"""

from __future__ import annotations

import h11
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.http.framing import Body
from services.http.http1 import HttpError

HEAD = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
EXTS = [b"", b";a", b";a=b", b';a="q\\"x"', b' ; a = "q\\"x"', b";a=\"x", b";a\nb", b";a\rb", b"; a=b c", b";=",
        b"\t;a"]
TRAILERS = [b"", b"X-T: 1\r\n", b"X-T: a\nb\r\n", b"bad\r\n", b"X-T:\r\n"]
NEXT = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


@st.composite
def chunked(draw: st.DrawFn) -> bytes:
    out = b""
    for data in draw(st.lists(st.binary(min_size=1, max_size=20), max_size=4)):
        size = draw(st.sampled_from(["%x", "%X", "%04x"])) % len(data)
        out += size.encode() + draw(st.sampled_from(EXTS)) + b"\r\n" + data + b"\r\n"
    out += b"0" + draw(st.sampled_from(EXTS)) + b"\r\n" + draw(st.sampled_from(TRAILERS)) + b"\r\n"
    if draw(st.booleans()):  # one hostile byte somewhere
        i = draw(st.integers(0, len(out)))
        out = out[:i] + draw(st.sampled_from([b"\n", b"\r", b" ", b";", b"\x00", b"0", b"\r\n"])) + out[i:]
    return out


def h11_reading(body: bytes) -> tuple[bytes, bytes] | None:
    """(payload, bytes after the message) as h11 reads them, or None if h11 refuses or wants more."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(HEAD + body + NEXT)
    payload = b""
    try:
        while True:
            ev = conn.next_event()
            if isinstance(ev, h11.Data):
                payload += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                return payload, conn.trailing_data[0]
            elif ev is h11.NEED_DATA:
                return None
    except h11.RemoteProtocolError:
        return None


def our_reading(body: bytes, request: bool = True) -> tuple[bytes, bytes] | None:
    reader, data, spans = Body(0, True, request), body + NEXT, []
    try:
        used = reader.feed(data, spans)
    except HttpError:
        return None
    return (b"".join(data[s:e] for s, e in spans), data[used:]) if reader.done else None


@settings(max_examples=400)
@given(chunked())
@example(b"5;a\nb\r\nhello\r\n0\r\n\r\n")
@example(b"5\r\nhello\r\n0\r\nX-T: a\nb\r\n\r\n")
def test_we_accept_only_what_h11_accepts_and_end_where_it_ends(body: bytes) -> None:
    ours = our_reading(body)
    theirs = h11_reading(body)
    if ours is not None:
        assert theirs == ours, body
    # the response side reads the same grammar: it ends exactly where the request side does
    assert our_reading(body, request=False) == ours, body
