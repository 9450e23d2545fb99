"""The canonical-path function: refusals, canonical spellings, and a property test over backend readings."""

from __future__ import annotations

import posixpath
import re
import unicodedata
from urllib.parse import quote, unquote, unquote_to_bytes

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from services.http.canonical import BadPath, canonical_path, split_target
from services.http.routes import AppTable, Backend, Forward

REFUSED = [
    b"/a/../b", b"/a/./b", b"/..", b"/a/%2e%2e/b", b"/a/%2E/b", b"/a%2fb", b"/a%2Fb", b"/a%5cb", b"/a\\b",
    b"//a", b"/a//b", b"/a;jsessionid=1", b"/a/b;x", b"/a%00b", b"/a\x00b", b"/a\tb", b"/a b",
    b"/a%zz", b"/a%4", b"/a%", b"/%c0%af", b"/%e0%80%af", b"/%ed%a0%80", b"/%ff", b"/a%252e",
    b"a/b", b"*", b"http://evil/", b"/a#frag", b"/\x7f",
    # path parameters (Tomcat, Jetty, Spring), raw and escaped
    b"/api/..;/admin", b"/api/.;x/admin", b"/api/%2e%2e;/admin", b"/api/..%3B/admin", b"/api/..%3b/admin",
    b"/api/x%3Bjsessionid=1", b"/api;/x",
    # Windows / IIS / Kestrel
    b"/api\\..\\admin", b"/api/..%5Cadmin", b"/api/%u002e%u002e/admin", b"/api/%c0%ae%c0%ae/admin",
    b"/api/%c0%2e/admin", b"/api/%e0%80%ae",
    # compatibility look-alikes of . / \ % and letters, escaped as UTF-8 (raw non-ASCII is refused too)
    b"/api/%EF%BC%8E%EF%BC%8E/admin", b"/api/%ef%bc%8f", b"/api/%EF%BC%BC", b"/api/%EF%BC%85",
    b"/api/%E2%88%95admin", b"/api/%E2%80%A4%E2%80%A4/admin", b"/%EF%BC%A1PI/x", b"/api/%E2%84%AA",
    b"/api/\xef\xbc\x8e", b"/api/%C2%A0", b"/api/%E2%80%8B",
    # trailing dots and spaces, controls
    b"/api./x", b"/api%20/x", b"/api/x.", b"/api/x%20", b"/api/...", b"/api/%2e", b"/api/x%0d%0a",
    b"/api/x%09", b"/api/\x01",
]


@pytest.mark.parametrize("raw", REFUSED)
def test_non_canonical_paths_are_refused(raw: bytes) -> None:
    with pytest.raises(BadPath):
        split_target(raw)


@pytest.mark.parametrize("raw", [b"/", b"/a/b/", b"/mycompany/services/x", b"/a/%20b", b"/%C3%A4", b"/a:b@c!$&'()*+,=",
                                 b"/a/b?x=../../y&z=%2f", b"/a-b_c.d~e/f.txt", b"/a/.x", b"/a/x.y/"])
def test_canonical_paths_are_accepted_unchanged(raw: bytes) -> None:
    path, query = split_target(raw)
    assert (path + query).encode() == raw


@pytest.mark.parametrize(("raw", "canon"), [
    (b"/api/%7Euser", "/api/~user"), (b"/api/%7e", "/api/~"), (b"/%41PI/x", "/API/x"), (b"/api/%61", "/api/a"),
    (b"/api/a%2eb", "/api/a.b"), (b"/api/%c3%a4", "/api/%C3%A4"), (b"/api/%3f%23", "/api/%3F%23"),
    (b"/api/x?q=%7e", "/api/x"),
])
def test_escaped_forms_of_allowed_paths_are_forwarded_canonical(raw: bytes, canon: str) -> None:
    path, _ = split_target(raw)
    assert path == canon
    assert canonical_path(path.encode()) == path  # canonical is a fixed point


# -- how common backends read a path ---------------------------------------------------------------

def rfc3986(path: str) -> str:
    """Percent-decoded once, then dot segments resolved (most servers)."""
    return posixpath.normpath(unquote(path))


def tomcat(path: str) -> str:
    """Path parameters stripped from every raw segment, then decoded and normalised."""
    return posixpath.normpath(unquote("/".join(s.split(";", 1)[0] for s in path.split("/"))))


def spring(path: str) -> str:
    """Decoded first, then `;...` stripped per segment, then normalised."""
    return posixpath.normpath("/".join(s.split(";", 1)[0] for s in unquote(path).split("/")))


def double_decode(path: str) -> str:
    return posixpath.normpath(unquote(unquote(path)))


def iis(path: str) -> str:
    """%u escapes, overlong UTF-8 tolerated, NFKC folding, '\\' as '/', trailing dots/spaces dropped, case-folded."""
    path = re.sub(r"%u([0-9a-fA-F]{4})", lambda m: quote(chr(int(m[1], 16))), path)
    raw = unquote_to_bytes(path)
    raw = re.sub(rb"[\xc0\xc1]([\x80-\xbf])", lambda m: bytes([((m[0][0] & 1) << 6) | (m[1][0] & 0x3F)]), raw)
    text = unicodedata.normalize("NFKC", raw.decode("utf-8", "replace")).replace("\\", "/")
    text = "/".join(s.rstrip(". ") if s not in (".", "..") else s for s in text.split("/"))
    return posixpath.normpath(text).lower()


READINGS = [rfc3986, tomcat, spring, double_decode]

FRAGMENTS = ["a", "b", "api", "API", "..", ".", "%2e", "%2E%2e", "%2f", "%5c", "\\", "", ";", "..;", ".;x", "%3B",
             "%3b", "%25", "%252e", "%2e.", "x%2F..", "%c0%ae", "%c0%af", "%00", "%u002e", "%EF%BC%8E", "%ef%bc%8f",
             "%EF%BC%BC", "%E2%88%95", "x.", "x%20", " ", "%7E", "%7e", "%41", "%C3%A4", "%e2%80%a4", "~"]


@given(st.lists(st.sampled_from(FRAGMENTS), max_size=6), st.lists(st.sampled_from(FRAGMENTS), max_size=6))
@example(["..;", "admin"], [])
@example(["%EF%BC%8E%EF%BC%8E", "admin"], [])
def test_every_reading_of_an_accepted_path_agrees_and_stays_inside(seg_parts: list[str], join: list[str]) -> None:
    """Mixtures: fragments joined by '/' or glued into one segment; if accepted, every backend's
    reading of the forwarded (canonical) path is the same and inside the route."""
    raw = "/api/" + "/".join(seg_parts) + "".join(join)
    try:
        path = canonical_path(raw.encode("latin-1"))
    except BadPath:
        return
    std = rfc3986(path)
    assert std == "/api" or std.startswith("/api/"), (raw, std)
    for reading in READINGS:
        assert reading(path) == std, (raw, reading.__name__)
    assert iis(path) == unicodedata.normalize("NFKC", std).lower(), raw
    # and the raw form, as the client sent it, reads the same as what is forwarded
    assert rfc3986(raw) == std, raw
    fwd = AppTable("/api/", Backend.from_url("http://127.0.0.1:9/base/")).route(path, "")
    assert isinstance(fwd, Forward)
    upstream = rfc3986(fwd.path)
    assert upstream == "/base" or upstream.startswith("/base/"), (raw, fwd.path)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_give_a_canonical_path_or_badpath(raw: bytes) -> None:
    try:
        path = canonical_path(b"/" + raw)
    except BadPath:
        return
    assert canonical_path(path.encode()) == path
    assert unquote_to_bytes(path) == unquote_to_bytes(b"/" + raw)  # the same path, only spelled canonically
