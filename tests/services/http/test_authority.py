"""The authority a request addressed: grammar first (400), then this proxy's names (421)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.http.authority import Names, parse_authority, request_target
from services.http.http1 import HttpError

NAMES = Names("proxy.example", "127.0.0.1")


@pytest.mark.parametrize(("value", "parsed"), [
    (b"proxy.example", ("proxy.example", "")), (b"Proxy.Example:8443", ("proxy.example", "8443")),
    (b"proxy.example:", ("proxy.example", "")), (b"127.0.0.1:80", ("127.0.0.1", "80")),
    (b"[::1]:443", ("[::1]", "443")), (b"[0:0::1]", ("[::1]", "")),
])
def test_valid_authorities(value: bytes, parsed: tuple[str, str]) -> None:
    assert parse_authority(value) == parsed


@pytest.mark.parametrize("value", [
    b"", b"a/b", b"a?b", b"a#b", b"user@proxy.example", b"a,b", b"a b", b"a\tb", b"proxy.example:99999",
    b"proxy.example:8x", b"proxy.example:1:2", b"[::1", b"[::1]x", b"[fe80::1%25eth0]", b"[v1.x]", b"a%41",
    b"proxy.example\x00", b"\xc3\xa4.example", b":443",
])
def test_malformed_authorities_are_400(value: bytes) -> None:
    with pytest.raises(HttpError) as e:
        parse_authority(value)
    assert e.value.status == 400


@pytest.mark.parametrize("host", [b"proxy.example", b"PROXY.example:443", b"proxy.example.", b"127.0.0.1:8443"])
def test_the_proxys_names_pass(host: bytes) -> None:
    assert request_target(b"/x", host, NAMES) == b"/x"


@pytest.mark.parametrize("host", [b"localhost", b"evil.example", b"proxy.example.evil", b"127.0.0.2", b"[::1]",
                                  b"2130706433", b"proxy.example..", b"0x7f.0.0.1"])
def test_other_names_are_421(host: bytes) -> None:
    with pytest.raises(HttpError) as e:
        request_target(b"/x", host, NAMES)
    assert e.value.status == 421


def test_bind_literal_only_when_loopback_and_localhost_only_when_configured() -> None:
    assert not Names("proxy.example", "192.0.2.1").serves("192.0.2.1")
    assert not Names("proxy.example", "0.0.0.0").serves("0.0.0.0")
    assert Names("proxy.example", "::1").serves("[::1]")
    assert Names("localhost", "127.0.0.1").serves("localhost")


def test_absolute_form_wins_and_must_agree_with_host() -> None:
    assert request_target(b"http://proxy.example/a?b", b"proxy.example", NAMES) == b"/a?b"
    assert request_target(b"HTTPS://proxy.example:8443", None, NAMES) == b"/"
    with pytest.raises(HttpError) as e:
        request_target(b"http://evil.example/a", b"proxy.example", NAMES)
    assert e.value.status == 400
    with pytest.raises(HttpError) as e:
        request_target(b"http://evil.example/a", b"evil.example", NAMES)
    assert e.value.status == 421
    with pytest.raises(HttpError) as e:
        request_target(b"http://u@proxy.example/a", b"proxy.example", NAMES)
    assert e.value.status == 400


def test_a_missing_host_is_400() -> None:
    with pytest.raises(HttpError) as e:
        request_target(b"/", None, NAMES)
    assert e.value.status == 400


@given(st.binary(max_size=40))
def test_any_bytes_are_a_name_of_ours_or_400_or_421(value: bytes) -> None:
    try:
        request_target(b"/", value, NAMES)
    except HttpError as e:
        assert e.status in (400, 421)
        return
    host, _ = parse_authority(value)
    assert host.rstrip(".") in ("proxy.example", "127.0.0.1")


def test_without_names_nothing_is_checked_and_absolute_form_stays_for_split_target() -> None:
    from services.http.canonical import BadPath, split_target

    assert request_target(b"/x", b"any name", None) == b"/x"
    with pytest.raises(BadPath):
        split_target(request_target(b"http://proxy.example/x", b"proxy.example", None))


def test_a_remembered_host_is_only_one_that_passed() -> None:
    names = Names("proxy.example")
    request_target(b"/", b"proxy.example", names)
    for _ in range(2):
        with pytest.raises(HttpError):
            request_target(b"/", b"evil.example", names)
    assert list(names.seen) == [b"proxy.example"]


def test_aliases_are_names_of_ours_and_nothing_else_is() -> None:
    names = Names("proxy.example", "0.0.0.0", ("Portal.Example", "192.0.2.10", "2001:DB8::1"))
    for host in (b"portal.example", b"PORTAL.example.:443", b"192.0.2.10", b"[2001:db8:0::1]:8443", b"proxy.example"):
        assert request_target(b"/x", host, names) == b"/x", host
    for host in (b"evil.example", b"192.0.2.11", b"[2001:db8::2]", b"127.0.0.1"):
        with pytest.raises(HttpError) as e:
            request_target(b"/x", host, names)
        assert e.value.status == 421


def test_aliases_come_from_the_config() -> None:
    from proxyd.config import parse_config
    from services.http.service import HttpService
    from tests.support import base_config

    cfg = parse_config(base_config(proxy={"aliases": ["portal.example", "192.0.2.10"]},
                                   services={"web": {"mode": "web_and_rest", "port": 8443}}))
    view = HttpService.view(cfg)
    assert view is not None and view.names is not None and view.names.serves("portal.example")
