"""Per-source accounting: fixed memory and O(1) whatever the number of sources, blocks that a
flood cannot evict, per-prefix limits, and the failed-authentication lock-out through the relay
(real REGISTER bytes in, the PBX's real 401s back)."""

from __future__ import annotations

import logging
import time

import pytest

from services.sip.flow import Flow
from services.sip.message import parse, response
from services.sip.protect import Amplification, AuthGuard, RateLimiter, prefix_of, scanner
from services.sip.proxy import Send
from tests.services.sip.test_proxy import make_relay

PHONE = Flow("p", "udp", "127.0.0.2", 5070)
PBX = Flow("b", "udp", "127.0.0.9", 5060)


def test_a_flood_of_new_sources_costs_constant_time_and_bounded_memory() -> None:
    """main rebuilt the whole table on each new source once full: 20,000 sources past a
    10,000-entry table took 20,000 rebuilds (seconds); now each evicts one entry."""
    limiter = RateLimiter(limit=100, max_sources=10_000)
    t0 = time.perf_counter()
    for i in range(30_000):
        assert limiter.allow(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 1.0)
    assert time.perf_counter() - t0 < 1.5
    assert len(limiter._src.t) <= 10_000 and len(limiter._prefix.t) <= 10_000
    assert limiter.allow("192.0.2.1", 1.0)  # a phone arriving after the flood is not slowed or refused


def test_a_blocked_source_stays_blocked_through_a_flood_of_new_sources() -> None:
    limiter = RateLimiter(limit=5, max_sources=1_000)
    for _ in range(6):
        limiter.allow("192.0.2.66", 0.0)
    assert limiter.just_blocked and limiter.blocked_by == "source"
    for i in range(5_000):  # evicts every rate bucket, not the block
        limiter.allow(f"10.0.{i >> 8 & 255}.{i & 255}", 1.0)
    assert not limiter.allow("192.0.2.66", 2.0)
    assert limiter.allow("192.0.2.66", 31.0)  # the block is over


def test_many_sources_of_one_prefix_are_blocked_together() -> None:
    limiter = RateLimiter(limit=10, prefix_factor=4)  # 40 a second per /24
    allowed = sum(limiter.allow(f"198.51.100.{i}", 0.5) for i in range(60))  # 1 each: under the source limit
    assert allowed == 40 and limiter.blocked_by == "prefix"
    assert not limiter.allow("198.51.100.200", 0.6)  # a fresh address of that prefix
    assert limiter.allow("198.51.101.1", 0.6)  # the next /24 is another prefix
    assert prefix_of("2001:db8:1:2:3::1") == prefix_of("2001:db8:1:2:ffff::9") != prefix_of("2001:db8:1:3::1")


@pytest.mark.parametrize("ua", ["friendly-scanner", "sipvicious 0.3", "VaxSIPUserAgent/3.1", "pplsip", "sipsak 0.9"])
def test_scanner_signatures(ua: str) -> None:
    assert scanner(ua) is not None
    assert scanner("Linphone/5.2 (belle-sip/5.2)") is None


def _register(n: int, user: str = "alice", ip: str = "127.0.0.2", creds: bool = True) -> bytes:
    data = (f"REGISTER sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP {ip}:5070;branch=z9hG4bKreg{n}\r\n"
            f"From: <sip:{user}@pbx.test>;tag=r{n}\r\nTo: <sip:{user}@pbx.test>\r\nCall-ID: reg-{user}\r\n"
            f"CSeq: {n} REGISTER\r\nContact: <sip:{user}@{ip}:5070>\r\nMax-Forwards: 70\r\n"
            f"Authorization: Digest username=\"{user}\", response=\"{n:032x}\"\r\nContent-Length: 0\r\n\r\n").encode()
    return data if creds else data.replace(f"Authorization: Digest username=\"{user}\", response=\"{n:032x}\"\r\n"
                                           .encode(), b"")


def _pbx_answer(forwarded: bytes, status: int, reason: str) -> bytes:
    """The PBX's answer to what the relay forwarded (its Vias, From, To, Call-ID, CSeq copied)."""
    return response(parse(forwarded), status, reason, "pbx").serialize()


def test_brute_force_registers_are_locked_out_and_never_reach_the_pbx(caplog: pytest.LogCaptureFixture) -> None:
    """The attack of issue 20: 200 wrong-password REGISTERs for one user at 20/s. main forwarded
    all 200; now the PBX sees 10, the rest are answered 403 by the relay (and logged)."""
    caplog.set_level(logging.INFO, logger="services.sip")
    r = make_relay()
    reached_pbx = 0
    answers: list[bytes] = []
    for n in range(1, 201):
        now = n / 20
        [a] = r.receive(_register(n), PHONE, now)
        assert isinstance(a, Send)
        if a.flow == PHONE:  # answered by the relay
            answers.append(a.data)
            continue
        reached_pbx += 1
        [back] = r.receive(_pbx_answer(a.data, 401, "Unauthorized"), PBX, now)
        assert isinstance(back, Send) and back.flow == PHONE and back.data.startswith(b"SIP/2.0 401 ")
    assert reached_pbx == 10
    assert len(answers) == 190 and all(x.startswith(b"SIP/2.0 403 ") for x in answers)
    assert r.counters["auth_failures"] == 10 and r.counters["auth_lockouts"] == 1
    assert r.counters["auth_locked_out"] == 190
    assert any("event=sip_auth_lockout by=aor aor=alice@pbx.test" in m.getMessage() for m in caplog.records)
    assert any("reason=auth_locked_out_aor status=403" in m.getMessage() for m in caplog.records)
    # another user behind the same address is not locked out; the lock-out ends
    [other] = r.receive(_register(1, "bob"), PHONE, 11.0)
    assert isinstance(other, Send) and other.flow != PHONE
    [later] = r.receive(_register(300), PHONE, 10.0 + 601)
    assert isinstance(later, Send) and later.flow != PHONE


def test_a_phone_challenged_then_registered_is_never_locked_out() -> None:
    """Digest: every request is challenged once (401) and then succeeds; the challenge to a
    request without credentials is no failure, a success clears the count."""
    r = make_relay()
    for n in range(1, 60, 2):
        [a] = r.receive(_register(n, creds=False), PHONE, float(n))
        assert isinstance(a, Send) and a.flow != PHONE
        r.receive(_pbx_answer(a.data, 401, "Unauthorized"), PBX, float(n))
        [b] = r.receive(_register(n + 1), PHONE, float(n))
        assert isinstance(b, Send) and b.flow != PHONE, b.data[:40]
        r.receive(_pbx_answer(b.data, 200, "OK"), PBX, float(n))
    assert r.counters["auth_lockouts"] == 0 and r.counters["auth_failures"] == 0


def test_a_success_without_credentials_does_not_clear_the_count() -> None:
    """An OPTIONS the PBX answers 200 without authentication proves no password."""
    r = make_relay()
    for n in range(1, 10):
        [a] = r.receive(_register(n), PHONE, 1.0)
        assert isinstance(a, Send)
        r.receive(_pbx_answer(a.data, 401, "Unauthorized"), PBX, 1.0)
        [o] = r.receive(_register(100 + n, creds=False).replace(b"REGISTER", b"OPTIONS"), PHONE, 1.0)
        assert isinstance(o, Send)
        r.receive(_pbx_answer(o.data, 200, "OK"), PBX, 1.0)
    [a] = r.receive(_register(10), PHONE, 1.0)
    assert isinstance(a, Send)
    r.receive(_pbx_answer(a.data, 401, "Unauthorized"), PBX, 1.0)
    assert r.counters["auth_lockouts"] == 1


def test_one_source_guessing_many_users_is_locked_out() -> None:
    guard = AuthGuard(per_aor=10, per_source=30)
    started = [guard.failed(f"u{i}@pbx.test", "192.0.2.7", 1.0) for i in range(30)]
    assert started[-1] == "source" and started.count(None) == 29
    assert guard.locked("new@pbx.test", "192.0.2.7", 2.0) == "source"
    assert guard.locked("new@pbx.test", "192.0.2.8", 2.0) is None


def test_a_pbxs_retransmitted_challenge_reaches_a_udp_phone_once_per_request(
        caplog: pytest.LogCaptureFixture) -> None:
    """No amplification towards an unverified UDP source: one 401 per request it sent."""
    caplog.set_level(logging.INFO, logger="services.sip")
    r = make_relay()
    [a] = r.receive(_register(1), PHONE, 0.0)
    assert isinstance(a, Send)
    challenge = _pbx_answer(a.data, 401, "Unauthorized")
    to_phone = [x for _ in range(3) for x in r.receive(challenge, PBX, 0.5)]
    assert len(to_phone) == 1 and r.counters["absorbed_retransmissions"] == 2
    assert any("reason=retransmitted_challenge" in m.getMessage() for m in caplog.records)
    r.receive(_register(1), PHONE, 1.0)  # the phone lost it and sent its request again: answered again
    assert len(r.receive(challenge, PBX, 1.5)) == 1


def test_an_unverified_source_gets_at_most_three_times_what_it_sent() -> None:
    amp = Amplification()
    key = ("192.0.2.9", 5060)
    assert not amp.allow(key, 1)  # never heard of: nothing goes there
    amp.received(key, 100)
    assert amp.allow(key, 250) and amp.allow(key, 50) and not amp.allow(key, 1)
    amp.received(key, 10)
    assert amp.allow(key, 30) and not amp.allow(key, 1)
    amp.received(("192.0.2.9", 5070), 100)  # provisional responses use only 1×, the rest is kept for the final
    assert amp.allow(("192.0.2.9", 5070), 60, provisional=True) and not amp.allow(("192.0.2.9", 5070), 41, True)
    assert amp.allow(("192.0.2.9", 5070), 240) and not amp.allow(("192.0.2.9", 5070), 1)


def test_a_source_that_echoes_what_it_was_sent_is_verified() -> None:
    amp = Amplification()
    key, other = ("192.0.2.9", 5060), ("192.0.2.9", 5061)
    amp.received(key, 10)
    amp.received(other, 10)
    amp.remember(key, "ttag1")
    assert not amp.prove(key, "tguess") and not amp.prove(other, "ttag1")  # only what went to that address
    assert amp.prove(key, "ttag1") and amp.verified(key)
    assert all(amp.allow(key, 10_000) for _ in range(10))
    assert amp.counts() == (1, 1)


def test_a_flood_of_spoofed_sources_evicts_no_verified_one() -> None:
    amp = Amplification(max_unverified=100, max_verified=100)
    phone = ("192.0.2.1", 5060)
    amp.received(phone, 1)
    amp.remember(phone, "ttag")
    amp.prove(phone, "ttag")
    for i in range(10_000):
        amp.received((f"10.0.{i >> 8 & 255}.{i & 255}", 5060), 100)
    assert amp.verified(phone) and amp.counts() == (100, 1)
    assert not amp.allow(("10.0.0.0", 5060), 1)  # evicted: stricter, not looser


def _challenge(forwarded: bytes, nonce: str) -> bytes:
    resp = response(parse(forwarded), 401, "Unauthorized", "pbx")
    resp.headers.append(["WWW-Authenticate", f'Digest realm="pbx.test", nonce="{nonce}", qop="auth"'])
    return resp.serialize()


def test_the_relay_verifies_a_udp_phone_by_nonce_to_tag_or_branch() -> None:
    """Each proof the relay takes: credentials with the nonce of a challenge sent to the phone,
    an ACK/in-dialog request with the To tag of a response sent to it, its response carrying
    the branch of our Via on a PBX's request to it. Guesses and replays from elsewhere are none."""
    r = make_relay()
    [fwd] = r.receive(_register(1, creds=False), PHONE, 1.0)
    assert isinstance(fwd, Send)
    r.receive(_challenge(fwd.data, "n0nce"), PBX, 1.0)
    guess = _register(2).replace(b'response="', b'nonce="other", cnonce="n0nce", response="')
    r.receive(guess, PHONE, 1.1)
    assert not r.amp.verified(PHONE)
    r.receive(_register(3).replace(b'response="', b'nonce="n0nce", response="'), PHONE, 1.2)
    assert r.amp.verified(PHONE) and r.counters["udp_verifications"] == 1

    r = make_relay()  # the To tag of the 200 to an INVITE, echoed in the ACK
    invite = _register(1, creds=False).replace(b"REGISTER", b"INVITE")
    [fwd] = r.receive(invite, PHONE, 1.0)
    assert isinstance(fwd, Send)
    r.receive(_pbx_answer(fwd.data, 200, "OK"), PBX, 1.0)
    ack = invite.replace(b"INVITE", b"ACK").replace(b"To: <sip:alice@pbx.test>", b"To: <sip:alice@pbx.test>;tag=pbx")
    r.receive(ack, PHONE, 1.1)
    assert r.amp.verified(PHONE)

    r = make_relay()  # a PBX's request to the phone (over the Path of a registration)
    [fwd] = r.receive(_register(1, creds=False), PHONE, 1.0)
    assert isinstance(fwd, Send)
    path = parse(fwd.data).get("Path") or ""
    options = (f"OPTIONS sip:alice@127.0.0.2:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:5060;branch=z9hG4bKq1\r\n"
               f"Route: {path}\r\nFrom: <sip:pbx@pbx.test>;tag=q\r\nTo: <sip:alice@pbx.test>\r\n"
               f"Call-ID: q1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
    [to_phone] = r.receive(options, PBX, 2.0)
    assert isinstance(to_phone, Send) and to_phone.flow.side == "p"
    assert not to_phone.counted  # answers nothing the phone sent: an incoming call reaches it
    # retransmitted: dropped until the phone proves it receives
    assert r.receive(options, PBX, 2.05) == [] and r.counters["absorbed_request_retransmissions"] == 1
    forged = to_phone.data.replace(b";branch=z9hG4bKpf", b";branch=z9hG4bKpf0", 1)
    r.receive(_pbx_answer(forged, 200, "OK"), PHONE, 2.1)
    assert not r.amp.verified(PHONE)
    r.receive(_pbx_answer(to_phone.data, 200, "OK"), PHONE, 2.1)
    assert r.amp.verified(PHONE)
    [again] = r.receive(options, PBX, 2.2)
    assert isinstance(again, Send) and again.flow.side == "p"
