"""`allow_sources`: CIDRs and names, the per-address verdicts and when they are forgotten."""

from __future__ import annotations

import asyncio

import pytest

from proxyd.access import AccessList


async def test_empty_list_allows_everyone_and_counts_nothing() -> None:
    acl = AccessList()
    assert acl.open and acl.allowed("203.0.113.9", "sip")
    assert not acl.refused


async def test_cidrs_ipv4_mapped_and_garbage() -> None:
    acl = AccessList()
    await acl.update(("10.0.0.0/8", "2001:db8::/32"))
    assert acl.allowed("10.1.2.3", "sip") and acl.allowed("::ffff:10.1.2.3", "sip")
    assert acl.allowed("2001:db8::5", "web") and acl.allowed("fe80::1%eth0", "web") is False
    assert not acl.allowed("192.0.2.1", "sip") and not acl.allowed("not an address", "sip")
    assert acl.refused == {"sip": 2, "web": 1}


async def test_every_refusal_is_counted_also_when_remembered() -> None:
    acl = AccessList()
    await acl.update(("10.0.0.0/8",))
    for _ in range(3):
        assert not acl.allowed("192.0.2.1", "sip")
    assert acl.refused["sip"] == 3


async def test_a_new_list_replaces_remembered_verdicts() -> None:
    acl = AccessList()
    await acl.update(("10.0.0.0/8",))
    assert acl.allowed("10.0.0.1") and not acl.allowed("192.0.2.1")
    await acl.update(("192.0.2.0/24",))
    assert not acl.allowed("10.0.0.1") and acl.allowed("192.0.2.1")


async def test_names_resolve_and_a_changed_answer_replaces_verdicts(monkeypatch: pytest.MonkeyPatch) -> None:
    """`localhost` comes from /etc/hosts (no network). A name that moves is simulated by the
    loop's resolver answering otherwise (the system resolver cannot be pointed at a test server):
    the new answer takes effect for addresses already judged."""
    acl = AccessList()
    await acl.update(("localhost",))
    try:
        assert acl.allowed("127.0.0.1") and not acl.allowed("192.0.2.1")

        async def moved(host, port, **kw):  # type: ignore[no-untyped-def]
            return [(2, 1, 6, "", ("192.0.2.1", 0))]

        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", moved)
        await acl._resolve("localhost")
        assert acl.allowed("192.0.2.1") and not acl.allowed("127.0.0.1")
    finally:
        await acl.close()
