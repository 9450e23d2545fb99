"""Differential: the server connection core (ServerConnection, the one the client adapter uses) against
h11, on generated and mutated streams of pipelined requests fed at random splits.

Each stream is 1–4 requests (Content-Length, chunked or no body; repeated, list-valued and signed
lengths; obs-fold; bare LF and CR; NUL and other control bytes; heads around the size limits), with
hostile bytes inserted anywhere. Both readers read the stream request by request, answering each
(h11 needs a response before its next cycle); the core's reading includes what the adapter checks
before routing (the target's grammar, `split_target`, and the authority's, `request_target`).

The property: the requests the core accepts are a prefix of those h11 reads, each with the same
method, target, header fields (name and value, in order) and body payload, and ending at the same
byte. So the core never accepts what h11 refuses as malformed, and it never frames a message
differently. Where the core refuses what h11 accepts, that is on purpose: the list is in
test_core_differential.py (bare LF, obs-fold, repeated Content-Length, versions other than
1.0/1.1, CONNECT/TRACE, unknown Expect, TE in HTTP/1.0, a bad WebSocket handshake, CL with TE,
long lengths, BWS in chunk extensions, a request line over 8 KiB, targets a path must not hold).

One difference is not about malformed input: h11 never keeps an HTTP/1.0 connection alive, the core
does when the client asks (`Connection: keep-alive`), so both readings stop after the first request
either side would close after; for HTTP/1.1 requests the two must agree on it.
"""

from __future__ import annotations

import h11
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.http.authority import request_target
from services.http.canonical import BadPath, split_target
from services.http.connection import END_OF_MESSAGE, NEED_DATA, PAUSED, Data, ProtocolError, Request, ServerConnection
from services.http.http1 import MAX_HEAD, HttpError
from services.http.limits import DEFAULT
from tests.services.http.test_core_differential import CHUNK_EXTS, FIELDS, METHODS, TARGETS, VERSIONS

Message = tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes]  # method, target, fields, payload
Reading = tuple[list[Message], str]  # the requests read, and how the stream ended: error, need, close


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    at = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(at, at[1:], strict=False)]


def fields_of(pairs: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """As h11 gives them: names lower-cased, Transfer-Encoding's value too."""
    out = []
    for name, value in pairs:
        name = name.lower()
        out.append((name, value.lower() if name == b"transfer-encoding" else value))
    return out


def ours(data: bytes, cuts: list[int]) -> Reading:
    conn, got = ServerConnection(DEFAULT, 0.0), []
    current: list = []
    for piece in pieces(data, cuts) + [b""]:
        if piece:
            conn.receive_data(piece, 0.0)
        while True:
            ev = conn.next_event()
            if type(ev) is Request:
                head = ev.head
                try:
                    split_target(request_target(head.target, head.host, None))
                except (HttpError, BadPath):
                    return got, "error"
                current = [head.method, head.target, fields_of(head.headers), b"", head]
            elif type(ev) is Data:
                current[3] += ev.data
            elif ev is END_OF_MESSAGE:
                head = current.pop()
                got.append(tuple(current))
                if not head.keep_alive or head.version == b"HTTP/1.0":
                    return got, "close"
                conn.start_next_cycle(0.0)
            elif type(ev) is ProtocolError:
                return got, "error"
            else:
                assert ev is NEED_DATA or ev is PAUSED
                break
    return got, "need"


def theirs(data: bytes) -> Reading:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    conn.receive_data(data)
    got: list[Message] = []
    current: list = []
    try:
        while True:
            ev = conn.next_event()
            if isinstance(ev, h11.Request):
                current = [ev.method, ev.target, list(ev.headers), b""]
            elif isinstance(ev, h11.Data):
                current[3] += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                got.append(tuple(current))  # type: ignore[arg-type]
                conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
                conn.send(h11.EndOfMessage())
                if conn.our_state is h11.MUST_CLOSE:
                    return got, "close"
                conn.start_next_cycle()
            else:
                return got, "need"
    except h11.ProtocolError:
        return got, "error"


NASTY = [b"\n", b"\r", b" ", b"\t", b"\x00", b"\x01", b"\x0b", b"\x7f", b"\x80", b";", b"0", b"\r\n", b":"]
# mostly well-formed parts, so that streams get past their first request; the lists of
# test_core_differential.py (mostly hostile) for the rest
GOOD_METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"X-CUSTOM"]
GOOD_TARGETS = [b"/", b"/a/b?c=d", b"/%7Ea", b"/a%2Fb", b"http://x/a"]
GOOD_FIELDS = [b"X-A: b", b"X-A:", b"x-a:b ", b"X-A: \x80\xff", b"Accept: */*", b"Connection: keep-alive, X-A",
               b"Cookie: a=b; c=d", b"X-Forwarded-For: 1.2.3.4"]


def pick(draw: st.DrawFn, good: list[bytes], anything: list[bytes]) -> bytes:
    return draw(st.sampled_from(good if draw(st.integers(0, 19)) < 18 else anything))


@st.composite
def request(draw: st.DrawFn) -> bytes:
    target = pick(draw, GOOD_TARGETS, TARGETS + [b"/" + b"a" * 8180, b"/" + b"a" * 8200])
    line = b" ".join([pick(draw, GOOD_METHODS, METHODS), target, pick(draw, [b"HTTP/1.1"], VERSIONS)])
    fields = [pick(draw, GOOD_FIELDS, FIELDS) for _ in range(draw(st.integers(0, 4)))]
    if draw(st.integers(0, 9)):
        fields.insert(draw(st.integers(0, len(fields))), b"Host: x")
    if draw(st.integers(0, 5)) == 0:  # a head around the size limit
        fields.append(b"X-Big: " + b"b" * draw(st.sampled_from([8000, 16000, 32600, 32800])))
    payload = draw(st.binary(max_size=12))
    framing = draw(st.sampled_from(["length", "wrong-length", "chunked", "none"]))
    if framing in ("length", "wrong-length"):
        n = len(payload) if framing == "length" else draw(st.integers(0, 20))
        fields.append(draw(st.sampled_from([b"Content-Length: %d", b"content-length:%d", b"Content-Length: 0%d"])) % n)
        body = payload
    elif framing == "chunked":
        fields.append(draw(st.sampled_from([b"Transfer-Encoding: chunked", b"transfer-encoding: Chunked"])))
        body = b""
        for part in (payload[:5], payload[5:]):
            if part:
                body += (draw(st.sampled_from([b"%x", b"%X", b"%03x"])) % len(part) + pick(draw, [b""], CHUNK_EXTS)
                         + b"\r\n" + part + b"\r\n")
        body += b"0" + pick(draw, [b"", b";a=b"], CHUNK_EXTS) + b"\r\n"
        body += pick(draw, [b"", b"X-T: 1\r\n"], [b"bad\r\n", b"X-T: a\x00\r\n"]) + b"\r\n"
    else:
        body = b""
    eol = draw(st.sampled_from([b"\r\n"] * 20 + [b"\n", b"\r", b"\r\r\n"]))
    at = draw(st.integers(0, len(fields)))
    data = line + b"\r\n" + b"".join(f + (eol if i == at else b"\r\n") for i, f in enumerate(fields)) + b"\r\n" + body
    for _ in range(draw(st.integers(1, 2)) if draw(st.integers(0, 3)) == 0 else 0):  # hostile bytes anywhere
        i = draw(st.integers(0, len(data)))
        data = data[:i] + draw(st.sampled_from(NASTY)) + data[i:]
    return data


@settings(max_examples=1500, deadline=None)
@given(st.lists(request(), min_size=1, max_size=4), st.lists(st.integers(0, 400), max_size=8))
@example([b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"] * 3, [5, 30, 31])
@example([b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
          b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n0\r\n\r\n"], [60])
@example([b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n\tfolded\r\n\r\n"], [])  # obs-fold: h11 unfolds, we refuse
@example([b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n"], [])  # NUL: both refuse
@example([b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 32800 + b"\r\n\r\n"], [100, 9000])
def test_the_core_accepts_a_prefix_of_what_h11_reads_framed_alike(stream: list[bytes], cuts: list[int]) -> None:
    data = b"".join(stream)
    mine, h11s = ours(data, cuts), theirs(data)
    assert mine[0] == h11s[0][:len(mine[0])], data
    assert ours(data, []) == mine, data  # and however the bytes arrive
