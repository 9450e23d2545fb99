"""The C hot path (services/http/_chead.c) decides every input exactly as the Python reference does:
the end of a head (`framing._head_end_py`), the split, check and re-write of its fields
(`http1._framing_py`, through `parse_request_head` / `parse_response_head`), and the canonical
path (`canonical.split_target_py`) — the same value, or the same refusal with the same status and
reason. The hostile classes of the http edge issue are listed one by one, then mixed by hypothesis.

The module is imported directly, so a tree whose extension did not build fails here instead of
quietly comparing the Python reference with itself."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.http import (
    _chead,  # type: ignore[attr-defined]
    canonical,
    framing,
    http1,
)
from services.http.canonical import BadPath, split_target_py
from services.http.framing import HeadScan, _head_end_py
from services.http.http1 import _KINDS, HttpError, parse_request_head, parse_response_head


def test_the_router_uses_the_c_code() -> None:
    assert http1._framing is _chead.framing and framing._head_end is _chead.head_end
    assert canonical._c_split is _chead.split_target


@contextmanager
def reader(fn: Callable[..., None]) -> Iterator[None]:
    """parse_*_head with the given field reader (the module's own choice is put back)."""
    kept = http1._framing
    http1._framing = fn
    try:
        yield
    finally:
        http1._framing = kept


def outcome(f: Callable[[], object]) -> object:
    try:
        v = f()
    except HttpError as exc:
        return ("HttpError", exc.status, exc.reason)
    except BadPath as exc:
        return ("BadPath", str(exc))
    if dataclasses.is_dataclass(v):
        return dataclasses.astuple(v)  # type: ignore[arg-type]
    return v


def same_head(head: bytes) -> object:
    results = []
    for fn in (http1._framing_py, _chead.framing):
        with reader(fn):
            results.append((outcome(lambda: parse_request_head(head)),
                            outcome(lambda: parse_response_head(head, b"GET")),
                            outcome(lambda: parse_response_head(b"HTTP/1.1 200 OK\r\n" + head.partition(b"\r\n")[2],
                                                                b"HEAD"))))
    assert results[0] == results[1], head[:400]
    return results[0][0]


def same_end(buf: bytes) -> None:
    for start in {0, 1, 2, 3, 4, 5, len(buf) // 2, max(0, len(buf) - 1), len(buf)}:
        assert _chead.head_end(buf, start) == _head_end_py(buf, start), (buf[:200], start)
        assert _chead.head_end(bytearray(buf), start) == _head_end_py(bytearray(buf), start)
    for request in (True, False):  # dripped through HeadScan: every split point, both scans
        verdicts = []
        for fn in (_head_end_py, _chead.head_end):
            keep, framing._head_end = framing._head_end, fn
            try:
                scan, got, buf_ = HeadScan(request), [], bytearray()
                for i in range(0, len(buf), 7):
                    buf_ += buf[i:i + 7]
                    got.append(outcome(lambda s=scan, b=buf_: s.end(b)))
                    if isinstance(got[-1], tuple) or got[-1] != -1:
                        break
                verdicts.append(got)
            finally:
                framing._head_end = keep
        assert verdicts[0] == verdicts[1], buf[:200]


def same_target(target: bytes) -> object:
    c = outcome(lambda: _chead.split_target(target))
    py = outcome(lambda: split_target_py(target))
    if c is None:  # undecided only where a decoded segment holds bytes >= 0x80 (UTF-8, NFKC: Python's)
        assert b"%" in target and any(target[i + 1:i + 2] in b"89ABCDEFabcdef"
                                      for i in range(len(target)) if target[i:i + 1] == b"%"), target
    else:
        assert c == py, target
    assert outcome(lambda: canonical.split_target(target)) == py
    return py


BROWSER = (b"GET /bench/x?q=1 HTTP/1.1\r\nHost: Example.COM:8443\r\nUser-Agent: Mozilla/5.0 (X11) Firefox/120.0\r\n"
           b"Accept: text/html,*/*;q=0.8\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n"
           b"Cookie: a=b; c=d\r\nX-Forwarded-For: 6.6.6.6\r\nX-Original-URL: /admin\r\n\r\n")
POST = (b"POST /api/v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n"
        b"Expect: 100-continue\r\nKeep-Alive: 5\r\nX-A: 1\r\n\r\n")
CHUNKED = b"PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\nConnection: TE, close\r\n\r\n"
WS = (b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n"
      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
RESPONSE = (b"HTTP/1.1 302 Found\r\nServer: nginx\r\nLocation: /x\r\nSet-Cookie: a=b; Path=/\r\n"
            b"Content-Length: 0\r\nConnection: keep-alive\r\n\r\n")
SAMPLES = [BROWSER, POST, CHUNKED, WS, RESPONSE, b"GET / HTTP/1.0\r\n\r\n", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]

# the hostile classes of the http edge issue (#24 §1, §3, §4), each as a head
HOSTILE_HEADS = [
    BROWSER.replace(b"\r\nAccept:", b"\r\n Accept:"),  # obs-fold
    BROWSER.replace(b"\r\nAccept:", b"\r\n\tAccept:"),
    BROWSER.replace(b"Cookie: a=b; c=d\r\n", b"Cookie: a=b;\r\n c=d\r\n"),
    BROWSER.replace(b"\r\nAccept:", b"\nAccept:"),  # bare LF
    BROWSER.replace(b"\r\nAccept:", b"\rAccept:"),  # bare CR
    BROWSER.replace(b"gzip,", b"gzip,\r"), BROWSER.replace(b"gzip,", b"gzip,\n"),
    POST.replace(b"Content-Length: 5\r\n", b"Content-Length: 5\r\nContent-Length: 5\r\n"),  # duplicate CL
    POST.replace(b"Content-Length: 5\r\n", b"Content-Length: 5, 5\r\n"),
    POST.replace(b"Content-Length: 5\r\n", b"Content-Length: +5\r\n"),
    POST.replace(b"Content-Length: 5\r\n", b"Content-Length: 1234567890123456\r\n"),
    POST.replace(b"Content-Length: 5\r\n", b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),  # TE+CL
    CHUNKED.replace(b"chunked", b"chunked, chunked"), CHUNKED.replace(b"chunked", b"Chunked"),
    CHUNKED.replace(b"chunked", b"xchunked"),
    CHUNKED.replace(b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"),
    CHUNKED.replace(b"HTTP/1.1", b"HTTP/1.0"), CHUNKED.replace(b"Transfer-Encoding:", b"Transfer-Encoding :"),
    BROWSER.replace(b"Firefox", b"Fire\x00fox"), BROWSER.replace(b"Firefox", b"Fire\x7ffox"),  # NUL, controls
    BROWSER.replace(b"Firefox", b"Fire\x1bfox"), BROWSER.replace(b"Firefox", b"Fire\tfox\x80\xff"),
    BROWSER.replace(b"Host: Example.COM:8443\r\n", b""), BROWSER.replace(b"Host:", b"Host: a\r\nHost:"),
    BROWSER.replace(b"User-Agent", b"User Agent"), BROWSER.replace(b"User-Agent:", b":"),
    BROWSER.replace(b"User-Agent:", b"User-Agent"), BROWSER.replace(b"\r\n\r\n", b"\r\n" + b"X-L: " + b"a" * 40000
                                                                     + b"\r\n\r\n"),  # over-long
    BROWSER.replace(b"\r\n\r\n", b"\r\n" + b"X: y\r\n" * 101 + b"\r\n"),  # too many fields
    BROWSER.replace(b"/bench/x", b"/" + b"a" * 9000),
    POST.replace(b"100-continue", b"100-Continue"), POST.replace(b"100-continue", b"100-continue, x"),
    WS.replace(b"WebSocket", b"h2c"), WS.replace(b"keep-alive, Upgrade", b"Upgrade"),
    WS.replace(b"Connection: keep-alive, Upgrade\r\n",
               b"Connection: keep-alive\r\nConnection: Upgrade, X-A\r\nX-A: 1\r\n"),
    BROWSER.replace(b"Connection: keep-alive", b"Connection: Close"),
    BROWSER.replace(b"Connection: keep-alive", b"Connection: close, Cookie, Accept"),
    BROWSER.replace(b"Connection: keep-alive", b"Connection:  KEEP-ALIVE \t"),
    BROWSER.replace(b"HTTP/1.1", b"HTTP/1.0").replace(b"Host: Example.COM:8443\r\n", b""),
    BROWSER.replace(b"X-Original-URL", b"x-http-method-override").replace(b"X-Forwarded-For", b"FORWARDED"),
    RESPONSE.replace(b"Set-Cookie", b"set-COOKIE"), RESPONSE.replace(b"Location", b"Refresh"),
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n\r\n",
]


@pytest.mark.parametrize("head", SAMPLES + HOSTILE_HEADS)
def test_heads(head: bytes) -> None:
    same_head(head)
    same_end(head)


def test_refusals_are_the_reference_ones() -> None:
    """The list above reaches the refusals, not only the happy path (a test that cannot fail is none)."""
    verdicts = {same_head(h)[:2] if isinstance(same_head(h), tuple) and same_head(h)[0] == "HttpError" else "ok"
                for h in HOSTILE_HEADS}
    assert {("HttpError", 400), ("HttpError", 431), ("HttpError", 414), ("HttpError", 501),
            ("HttpError", 417)} <= verdicts


HOSTILE_TARGETS = [
    b"/api/x", b"/", b"/api/x?a=b&c=%zz", b"/api/x?a b", b"/api/x?a#b", b"/api/x?\xff", b"api/x", b"", b"*",
    b"http://a/x", b"/api/%2e%2e/admin", b"/api/%2E./admin", b"/api/.%2e/x", b"/api/../x", b"/api/./x", b"/api/.",
    b"/api/..", b"/api/%2fadmin", b"/api/%2Fadmin", b"/api%2f..%2fadmin", b"/api/%c0%ae%c0%ae/x", b"/api/%c0%af",
    b"/api/%e0%80%ae", b"/api/\\..\\x", b"/api/%5c..%5cx", b"/api//x", b"//api/x", b"/api/x//", b"/API/x", b"/Api/X",
    b"/api/..;/admin", b"/api/.;x/y", b"/api/%2e%2e;/x", b"/api/x;jsessionid=1", b"/api/%3b/x", b"/api/%3Bx",
    b"/api/%u002e%u002e/x", b"/api/%25252e/x", b"/api/%252e/x", b"/api/%00", b"/api/x%00.html", b"/api/\x00",
    b"/api/\x01", b"/api/x\x7f", b"/api./x", b"/api%20/x", b"/api /x", b"/api/x%20", b"/api/x.", b"/api/%7Euser",
    b"/api/%7euser", b"/api/%61%62c", b"/api/%c3%a4", b"/api/%C3%A4x", b"/api/%ef%bc%8e%ef%bc%8e/x",  # fullwidth ．
    b"/api/%ef%bc%8f", b"/api/\xef\xbc\x8f", b"/api/%e2%88%95", b"/api/%e2%80%8b", b"/api/%ff", b"/api/%c3",
    b"/api/%", b"/api/%4", b"/api/%4g", b"/api/x%2", b"/api/a%20b", b"/api/%22%3c%3e", b"/api/%40%3A", b"/a?",
    b"/a/?x=/../", b"/a/b/c.d/e-f_g~h!$&'()*+,=:@", b"/" + b"a/" * 3000, b"/%41" * 3000,
]


@pytest.mark.parametrize("target", HOSTILE_TARGETS)
def test_targets(target: bytes) -> None:
    same_target(target)


def test_targets_reach_both_verdicts() -> None:
    verdicts = [same_target(t) for t in HOSTILE_TARGETS]
    assert sum(isinstance(v, tuple) and v[0] == "BadPath" for v in verdicts) > 40
    assert sum(isinstance(v, tuple) and v[0] != "BadPath" for v in verdicts) > 10


PATH_ATOMS = st.sampled_from([
    "/", "//", ".", "..", "a", "API", "x.y", "~", ";", "%2e", "%2E", "%2f", "%2F", "%5c", "\\", "%3b", "%3B", "%25",
    "%u002e", "%c0%ae", "%c0%af", "%e0%80%ae", "%c3%a4", "%ef%bc%8e", "%ef%bc%8f", "%e2%88%95", "%7e", "%7E",
    "%41", "%20", " ", "%00", "\x00", "\x1f", "\x7f", "%ff", "%", "%4", "%g1", "?", "#", "=", "@", ":", "\xff",
    "\xc0\xae", "-", "_", "!", "'", "+",
])


@settings(max_examples=1500, deadline=None)
@given(st.lists(PATH_ATOMS, max_size=14))
def test_fuzz_targets(atoms: list[str]) -> None:
    same_target(("/" + "".join(atoms)).encode("latin-1"))
    same_target("".join(atoms).encode("latin-1"))


NAMES = sorted({n.decode() for n in _KINDS} | {"x-a", "accept", "cookie", "sec-websocket-key", "sec-websocket-version"})
NAME = st.sampled_from(NAMES).flatmap(
    lambda n: st.lists(st.booleans(), min_size=len(n), max_size=len(n)).map(
        lambda up: "".join(c.upper() if u else c for c, u in zip(n, up, strict=True))))
VALUE = st.text(alphabet=st.sampled_from(list("chunked,close keep-alive Upgrade websocket 100-continue 0123456789+-\t"
                                              "\x00\x7f\x1b\x80\xff\r\n;=")), max_size=24)
LINE = st.one_of(st.tuples(NAME, VALUE).map(lambda nv: f"{nv[0]}:{nv[1]}"),
                 st.tuples(NAME, VALUE).map(lambda nv: f"{nv[0]}: {nv[1]} "),
                 st.sampled_from(["", " folded", "\tfolded", "no colon", "Bad Name: x", ": x", "x:\r", "x:\n"]))


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from([b"GET / HTTP/1.1", b"POST /x HTTP/1.0", b"GET /ws HTTP/1.1", b"HTTP/1.1 200 OK"]),
       st.lists(LINE, max_size=12), st.booleans())
def test_fuzz_header_blocks(start: bytes, lines: list[str], host: bool) -> None:
    fields = [*lines, "Host: a"] if host else lines
    head = start + b"\r\n" + "".join(f + "\r\n" for f in fields).encode("latin-1") + b"\r\n"
    same_head(head)
    same_end(head)


JUNK = st.binary(max_size=8) | st.sampled_from([b"\r", b"\n", b"\r\n", b"\r\n\r\n", b" ", b"\t", b"\x00", b":",
                                                 b"\r\n ", b"\r\n\t", b"%2e", b"chunked", b"Content-Length: 1\r\n"])


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(SAMPLES + HOSTILE_HEADS[:40]), st.integers(0, 400), JUNK, st.integers(0, 4))
def test_fuzz_mutations(data: bytes, at: int, junk: bytes, cut: int) -> None:
    at %= len(data) + 1
    d = data[:at] + junk + data[at + cut:]
    if d.endswith(b"\r\n\r\n"):
        same_head(d)
    same_end(d)
    same_target(d.partition(b" ")[2].partition(b" ")[0])


@pytest.mark.parametrize("args", [(), (b"x",), (b"x", "1"), ("x", 1)])
def test_head_end_refuses_wrong_arguments(args: tuple[object, ...]) -> None:
    with pytest.raises(TypeError):
        _chead.head_end(*args)


def test_split_target_wants_bytes() -> None:
    with pytest.raises(TypeError):
        _chead.split_target("/x")
