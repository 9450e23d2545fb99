"""The prefix rule on response heads: what an upstream says about its own URLs, mapped onto the
public ones (mode rewrite), or left alone (mode forward_prefix), and hostile values survived.

Issue #19 (5): pforte sent X-Forwarded-Prefix *and* prefixed cookie paths, so an app honouring
the header got `Path=/alpha/alpha/`; `Location: /home` was never rewritten and left the instance.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.http.http1 import MAX_HEAD, parse_response_head
from services.http.proxy import split_host
from services.http.rewrite import PrefixRule
from services.http.routes import Backend

ORIGIN = b"https://pub.example"
SENT = b"pub.example"  # the Host the instance's upstream was sent (the client's)

alpha = Backend.from_url("http://10.0.0.5:8080").prefix_rule("/alpha", "rewrite", instance=True)
aware = Backend.from_url("http://10.0.0.5:8080").prefix_rule("/alpha", "forward_prefix", instance=True)
based = Backend.from_url("http://10.0.0.5:8080/o/").prefix_rule("/other", "rewrite", instance=True)
app = Backend.from_url("http://127.0.0.1:9/procurat/api/v1/").prefix_rule("/api")


def location(rule: PrefixRule, value: str, origin: bytes | None = ORIGIN) -> str:
    return rule.url(value.encode(), origin, SENT).decode()


@pytest.mark.parametrize(("value", "public"), [
    ("/home", "/alpha/home"),
    ("/", "/alpha/"),
    ("/a/b?next=/c#top", "/alpha/a/b?next=/c#top"),
    ("home", "home"),  # relative: the browser resolves it against the public URL already
    ("../x", "../x"),
    ("?page=2", "?page=2"),
    ("//evil.example/x", "//evil.example/x"),  # scheme-relative: another authority
    ("/\\evil.example/x", "/\\evil.example/x"),
    ("http://10.0.0.5:8080/x?y#z", "https://pub.example/alpha/x?y#z"),  # the upstream's own origin
    ("HTTP://10.0.0.5:8080", "https://pub.example/alpha/"),
    ("https://pub.example/home", "https://pub.example/alpha/home"),  # the Host it was sent
    ("http://PUB.example/home", "https://pub.example/alpha/home"),  # ... over plain http, as it sees itself
    ("http://10.0.0.5:8080@evil.example/", "http://10.0.0.5:8080@evil.example/"),  # userinfo: not the origin
    ("http://10.0.0.5/x", "http://10.0.0.5/x"),  # another port
    ("https://10.0.0.5:8080/x", "https://10.0.0.5:8080/x"),  # another scheme
    ("https://www.example.com/x", "https://www.example.com/x"),
    ("mailto:a@b", "mailto:a@b"),
    ("", ""),
])
def test_rewrite_mode_maps_the_upstreams_own_urls_under_the_prefix(value: str, public: str) -> None:
    assert location(alpha, value) == public


def test_an_absolute_url_becomes_root_relative_when_the_client_sent_no_host() -> None:
    assert location(alpha, "http://10.0.0.5:8080/x", origin=None) == "/alpha/x"


@pytest.mark.parametrize(("rule", "value", "public"), [
    (based, "/o/x", "/other/x"),
    (based, "/o", "/other/"),
    (based, "/o?a=1", "/other/?a=1"),
    (based, "/ox", "/ox"),  # not under the base path: nothing public to map it to, as nginx
    (based, "/elsewhere", "/elsewhere"),
    (based, "http://10.0.0.5:8080/o/x", "https://pub.example/other/x"),
    (app, "/procurat/api/v1/students?id=3", "/api/students?id=3"),
    (app, "/procurat/api/v1", "/api/"),
    (app, "http://127.0.0.1:9/procurat/api/v1/x", "https://pub.example/api/x"),
    (app, "https://pub.example/procurat/api/v1/x", "https://pub.example/procurat/api/v1/x"),  # Host was its own
    (app, "/login", "/login"),
])
def test_a_base_path_maps_onto_the_public_prefix(rule: PrefixRule, value: str, public: str) -> None:
    assert location(rule, value) == public


@pytest.mark.parametrize(("value", "public"), [
    ("5; url=/x", "5; url=/alpha/x"),
    ("0;URL='/x'", "0;URL='/alpha/x'"),
    ('1; url="http://10.0.0.5:8080/a"', '1; url="https://pub.example/alpha/a"'),
    ("1, /x", "1, /alpha/x"),
    ("3", "3"),  # reloads the public URL itself
    ("3;", "3;"),
    ("soon; url=/x", "soon; url=/x"),  # not a refresh a browser follows
    ("0; url='", "0; url='"),
])
def test_refresh_url_is_mapped_like_location(value: str, public: str) -> None:
    assert alpha.refresh(value.encode(), ORIGIN, SENT).decode() == public


@pytest.mark.parametrize(("rule", "value", "public"), [
    (alpha, "sid=1; Path=/; HttpOnly", "sid=1; Path=/alpha/; HttpOnly"),
    (alpha, "sid=1; path=/app", "sid=1; Path=/alpha/app"),
    (alpha, "sid=1", "sid=1"),  # no Path: the default path comes from the public URL
    (alpha, "sid=1; Path=", "sid=1; Path="),
    (alpha, "sid=1; Path=relative", "sid=1; Path=relative"),  # ignored by browsers (RFC 6265 5.2.4)
    (alpha, "sid=1; Domain=10.0.0.5; Path=/", "sid=1; Path=/alpha/"),  # the upstream's host: host-only now
    (alpha, "sid=1; domain=.10.0.0.5", "sid=1"),
    (alpha, "sid=1; Domain=pub.example", "sid=1; Domain=pub.example"),
    (alpha, "sid=1; Path=/alpha/", "sid=1; Path=/alpha/alpha/"),  # the upstream does not know its prefix
    # malformed, read as a browser reads it: nameless cookies are accepted, so their Path is scoped too
    (alpha, "nameless; Path=/", "nameless; Path=/alpha/"),
    (alpha, "=v; PATH = /x ;;", "=v; Path=/alpha/x;;"),
    (alpha, "a=1; Path=/x; Path=/y", "a=1; Path=/alpha/x; Path=/alpha/y"),
    (alpha, "a=\xff\xfe; Path=/\xe9", "a=\xff\xfe; Path=/alpha/\xe9"),
    (aware, "sid=1; Path=/alpha/", "sid=1; Path=/alpha/"),  # told its prefix: nothing doubled
    (aware, "sid=1; Path=/alpha", "sid=1; Path=/alpha"),
    (aware, "sid=1; Path=/", "sid=1; Path=/alpha/"),  # still not for the other instances
    (aware, "sid=1; Path=/alphabet", "sid=1; Path=/alpha/"),
    (aware, "sid=1; Domain=10.0.0.5", "sid=1; Domain=10.0.0.5"),
    (based, "sid=1; Path=/o/app", "sid=1; Path=/other/app"),
    (based, "sid=1; Path=/", "sid=1; Path=/other/"),  # outside its base: kept inside the instance
    (app, "sid=1; Path=/procurat/api/v1", "sid=1; Path=/api/"),
    (app, "sid=1; Path=/", "sid=1; Path=/"),  # an application has its own origin (port)
    (app, "sid=1; Domain=127.0.0.1", "sid=1"),
])
def test_set_cookie_path_and_domain(rule: PrefixRule, value: str, public: str) -> None:
    assert rule.cookie(value.encode("latin-1")).decode("latin-1") == public


def test_forward_prefix_mode_announces_the_prefix_and_rewrites_no_url() -> None:
    assert aware.forwarded_prefix == b"X-Forwarded-Prefix: /alpha\r\n"
    assert alpha.forwarded_prefix == app.forwarded_prefix == b""
    head = b"HTTP/1.1 302 Found\r\nLocation: /alpha/home\r\nRefresh: 0; url=/x\r\nSet-Cookie: a=1; Path=/alpha/\r\n"
    assert aware.head(head, ORIGIN, SENT) == head


def test_a_whole_head_edits_just_those_fields() -> None:
    head = (b"HTTP/1.1 302 Found\r\nLocation:   /home \t\r\nX-Location: /x\r\nContent-Location: /c\r\n"
            b"set-cookie: a=1; Path=/\r\nSet-Cookie: b=2\r\nLink: </s>; rel=x\r\nContent-Length: 0\r\n")
    assert alpha.head(head, ORIGIN, SENT) == (
        b"HTTP/1.1 302 Found\r\nLocation: /alpha/home\r\nX-Location: /x\r\nContent-Location: /alpha/c\r\n"
        b"set-cookie: a=1; Path=/alpha/\r\nSet-Cookie: b=2\r\nLink: </s>; rel=x\r\nContent-Length: 0\r\n")


NAMES = ["Location", "location", "Content-Location", "Refresh", "Set-Cookie", "SET-COOKIE", "X-Other"]
values = st.binary(max_size=300).map(lambda b: bytes(c for c in b if c not in b"\r\n\x00"))


@given(st.lists(st.tuples(st.sampled_from(NAMES), values), max_size=20))
def test_hostile_values_never_crash_never_break_the_head_and_grow_it_boundedly(
        fields: list[tuple[str, bytes]]) -> None:
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(k.encode() + b": " + v + b"\r\n" for k, v in fields)
    for rule in (alpha, aware, based, app):
        out = rule.head(head, ORIGIN, SENT)
        assert out.count(b"\r") == out.count(b"\n") == head.count(b"\n")
        names = [line.split(b":", 1)[0] for line in out.split(b"\r\n")[1:-1]]
        assert names == [k.encode() for k, _ in fields]
        # per edited line at most: the origin and prefix once per URL, or per Path attribute
        growth = sum(len(ORIGIN) + 16 + (v.count(b";") + 1) * 8 for _, v in fields)
        assert len(out) <= len(head) + growth


def test_a_hostile_line_of_blanks_is_edited_in_linear_time() -> None:
    """The previous Set-Cookie edit was a lazy regex against trailing blanks: quadratic, 1.5 s of a
    stalled event loop for one 30 KB line."""
    head = b"HTTP/1.1 200 OK\r\nSet-Cookie: a" + b" " * (MAX_HEAD - 100) + b"b\r\nLocation: /" + b" " * 5000 + b"x\r\n"
    parse_response_head(head + b"\r\n", b"GET")  # a head the parser lets through
    t0 = time.perf_counter()
    out = alpha.head(head, ORIGIN, SENT)
    assert time.perf_counter() - t0 < 0.25
    assert out.endswith(b"Location: /alpha/" + b" " * 5000 + b"x\r\n")


@pytest.mark.parametrize(("host", "split"), [
    (b"pub.example", (b"pub.example", b"443")),
    (b"pub.example:8443", (b"pub.example", b"8443")),
    (b"[::1]:8443", (b"[::1]", b"8443")),
    (b"[::1]", (b"[::1]", b"443")),
    (b"::1", (b"::1", b"443")),  # not a valid Host; passed whole rather than guessed at
    (b"a:b", (b"a:b", b"443")),
    (b"a:123456", (b"a:123456", b"443")),
    (b"", (b"", b"443")),
])
def test_forwarded_host_has_no_port_and_forwarded_port_the_addressed_one(host: bytes, split: tuple) -> None:
    assert split_host(host, b"443") == split


def test_the_router_gives_each_instance_its_mode_and_applications_rewrite() -> None:
    from services.http.routes import AppTable, Forward, WebTable

    b = Backend.from_url("http://10.0.0.5:8080")
    table = WebTable("web_and_rest", None, (("alpha", b), ("beta", b)), (("alpha", "forward_prefix"),))
    a, z = table.route("/alpha/x", ""), table.route("/beta/x", "")
    assert isinstance(a, Forward) and isinstance(z, Forward) and a.rule and z.rule
    assert (a.path, a.rule.forwarded_prefix, a.rule.rewrite) == ("/x", b"X-Forwarded-Prefix: /alpha\r\n", False)
    assert (z.path, z.rule.forwarded_prefix, z.rule.rewrite, z.rule.public) == ("/x", b"", True, "/beta")
    f = AppTable("/api/", Backend.from_url("http://127.0.0.1:9/procurat/api/v1/")).route("/api/x", "?q")
    assert isinstance(f, Forward) and f.rule is not None
    assert (f.path, f.rule.public, f.rule.upstream, f.rule.rewrite, f.rule.scope) == (
        "/procurat/api/v1/x?q", "/api", "/procurat/api/v1", True, False)
