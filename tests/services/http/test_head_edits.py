"""What the proxy passes on of a head: hop-by-hop fields and the client's own forwarding claims
are removed, and exactly the fields the prefix rule edits (Set-Cookie, Location, Content-Location,
Refresh) are handed to it.

The parser builds the forwarded block from its cached line classification; these tests compare it
with a plain line-by-line filter on blocks of any mix of names, cases and near-miss names, parsed
twice (the second time every line comes from the cache).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.http.http1 import HOP_BY_HOP, UNTRUSTED, parse_request_head, parse_response_head
from services.http.rewrite import EDITED

NAMES = [n.decode() for n in HOP_BY_HOP + UNTRUSTED] + [
    "Content-Length", "Set-Cookie", "X-A", "TEapot", "Connection-Id", "X-Forwarded-For-Me", "Upgraded", "Cookie",
    "Location", "Content-Location", "Refresh", "X-Location"]
EDITED_NAMES = {"set-cookie", "location", "content-location", "refresh"}
# names that cannot make a head invalid, whatever their value
NEUTRAL = {"connection", "upgrade", "set-cookie", "x-a", "teapot", "cookie", "upgraded", "connection-id",
           "x-forwarded-for-me", "keep-alive", "proxy-connection", "trailer", "proxy-authorization",
           "proxy-authenticate", "te", "location", "content-location", "refresh", "x-location",
           *(n.decode() for n in UNTRUSTED)}

field = st.tuples(
    st.sampled_from(NAMES).flatmap(lambda n: st.sampled_from([n, n.lower(), n.upper()])),
    st.text(alphabet="abc ;=/\t", max_size=12).map(str.strip),
).filter(lambda f: f[0].lower() in NEUTRAL)


def block_of(fields: list[tuple[str, str]]) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in fields).encode()


def kept(fields: list[tuple[str, str]], dropped: tuple[bytes, ...]) -> bytes:
    return block_of([(k, v) for k, v in fields if k.lower().encode() not in dropped])


@given(st.lists(field, max_size=12))
def test_a_request_passes_on_exactly_the_fields_not_dropped(fields: list[tuple[str, str]]) -> None:
    head = b"GET / HTTP/1.1\r\nHost: a\r\n" + block_of(fields) + b"\r\n"
    for _ in range(2):
        h = parse_request_head(head)
        assert h.kept == kept(fields, HOP_BY_HOP + UNTRUSTED + (b"content-length", b"host"))
        assert h.host_line == b"Host: a"


@given(st.lists(field, max_size=12))
def test_a_response_passes_on_exactly_the_fields_not_hop_by_hop(fields: list[tuple[str, str]]) -> None:
    head = b"HTTP/1.1 200 OK\r\n" + block_of(fields) + b"\r\n"
    for _ in range(2):
        h = parse_response_head(head, b"GET")
        assert h.kept == kept(fields, HOP_BY_HOP)
        assert h.cookies == any(k.lower() == "set-cookie" for k, _ in fields)


@given(st.lists(field, max_size=12))
def test_the_prefix_rule_edits_every_url_and_cookie_line_and_nothing_else(fields: list[tuple[str, str]]) -> None:
    head = b"HTTP/1.1 200 OK\r\n" + block_of(fields)
    edited = EDITED.sub(lambda m: m[1] + b" <" + m[2].strip(b" \t") + b">", head)
    expect = b"HTTP/1.1 200 OK\r\n" + block_of(
        [(k, f"<{v}>" if k.lower() in EDITED_NAMES else v) for k, v in fields])
    assert edited == expect
    r = parse_response_head(head + b"\r\n", b"GET")
    assert r.urls == any(k.lower() in EDITED_NAMES - {"set-cookie"} for k, _ in fields)


def test_framing_fields_are_read_and_not_passed_on() -> None:
    head = b"POST / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nX-A: 1\r\n" \
           b"Content-Length: 3\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
    h = parse_request_head(head)
    assert (h.kept, h.content_length, h.keep_alive) == (b"X-A: 1\r\n", 3, True)
    r = parse_response_head(b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n"
                            b"Set-Cookie: a=1\r\n\r\n", b"GET")
    assert (r.kept, r.chunked, r.keep_alive, r.cookies) == (b"Set-Cookie: a=1\r\n", True, False, True)
