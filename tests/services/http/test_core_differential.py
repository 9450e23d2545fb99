"""Differential: the HTTP/1.1 core against h11 on whole request messages, pipelined, fed at random splits,
and on responses (the backend side reads them with the same core).

h11 is an independent HTTP/1.1 parser (tests only; told our head limit, MAX_HEAD, where its default
is 16 KiB). The core reads a message as the client adapter does: HeadScan over a growing buffer,
parse_request_head, the target's grammar (split_target), then Body. The property is one-way, and
it is the one a proxy needs: whenever the core accepts a message, h11 accepts it too, with the same
method, target and body payload, and ends it at the same byte (what follows is the next request);
whatever h11 refuses, the core refuses.

Where the core is stricter than h11, on purpose (each asserted below, in that direction):
- bare LF as a line end in the head (h11 accepts `\\n` for `\\r\\n`): 400;
- obsolete line folding (h11 unfolds it): 400;
- a repeated Content-Length, even with the same value, and a list value `5, 5` (h11 merges them): 400;
- HTTP versions other than 1.0 and 1.1 (h11 parses any `HTTP/d.d`): 505;
- CONNECT and TRACE (h11 frames them like any method): 405; `OPTIONS *`: 400;
- an Expect other than 100-continue (h11 ignores it): 417;
- Transfer-Encoding in an HTTP/1.0 request (h11 frames it as chunked): 400;
- a WebSocket Upgrade without a valid key or version 13 (h11 does not look): 400;
- Content-Length and Transfer-Encoding together (h11 lets Transfer-Encoding win): 400;
- a Content-Length of more than 15 digits (h11 takes any length of digits): 400;
- whitespace after a chunk extension's `;` or around its `=` (BWS; h11 refuses it only before the
  `;`), and chunk extensions over 256 bytes: 400;
- a target with bytes a path must not hold (`split_target`: controls, dot-segments after decoding...).
"""

from __future__ import annotations

import h11
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.http.canonical import BadPath, split_target
from services.http.framing import Body, HeadScan
from services.http.http1 import MAX_HEAD, HttpError, parse_request_head, parse_response_head

NEXT = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
Reading = tuple[bytes, bytes, bytes, bytes] | None  # (method, target, payload, bytes after the message)


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    at = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(at, at[1:], strict=False)]


def ours(data: bytes, cuts: list[int]) -> Reading:
    """The core's reading; None for a refusal or a message that never completes."""
    scan, buf, end = HeadScan(), bytearray(), -1
    try:
        for piece in pieces(data, cuts):
            buf += piece
            end = scan.end(buf)
            if end >= 0:
                break
        if end < 0:
            return None
        head = parse_request_head(bytes(buf[:end]))
        split_target(head.target)
        body, rest, spans = Body.of(head, True), data[end:], []
        used = body.feed(rest, spans)
    except (HttpError, BadPath):
        return None
    if not body.done:
        return None
    return head.method, head.target, b"".join(rest[s:e] for s, e in spans), rest[used:]


def theirs(data: bytes) -> Reading:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    conn.receive_data(data)
    req, payload = None, b""
    try:
        while True:
            ev = conn.next_event()
            if isinstance(ev, h11.Request):
                req = ev
            elif isinstance(ev, h11.Data):
                payload += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                assert req is not None
                return req.method, req.target, payload, conn.trailing_data[0]
            elif ev is h11.NEED_DATA or ev is h11.PAUSED:
                return None
    except h11.ProtocolError:
        return None


METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"HEAD", b"OPTIONS", b"X-CUSTOM", b"CONNECT", b"TRACE",
           b"get", b"G T", b"G\x00T"]
TARGETS = [b"/", b"/a/b?c=d", b"/%7Ea", b"*", b"http://x/a", b"/a%00", b"/a\x01", b"/\xc3\xa4", b"/a/../b", b""]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 ", b"http/1.1", b"HTTP/1.10"]
FIELDS = [b"Host: x", b"Host: y", b"X-A: b", b"X-A: \x80\xff", b"X-A:", b"X-A : b", b"X A: b", b"X-A: a\x00b",
          b" folded", b"\tfolded", b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip, chunked",
          b"Transfer-Encoding: chunked, gzip", b"Transfer-Encoding: identity", b"Content-Length: 5, 5",
          b"Content-Length: +5", b"Content-Length: 1", b"Content-Length:", b"Expect: 100-continue",
          b"Expect: nonsense", b"Connection: close", b"Connection: keep-alive, X-A", b"Upgrade: h2c",
          b"Connection: Upgrade", b"Upgrade: websocket", b"Sec-WebSocket-Version: 13",
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]
CHUNK_EXTS = [b"", b";a", b";a=b", b';a="q\\"x"', b" ;a", b";a\nb", b";a\rb", b";=", b"; a"]


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    line = b" ".join([draw(st.sampled_from(METHODS)), draw(st.sampled_from(TARGETS)),
                      draw(st.sampled_from(VERSIONS))])
    fields = draw(st.lists(st.sampled_from(FIELDS), max_size=5))
    if draw(st.booleans()):
        fields.insert(0, b"Host: x")
    payload = draw(st.binary(max_size=12))
    framing = draw(st.sampled_from(["length", "wrong-length", "chunked", "none"]))
    if framing in ("length", "wrong-length"):
        n = len(payload) if framing == "length" else draw(st.integers(0, 20))
        fields.append(b"Content-Length: %d" % n)
        body = payload
    elif framing == "chunked":
        fields.append(b"Transfer-Encoding: chunked")
        body = b""
        if payload:
            body += b"%x" % len(payload) + draw(st.sampled_from(CHUNK_EXTS)) + b"\r\n" + payload + b"\r\n"
        body += b"0" + draw(st.sampled_from(CHUNK_EXTS)) + b"\r\n"
        body += draw(st.sampled_from([b"", b"X-T: 1\r\n", b"bad\r\n"])) + b"\r\n"
    else:
        body = b""
    eol = draw(st.sampled_from([b"\r\n"] * 6 + [b"\n", b"\r"]))
    data = line + b"\r\n" + b"".join(f + (eol if i == 0 else b"\r\n") for i, f in enumerate(fields)) + b"\r\n" + body
    if draw(st.booleans()):  # one hostile byte anywhere
        i = draw(st.integers(0, len(data)))
        data = data[:i] + draw(st.sampled_from([b"\n", b"\r", b" ", b"\t", b"\x00", b";", b"0", b"\r\n"])) + data[i:]
    return data + NEXT


@settings(max_examples=1500, deadline=None)
@given(messages(), st.lists(st.integers(0, 300), max_size=6))
@example(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + NEXT, [1, 2, 3, 20])
@example(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" + NEXT, [])
@example(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n0\r\n\r\n" + NEXT, [30])
def test_what_the_core_accepts_h11_reads_alike_and_what_h11_refuses_the_core_refuses(data: bytes,
                                                                                     cuts: list[int]) -> None:
    mine, h11s = ours(data, cuts), theirs(data)
    if mine is not None:
        assert h11s == mine, data
    assert ours(data, []) == mine, data  # and however the bytes arrive


STRICTER = [
    b"GET / HTTP/1.1\nHost: x\n\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\na",
    b"GET / HTTP/1.2\r\nHost: x\r\n\r\n",
    b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: nonsense\r\nContent-Length: 0\r\n\r\n",
    b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1; a\r\nx\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;a =b\r\nx\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0000000000000000001\r\n\r\nx",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;" + b"a" * 300 + b"\r\nx\r\n0\r\n\r\n",
    b"GET /a/../b HTTP/1.1\r\nHost: x\r\n\r\n",
]


@pytest.mark.parametrize("data", STRICTER)
def test_each_place_the_core_is_stricter_than_h11(data: bytes) -> None:
    assert theirs(data + NEXT) is not None, "h11 reads it"
    assert ours(data + NEXT, []) is None, "the core refuses it"


# -- the backend side: responses ---------------------------------------------------------------------

NEXT_RESPONSE = b"HTTP/1.1 204 No Content\r\n\r\n"
STATUSES = [b"HTTP/1.1 200 OK", b"HTTP/1.1 204 No Content", b"HTTP/1.1 304 Not Modified", b"HTTP/1.0 200 OK",
            b"HTTP/1.1 404", b"HTTP/1.1 200 O\x01K", b"HTTP/1.1 20 OK", b"HTTP/2 200 OK", b"HTTP/1.1 200 OK "]
RESPONSE_FIELDS = [b"Server: x", b"Set-Cookie: a=b", b"Content-Length: 5, 5", b"Transfer-Encoding: gzip",
                   b"Connection: close", b"X-A : b", b" folded", b"Content-Length: 2"]


def ours_response(data: bytes, method: bytes, eof: bool) -> Reading:
    scan = HeadScan(request=False)
    try:
        end = scan.end(data)
        if end < 0:
            return None
        head = parse_response_head(data[:end], method)
        body, rest, spans = Body.of(head, False), data[end:], []
        used = body.feed(rest, spans)
    except HttpError as exc:
        assert exc.status == 502
        return None
    if not body.done and not (eof and body.left < 0 and not body.chunked):
        return None
    return method, b"%d" % head.status, b"".join(rest[s:e] for s, e in spans), rest[used:]


def theirs_response(data: bytes, method: bytes, eof: bool) -> Reading:
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    if eof:
        conn.receive_data(b"")
    resp, payload = None, b""
    try:
        while True:
            ev = conn.next_event()
            if isinstance(ev, h11.Response):
                resp = ev
            elif isinstance(ev, h11.Data):
                payload += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                assert resp is not None
                return method, b"%d" % resp.status_code, payload, conn.trailing_data[0]
            elif ev is h11.NEED_DATA or ev is h11.PAUSED or isinstance(ev, h11.ConnectionClosed):
                return None
    except h11.ProtocolError:
        return None


@st.composite
def responses(draw: st.DrawFn) -> tuple[bytes, bytes, bool]:
    fields = draw(st.lists(st.sampled_from(RESPONSE_FIELDS), max_size=3))
    payload = draw(st.binary(max_size=10))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    if framing == "length":
        fields.append(b"Content-Length: %d" % len(payload))
        body = payload
    elif framing == "chunked":
        fields.append(b"Transfer-Encoding: chunked")
        body = (b"%x" % len(payload) + draw(st.sampled_from(CHUNK_EXTS)) + b"\r\n" + payload + b"\r\n"
                if payload else b"") + b"0\r\n\r\n"
    else:
        body = payload
    data = draw(st.sampled_from(STATUSES)) + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body
    if draw(st.booleans()):
        i = draw(st.integers(0, len(data)))
        data = data[:i] + draw(st.sampled_from([b"\n", b"\r", b" ", b"\x00", b"0"])) + data[i:]
    eof = framing == "close"
    return data + (b"" if eof else NEXT_RESPONSE), draw(st.sampled_from([b"GET", b"HEAD"])), eof


@settings(max_examples=800, deadline=None)
@given(responses())
def test_a_response_the_core_frames_h11_frames_alike(case: tuple[bytes, bytes, bool]) -> None:
    data, method, eof = case
    mine = ours_response(data, method, eof)
    if mine is not None:
        assert theirs_response(data, method, eof) == mine, data
