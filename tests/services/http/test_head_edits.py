"""The proxy's header-block edits: removing hop-by-hop and untrusted fields, and Set-Cookie scoping.

The edits are regex substitutions over the validated raw block; these tests compare them with a
plain line-by-line filter on blocks of any mix of names, cases and near-miss names.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.http.http1 import parse_request_head, parse_response_head
from services.http.proxy import (
    DROP_FROM_REQUEST,
    DROP_FROM_REQUEST_AND_HOST,
    DROP_FROM_RESPONSE,
    HOP_BY_HOP,
    SET_COOKIE,
    UNTRUSTED,
)

NAMES = [n.decode() for n in HOP_BY_HOP + UNTRUSTED] + [
    "Host", "Content-Length", "Set-Cookie", "X-A", "TEapot", "Connection-Id", "X-Forwarded-For-Me", "Upgraded",
    "Cookie"]

field = st.tuples(
    st.sampled_from(NAMES).flatmap(lambda n: st.sampled_from([n, n.lower(), n.upper()])),
    st.text(alphabet="abc ;=/\t", max_size=12).map(str.strip),
)


def block_of(fields: list[tuple[str, str]]) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in fields).encode()


def kept(fields: list[tuple[str, str]], dropped: tuple[bytes, ...]) -> bytes:
    return block_of([(k, v) for k, v in fields if k.lower().encode() not in dropped])


@given(st.lists(field, max_size=12))
def test_request_drops_exactly_the_named_fields(fields: list[tuple[str, str]]) -> None:
    block = block_of(fields)
    assert DROP_FROM_REQUEST.sub(b"", b"\n" + block)[1:] == kept(fields, HOP_BY_HOP + UNTRUSTED + (b"content-length",))
    assert DROP_FROM_REQUEST_AND_HOST.sub(b"", b"\n" + block)[1:] == kept(
        fields, HOP_BY_HOP + UNTRUSTED + (b"content-length", b"host"))


@given(st.lists(field, max_size=12))
def test_response_drops_exactly_hop_by_hop_fields(fields: list[tuple[str, str]]) -> None:
    head = b"HTTP/1.1 200 OK\r\n" + block_of(fields)
    assert DROP_FROM_RESPONSE.sub(b"", head) == b"HTTP/1.1 200 OK\r\n" + kept(fields, HOP_BY_HOP)


@given(st.lists(field, max_size=12))
def test_set_cookie_edit_touches_every_set_cookie_line_and_nothing_else(fields: list[tuple[str, str]]) -> None:
    head = b"HTTP/1.1 200 OK\r\n" + block_of(fields)
    edited = SET_COOKIE.sub(lambda m: m[1] + b"<" + m[2] + b">" + m[3], head)
    expect = b"HTTP/1.1 200 OK\r\n" + block_of(
        [(k, f"<{v}>" if k.lower() == "set-cookie" else v) for k, v in fields])
    assert edited == expect
    neutral = [(k, v) for k, v in fields if k.lower() in ("set-cookie", "x-a", "teapot", "cookie", "upgraded")]
    parsed = parse_response_head(b"HTTP/1.1 200 OK\r\n" + block_of(neutral) + b"\r\n", b"GET")
    assert parsed.cookies == any(k.lower() == "set-cookie" for k, _ in neutral)


def test_request_block_survives_the_parser_unchanged() -> None:
    head = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nX-A: 1\r\n\r\n"
    h = parse_request_head(head)
    assert DROP_FROM_REQUEST.sub(b"", b"\n" + h.block)[1:] == b"Host: a\r\nX-A: 1\r\n"
