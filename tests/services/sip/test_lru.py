"""The bounded LRU every table the network fills is built on, and the tables built on it: a
flood of new keys evicts the least recently used one at a time, never what is in use."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.sip import scan as scan_mod
from services.sip.flow import Flow, FlowSigner
from services.sip.lru import Lru
from services.sip.reasonlog import ReasonLog
from tests.services.sip.test_proxy import _invite, make_relay

PHONE = Flow("p", "udp", "127.0.0.2", 5070)


def test_a_hit_keeps_a_key_and_a_new_key_evicts_the_least_recently_used() -> None:
    t: Lru[str, int] = Lru(3)
    for k in "abc":
        t.put(k, 1)
    assert t.hit("a") == 1  # a is now the most recent
    t.put("d", 1)
    assert list(t) == ["c", "a", "d"]  # b went, alone
    t.put("c", 2)  # an existing key: no eviction, now the most recent
    assert list(t) == ["a", "d", "c"] and t["c"] == 2
    assert t.hit("zz") is None and len(t) == 3


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 20)), max_size=200))
def test_lru_matches_a_reference_model(ops: list[tuple[bool, int]]) -> None:
    t: Lru[int, int] = Lru(5)
    model: list[int] = []  # keys, least recently used first
    for put, k in ops:
        if put:
            if k in model:
                model.remove(k)
            elif len(model) >= 5:
                model.pop(0)
            model.append(k)
            t.put(k, k)
        else:
            assert (t.hit(k) == k) == (k in model)
            if k in model:
                model.remove(k)
                model.append(k)
        assert list(t) == model


def test_a_phone_in_use_keeps_its_token_and_record_route_through_a_flood() -> None:
    """10,000 spoofed sources' SUBSCRIBEs through the relay core; the phone calls in between."""
    r = make_relay(limit=100_000)
    r.receive(_invite(), PHONE, 0.0)
    token, rr = r.signer._minted[PHONE], r._rr_uris[PHONE]
    for n in range(10_000):
        src = Flow("p", "udp", f"10.{n // 250 % 250}.{n % 250}.1", 1024 + n)
        r.receive(_invite().replace(b"INVITE", b"SUBSCRIBE").replace(b"Call-ID: ", f"Call-ID: s{n}".encode()),
                  src, 1.0 + n / 10_000)
        if n % 1000 == 0:
            r.receive(_invite().replace(b"Call-ID: ", f"Call-ID: p{n}".encode()), PHONE, 1.0 + n / 10_000)
    assert r.signer._minted[PHONE] is token and r._rr_uris[PHONE] is rr  # not made again
    assert len(r._rr_uris) == r._rr_uris.max_keys and len(r.signer._minted) <= r.signer._minted.max_keys


def test_flow_signer_caches_are_bounded_and_still_open_what_they_evicted() -> None:
    s = FlowSigner()
    s._minted.max_keys = s._opened.max_keys = 8
    first = s.mint(PHONE)
    assert s.open(first) == PHONE
    for n in range(20):
        s.open(s.mint(Flow("p", "udp", "10.0.0.1", n)))
    assert len(s._minted) == len(s._opened) == 8 and PHONE not in s._minted
    assert s.open(first) == PHONE and s.mint(PHONE) == first  # evicted is only recomputed


def test_the_python_scanners_line_cache_evicts_one_line_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scan_mod, "_seen", Lru(64))
    monkeypatch.setattr(scan_mod, "_starts", Lru(64))
    phone = _invite()
    assert scan_mod.scan_py(phone) is not None
    kept = set(scan_mod._seen)
    for n in range(200):
        assert scan_mod.scan_py(phone) is not None  # in use: every line a hit
        scan_mod.scan_py(_invite(extra=f"X-Flood: {n}\r\n").replace(b"Call-ID: ", f"Call-ID: f{n}".encode()))
    assert len(scan_mod._seen) == 64 and kept <= set(scan_mod._seen)


def test_reason_log_past_its_bound_summarises_and_forgets_the_oldest_reason(
        caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.lru.reasons")
    caplog.set_level(logging.INFO, logger=log.name)
    rl = ReasonLog(log)
    for i in range(512):
        rl.note(f"r{i}", 0.0, "drop %s", i)
    rl.note("r0", 1.0, "drop again")  # held back (within the interval), and now the most recent
    rl.note("r1", 1.0, "drop again")
    caplog.clear()
    rl.note("new", 2.0, "drop new")  # evicts r2, the least recently logged, with nothing to sum up
    assert [r.getMessage() for r in caplog.records] == ["drop new"]
    assert "r2" not in rl._seen and "r0" in rl._seen and len(rl._seen) == 512
    caplog.clear()
    for i in range(3, 513):  # evicts r3..r511, then r0 with its held-back count
        rl.note(f"n{i}", 3.0, "drop n")
    assert "event=sip_log_suppressed reason=r0 count=1 seconds=3" in [r.getMessage() for r in caplog.records]
