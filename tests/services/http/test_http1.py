"""HTTP/1.1 heads: strict rules (where messages end is tested in test_framing.py)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.http.http1 import HttpError, parse_request_head, parse_response_head


def req(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


WS_KEY = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="


@pytest.mark.parametrize("name", ["X-Original-URL", "X-Rewrite-URL", "X-Override-URL", "X-HTTP-Method-Override",
                                  "X-HTTP-Method", "X-Method-Override", "x-original-uri"])
def test_retargeting_fields_are_removed_and_named_for_the_log(name: str) -> None:
    h = parse_request_head(req("GET /api/x HTTP/1.1", "Host: x", f"{name}: /admin", "X-Keep: 1"))
    assert h.kept == b"X-Keep: 1\r\n"
    assert h.stripped == [name.encode()]


@pytest.mark.parametrize("name", ["X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Prefix", "X-Forwarded-Proto",
                                  "X-Forwarded-Port", "Forwarded", "X-Real-IP", "True-Client-IP", "X-Forwarded-Server"])
def test_clients_origin_claims_are_removed(name: str) -> None:
    assert parse_request_head(req("GET / HTTP/1.1", "Host: x", f"{name}: evil", "X-Keep: 1")).kept == b"X-Keep: 1\r\n"


def test_fields_named_in_connection_are_removed_but_framing_stays() -> None:
    h = parse_request_head(req("POST / HTTP/1.1", "Host: x", "Connection: X-Auth, keep-alive, content-length, Cookie",
                               "X-Auth: admin", "Cookie: a=1", "Content-Length: 2", "X-Keep: 1"))
    assert h.kept == b"X-Keep: 1\r\n" and h.content_length == 2
    r = parse_response_head(b"HTTP/1.1 200 OK\r\nConnection: x-secret, content-length\r\nX-Secret: 1\r\n"
                            b"Content-Length: 0\r\n\r\n", b"GET")
    assert r.kept == b"Content-Length: 0\r\n"


@pytest.mark.parametrize("token", ["h2c", "HTTP/2.0", "TLS/1.2", "foo", "websocket2"])
def test_upgrades_other_than_websocket_are_stripped(token: str) -> None:
    h = parse_request_head(req("GET / HTTP/1.1", "Host: x", "Connection: Upgrade, HTTP2-Settings", f"Upgrade: {token}",
                               "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA", WS_KEY, "Sec-WebSocket-Version: 13"))
    assert h.upgrade is None
    assert b"Upgrade" not in h.kept and b"HTTP2-Settings" not in h.kept
    assert h.stripped == [f"Upgrade: {token}".encode()]


@pytest.mark.parametrize("lines", [
    ("POST /ws HTTP/1.1", WS_KEY, "Sec-WebSocket-Version: 13"),
    ("GET /ws HTTP/1.1", "Sec-WebSocket-Version: 13"),
    ("GET /ws HTTP/1.1", "Sec-WebSocket-Key: short==", "Sec-WebSocket-Version: 13"),
    ("GET /ws HTTP/1.1", WS_KEY, "Sec-WebSocket-Version: 8"),
    ("GET /ws HTTP/1.1", WS_KEY),
])
def test_a_websocket_upgrade_without_a_valid_handshake_is_refused(lines: tuple[str, ...]) -> None:
    with pytest.raises(HttpError) as e:
        parse_request_head(req(lines[0], "Host: x", "Connection: Upgrade", "Upgrade: websocket", *lines[1:]))
    assert e.value.status == 400


def test_request_head_fields_and_framing() -> None:
    h = parse_request_head(req("POST /a HTTP/1.1", "Host: x", "Content-Length: 5", "X-A:  b "))
    assert (h.method, h.target, h.content_length, h.keep_alive) == (b"POST", b"/a", 5, True)
    assert h.get(b"x-a") == b"b"
    h = parse_request_head(req("GET / HTTP/1.0"))
    assert not h.keep_alive
    h = parse_request_head(req("GET /ws HTTP/1.1", "Host: x", "Connection: keep-alive, Upgrade", "Upgrade: WebSocket ",
                               WS_KEY, "Sec-WebSocket-Version: 13"))
    assert h.upgrade == b"WebSocket"  # as sent, without the trailing space
    assert parse_request_head(req("GET /ws HTTP/1.1", "Host: x", "Upgrade: websocket")).upgrade is None


@pytest.mark.parametrize(("head", "status"), [
    (req("POST / HTTP/1.1", "Host: x", "Content-Length: 5", "Transfer-Encoding: chunked"), 400),
    (req("POST / HTTP/1.1", "Host: x", "Content-Length: 5", "Content-Length: 5"), 400),
    (req("POST / HTTP/1.1", "Host: x", "Content-Length: 5, 5"), 400),
    (req("POST / HTTP/1.1", "Host: x", "Content-Length: -1"), 400),
    (req("POST / HTTP/1.1", "Host: x", "Transfer-Encoding: gzip, chunked"), 501),
    (req("POST / HTTP/1.1", "Host: x", "Transfer-Encoding: chunked", "Transfer-Encoding: chunked"), 501),
    (req("GET / HTTP/1.1", "Host: x", "X-A: b", " folded"), 400),
    (b"GET / HTTP/1.1\nHost: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\rY: z\r\n\r\n", 400),
    (req("GET / HTTP/1.1", "Host: x", "X-A: a\x00b"), 400),
    (req("GET / HTTP/1.1", "Host: x", "Bad Name: v"), 400),
    (req("GET / HTTP/1.1"), 400),
    (req("GET / HTTP/1.1", "Host: a", "Host: b"), 400),
    (req("GET / HTTP/2.0", "Host: x"), 505),
    (req("CONNECT x:443 HTTP/1.1", "Host: x"), 405),
    (req("OPTIONS * HTTP/1.1", "Host: x"), 400),
    (req("GET  / HTTP/1.1", "Host: x"), 400),
    (req("GET /" + "a" * 9000 + " HTTP/1.1", "Host: x"), 414),
    (req("GET / HTTP/1.1", "Host: x", *[f"X-{i}: v" for i in range(120)]), 431),
    (b"GE\nT / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"PURGE\n / HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # a "$" that matches before a final LF lets this pass
    (b"GET /a\rb HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (req("GET / HTTP/1.1", "HOST: a", "host: b"), 400),
    (req("POST / HTTP/1.1", "Host: x", "content-length: 5", "Content-Length: 5"), 400),
    (req("POST / HTTP/1.1", "Host: x", "Content-Length: \u00b2"), 400),
    (req("POST / HTTP/1.1", "Host: x", "TRANSFER-ENCODING: Chunked", "Content-Length: 3"), 400),
])
def test_refusals_carry_their_status(head: bytes, status: int) -> None:
    with pytest.raises(HttpError) as info:
        parse_request_head(head)
    assert info.value.status == status


def test_field_names_are_found_in_any_case_and_only_as_names() -> None:
    h = parse_request_head(req("POST / HTTP/1.1", "hOsT: Example.ORG ", "X-Host: other", "CONTENT-LENGTH: 7",
                               "X-Note: Content-Length: 99", "CONNECTION: Close"))
    assert (h.host, h.content_length, h.keep_alive) == (b"example.org", 7, False)
    h = parse_request_head(req("POST / HTTP/1.1", "Host: x", "transfer-encoding: CHUNKED"))
    assert h.chunked and h.content_length is None
    h = parse_request_head(req("GET / HTTP/1.1", "Host: x", "Connection: TE", "Connection: close"))
    assert not h.keep_alive
    resp = parse_response_head(b"HTTP/1.1 200 OK\r\nSET-COOKIE: a=1\r\nContent-Length: 0\r\n\r\n", b"GET")
    assert resp.cookies
    assert not parse_response_head(b"HTTP/1.1 200 OK\r\nX-Set-Cookie: a\r\n\r\n", b"GET").cookies


def test_response_status_line_is_strict() -> None:
    for bad in (b"HTTP/1.1 200 O\nK\r\n\r\n", b"HTTP/1.1 200 \x01\r\n\r\n", b"HTTP/2 200 OK\r\n\r\n",
                b"HTTP/1.1 20 OK\r\n\r\n", b" HTTP/1.1 200 OK\r\n\r\n"):
        with pytest.raises(HttpError) as info:
            parse_response_head(bad, b"GET")
        assert info.value.status == 502
    ok = parse_response_head(b"HTTP/1.0 404\r\n\r\n", b"GET")
    assert (ok.status, ok.version, ok.keep_alive) == (404, b"HTTP/1.0", False)


def test_response_framing_for_head_and_204() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    assert parse_response_head(raw, b"HEAD").content_length == 0
    assert parse_response_head(raw, b"GET").content_length == 10
    close = parse_response_head(b"HTTP/1.1 200 OK\r\n\r\n", b"GET")
    assert close.content_length is None and not close.chunked
    with pytest.raises(HttpError):
        parse_response_head(b"HTTP/1.1 2000 OK\r\n\r\n", b"GET")


@given(st.binary(max_size=200))
def test_head_parser_never_raises_anything_but_httperror(data: bytes) -> None:
    try:
        parse_request_head(data + b"\r\n\r\n")
    except HttpError:
        pass


# The reference for a valid field block, as RFC 9112 puts it: lines of token ":" field-value, where
# a value holds no controls but HTAB (so no bare CR or LF) and no line starts with whitespace.
_REFERENCE_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*")


@given(st.lists(st.binary(max_size=12).map(lambda b: b"X" + b), max_size=8),
       st.lists(st.sampled_from([b"X-A: 1", b"x-b:2", b"Via: a\tb"]), max_size=4))
def test_field_lines_are_accepted_exactly_when_valid_cached_or_not(noise: list[bytes], good: list[bytes]) -> None:
    lines = noise + good
    head = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"
    if b"\r\n\r\n" in head[:-4]:
        return  # an empty line ends the head earlier: not one block any more
    fields = head[:-4].split(b"\r\n")[1:]
    valid = all(_REFERENCE_LINE.fullmatch(f) for f in fields) and not any(
        f.lower().startswith((b"content-length:", b"transfer-encoding:", b"host:")) for f in fields[1:])
    for _ in range(2):  # the second parse finds every valid line in the cache
        try:
            parse_request_head(head)
            accepted = True
        except HttpError as exc:
            assert exc.status == 400
            accepted = False
        assert accepted == valid, head


@pytest.mark.parametrize(("head", "status"), [
    (req("PUT /a HTTP/1.1", "Host: x", "Expect: 100-continue-please", "Content-Length: 1"), 417),
    (req("PUT /a HTTP/1.1", "Host: x", "Expect: something", "Content-Length: 1"), 417),
    (req("POST /a HTTP/1.0", "Host: x", "Transfer-Encoding: chunked"), 400),
])
def test_expectations_and_http10_chunked(head: bytes, status: int) -> None:
    with pytest.raises(HttpError) as e:
        parse_request_head(head)
    assert e.value.status == status
    assert parse_request_head(req("PUT /a HTTP/1.1", "Host: x", "Expect: 100-Continue", "Content-Length: 1"))
