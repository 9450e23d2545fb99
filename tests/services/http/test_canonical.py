"""The canonical-path function: table of refusals, and a property test against backend decoding."""

from __future__ import annotations

import posixpath
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.http.canonical import BadPath, canonical_path, split_target
from services.http.routes import AppTable, Backend, Forward

REFUSED = [
    b"/a/../b", b"/a/./b", b"/..", b"/a/%2e%2e/b", b"/a/%2E/b", b"/a%2fb", b"/a%2Fb", b"/a%5cb", b"/a\\b",
    b"//a", b"/a//b", b"/a;jsessionid=1", b"/a/b;x", b"/a%00b", b"/a\x00b", b"/a\tb", b"/a b",
    b"/%41", b"/a%zz", b"/a%4", b"/a%", b"/%c0%af", b"/%e0%80%af", b"/%ed%a0%80", b"/%ff", b"/a%252e",
    b"a/b", b"*", b"http://evil/", b"/a#frag", b"/\x7f",
]


@pytest.mark.parametrize("raw", REFUSED)
def test_non_canonical_paths_are_refused(raw: bytes) -> None:
    with pytest.raises(BadPath):
        split_target(raw)


@pytest.mark.parametrize("raw", [b"/", b"/a/b/", b"/mycompany/services/x", b"/a/%20b", b"/%C3%A4", b"/a:b@c!$&'()*+,=",
                                 b"/a/b?x=../../y&z=%2f", b"/a-b_c.d~e/f.txt"])
def test_canonical_paths_are_accepted_unchanged(raw: bytes) -> None:
    path, query = split_target(raw)
    assert (path + query).encode() == raw


def backend_view(path: str) -> str:
    """How typical backends see a path: percent-decoded once, then dot segments resolved."""
    return posixpath.normpath(unquote(path.replace("\\", "/")))


@given(st.lists(st.sampled_from(["a", "..", ".", "%2e", "%2E%2e", "%2f", "%5c", "\\", "", ";", "%25", "%2e.",
                                 "x%2F..", "b", "%c0%ae", "%00"]), max_size=8))
def test_accepted_paths_never_leave_their_prefix(parts: list[str]) -> None:
    raw = "/api/" + "/".join(parts)
    try:
        path = canonical_path(raw.encode())
    except BadPath:
        return
    seen = backend_view(path)
    assert seen == "/api" or seen.startswith("/api/"), (raw, seen)
    # and what the application route forwards stays inside the upstream's base path
    fwd = AppTable("/api/", Backend.from_url("http://127.0.0.1:9/base/")).route(path, "")
    assert isinstance(fwd, Forward)
    upstream = backend_view(fwd.path)
    assert upstream == "/base" or upstream.startswith("/base/"), (raw, fwd.path)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_give_a_path_or_badpath(raw: bytes) -> None:
    try:
        path = canonical_path(b"/" + raw)
    except BadPath:
        return
    assert path.encode() == b"/" + raw
