"""The framing reader (services/http/framing.py): heads and bodies found whole, byte by byte and at
every split; one chunked grammar for requests (400/431) and responses (502); the backpressure rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.http.framing import Body, HeadScan, Valve
from services.http.http1 import MAX_HEAD, MAX_REQUEST_LINE, HttpError


def fed(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` in the pieces that cutting at `cuts` gives."""
    at = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(at, at[1:], strict=False)]


def decode(data: bytes, pieces: list[bytes] | None = None, request: bool = True) -> tuple[bytes, bytes]:
    """(chunk payload, the bytes after the body) of a chunked body fed in `pieces`."""
    body, payload, rest = Body(0, True, request), b"", b""
    for piece in pieces or [data]:
        if body.done:
            rest += piece
            continue
        spans: list[tuple[int, int]] = []
        used = body.feed(piece, spans)
        payload += b"".join(piece[s:e] for s, e in spans)
        rest += piece[used:]
    if not body.done:
        raise AssertionError("incomplete")
    return payload, rest


def head_end(data: bytes, pieces: list[bytes]) -> int:
    """Where HeadScan finds the head's end, the buffer growing by `pieces` (-1: not yet)."""
    scan, buf = HeadScan(), bytearray()
    for piece in pieces:
        buf += piece
        end = scan.end(buf)
        if end >= 0:
            return end
    return -1


# -- heads ----------------------------------------------------------------------------------------

HEAD = b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\nBODY\n\rbytes may be anything"


@pytest.mark.parametrize("step", [1, 2, 3, 7, len(HEAD)])
def test_a_head_ends_at_its_blank_line_however_it_arrives(step: int) -> None:
    pieces = [HEAD[i:i + step] for i in range(0, len(HEAD), step)]
    assert head_end(HEAD, pieces) == HEAD.index(b"\r\n\r\n") + 4  # the body's bare LF/CR is not the head's


@pytest.mark.parametrize("bad", [b"GET / HTTP/1.1\nHost: x\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\rY\r\n\r\n",
                                 b"GET / HTTP/1.1\r\nHost: x\n\r\n", b"GET /\r HTTP/1.1\r\n\r\n"])
def test_a_bare_cr_or_lf_is_refused_with_the_byte_after_it(bad: bytes) -> None:
    i = min(j for j in (bad.find(b"\r"), bad.find(b"\n")) if j >= 0)
    while bad[i:i + 2] == b"\r\n":  # the first byte that is not part of a CRLF
        i = min(j for j in (bad.find(b"\r", i + 2), bad.find(b"\n", i + 2)) if j >= 0)
    scan, buf = HeadScan(), bytearray()
    with pytest.raises(HttpError) as e:
        for byte in bad:
            buf.append(byte)
            scan.end(buf)
    assert e.value.status == 400 and len(buf) <= i + 2  # refused at once, not when the deadline passes


def test_a_dripped_head_is_looked_at_once_not_rescanned_per_byte() -> None:
    scan, buf = HeadScan(), bytearray()
    for byte in b"GET /" + b"a" * 1000:
        buf.append(byte)
        assert scan.end(buf) == -1
        assert scan.scanned == len(buf)  # the next call starts where this one stopped
    buf += b"\r"
    scan.end(buf)
    assert scan.scanned == len(buf) - 1  # a CR waits for its LF


def test_head_limits_414_then_431_and_the_response_side_says_502() -> None:
    with pytest.raises(HttpError) as e:
        HeadScan().end(b"GET /" + b"a" * MAX_REQUEST_LINE)
    assert e.value.status == 414
    with pytest.raises(HttpError) as e:
        HeadScan().end(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * (MAX_HEAD // 5))
    assert e.value.status == 431
    for bad in (b"HTTP/1.1 200 OK\nX: 1\r\n\r\n", b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * (MAX_HEAD // 5)):
        with pytest.raises(HttpError) as e:
            HeadScan(request=False).end(bad)
        assert e.value.status == 502


@given(st.lists(st.sampled_from([b"GET / HTTP/1.1", b"\r\n", b"\r", b"\n", b"Host: x", b"X: \x00", b" ", b"a"]),
                max_size=14), st.lists(st.integers(0, 400), max_size=6))
def test_any_split_finds_the_same_end_or_the_same_refusal(parts: list[bytes], cuts: list[int]) -> None:
    data = b"".join(parts)

    def outcome(pieces: list[bytes]) -> object:
        try:
            return head_end(data, pieces)
        except HttpError as exc:
            return exc.status

    assert outcome(fed(data, cuts)) == outcome([data])


# -- bodies -----------------------------------------------------------------------------------------

CHUNKED = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT"


@pytest.mark.parametrize("step", [len(CHUNKED), 1, 3])
def test_chunked_whole_and_byte_by_byte(step: int) -> None:
    pieces = [CHUNKED[i:i + step] for i in range(0, len(CHUNKED), step)]
    assert decode(CHUNKED, pieces) == (b"hello world", b"NEXT")


@pytest.mark.parametrize("bad", [b"x\r\n", b"5\r\nhelloXX", b"-1\r\n", b"\r\n", b"1" * 20 + b"\r\n", b"5 \r\n",
                                 b"5;a\rb", b"5\r\nhello\r\n0\r\nX: a\rb"])
def test_malformed_chunks_are_refused_without_waiting_for_more(bad: bytes) -> None:
    with pytest.raises(HttpError):
        Body(0, True).feed(bad)


CHUNK_BAD = [
    b"5;a\nb\r\nhello\r\n0\r\n\r\n",  # bare LF inside an extension (CVE-2025-55315 class)
    b"5;a\rb\r\nhello\r\n0\r\n\r\n",  # bare CR inside an extension
    b"5\n\r\nhello\r\n0\r\n\r\n", b"5\nhello\r\n0\r\n\r\n", b"5\r\nhello\r\n0\r\nX: a\nb\r\n\r\n",
    b"5\r\nhello\r\n0\r\nX: a\rb\r\n\r\n", b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
    b"5;\r\nhello\r\n0\r\n\r\n", b"5;=x\r\nhello\r\n0\r\n\r\n", b"5;a=\r\nhello\r\n0\r\n\r\n",
    b"5;a=\"x\r\nhello\r\n0\r\n\r\n", b"5;a=b c\r\nhello\r\n0\r\n\r\n", b"5;a=\"\x00\"\r\nhello\r\n0\r\n\r\n",
    b"5 ;" + b"a" * 300 + b"\r\nhello\r\n0\r\n\r\n",  # extension over the limit
    b"5;" + b"a=b;" * 400 + b"x\r\nhello\r\n0\r\n\r\n",  # chunk line over the limit, CRLF present
    b"0x5\r\nhello\r\n0\r\n\r\n", b"+5\r\nhello\r\n0\r\n\r\n", b"5 \r\nhello\r\n0\r\n\r\n",
    b"5 ;a\r\nhello\r\n0\r\n\r\n", b"5; a\r\nhello\r\n0\r\n\r\n", b"5;a =b\r\nhello\r\n0\r\n\r\n",  # BWS
    b"5\r\nhello\r\n0\r\n" + b"X-T: 1\r\n" * (MAX_HEAD // 8 + 1) + b"\r\n",  # trailers over the limit
]
CHUNK_OK = [b"5;a=b\r\nhello\r\n0\r\n\r\n", b"5;a=\"q\\\"x\";b\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0;last\r\nX-T: 1\r\n\r\n", b"00005\r\nhello\r\n0\r\n\r\n"]


@pytest.mark.parametrize("body", CHUNK_BAD)
@pytest.mark.parametrize("step", [None, 1])
def test_chunk_framing_outside_the_grammar_is_refused_in_both_directions(body: bytes, step: int | None) -> None:
    pieces = [body[i:i + (step or len(body))] for i in range(0, len(body), step or len(body))]
    with pytest.raises(HttpError) as e:
        decode(body, pieces)
    assert e.value.status in (400, 431)
    with pytest.raises(HttpError) as e:
        decode(body, pieces, request=False)
    assert e.value.status == 502


@pytest.mark.parametrize("body", CHUNK_OK)
def test_chunk_extensions_and_trailers_in_the_grammar_pass(body: bytes) -> None:
    assert decode(body + b"NEXT") == (b"hello", b"NEXT")
    assert decode(body + b"NEXT", request=False) == (b"hello", b"NEXT")


@given(st.binary(max_size=200), st.lists(st.integers(0, 300), max_size=5))
def test_any_bytes_any_split_same_outcome_and_only_httperror(data: bytes, cuts: list[int]) -> None:
    def outcome(pieces: list[bytes]) -> object:
        try:
            return decode(data, pieces)
        except HttpError as exc:
            return exc.status
        except AssertionError:
            return "incomplete"

    assert outcome(fed(data, cuts)) == outcome([data])


def test_length_and_until_close_bodies() -> None:
    body = Body(5)
    assert body.feed(b"abc") == 3 and not body.done
    assert body.feed(b"deNEXT") == 2 and body.done
    assert Body(0).done
    forever = Body(None, request=False)
    assert forever.feed(b"x" * 100) == 100 and not forever.done


# -- backpressure -----------------------------------------------------------------------------------

def test_reading_stops_at_the_first_reason_and_resumes_when_the_last_goes() -> None:
    v = Valve()
    assert v.stop("upstream") and not v.stop("pipeline")
    assert not v.go("upstream") and not v.go("never-given") and v
    assert v.go("pipeline") and not v
    assert not v.held("connecting", 10, 10) and v.held("connecting", 11, 10) and not v.held("connecting", 12, 10)
