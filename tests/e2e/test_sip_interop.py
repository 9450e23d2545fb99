"""The SIP row of the interop matrix: real softphones (baresip 1.0, linphonec 5.1) registered at a
real kamailio 5.6 (registrar + record-route) through a running proxyd, calling each other.

Both phones sit behind pforte, so every call spirals: phone -> pforte -> kamailio -> pforte ->
phone (RFC 3261 §16.3 item 4: the request comes back with a changed Request-URI, not a loop).
Two layouts: kamailio on another loopback address, and "all-in-one" with kamailio on the
proxy's own address (other port), where only host *and* port tell its Record-Route from ours.
Media comes from tone files; RTP is counted in the relay's streams in `proxyd status`, and each
baresip's own RTP stats say it heard the other phone (and only it).

Scenarios: register; call and BYE from either side in both layouts; linphonec calling (with
hold/resume) and called; CANCEL; phones over TCP and TLS; a phone registered at kamailio directly
calling and called; SRTP phones, relayed opaque and bridged to an `rtp_only` PBX. Every call
ends with the relay's ports back where they started."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.softphones import DOMAIN, Baresip, Kamailio, Linphone
from tests.support import ProxydProcess, base_config, free_port, free_tcp_udp_port, free_udp_range, require_peer

pytestmark = [pytest.mark.e2e, pytest.mark.peer]
#: a relay stream counts as flowing once this many RTP packets went each way (20 ms ptime: 1 s)
FLOWING = 50
#: where kamailio listens: another loopback address (A), or the proxy's own (B, all-in-one)
LAYOUTS = {"separate": "127.0.0.2", "all-in-one": "127.0.0.1"}


@dataclass
class Site:
    proxyd: ProxydProcess
    kamailio: Kamailio
    phone_side: tuple[str, int]  # where phones send to

    def media(self) -> dict[str, Any]:
        return dict(self.proxyd.status()["services"]["media"])

    def diagnostics(self) -> str:
        return f"--- proxyd\n{self.proxyd.output()[-4000:]}\n--- kamailio\n{self.kamailio.log()[-4000:]}"


@pytest.fixture
def site(proxyd: Callable[..., ProxydProcess], tmp_path: Path) -> Iterator[Callable[..., Site]]:
    """`site(layout, mode, media, rtp_only)`: kamailio for pbx.test plus a proxyd (SIP `mode`,
    media relay `media`) whose instance points at it; kamailio is stopped at teardown."""
    started: list[Kamailio] = []

    def make(layout: str = "separate", mode: str = "udp", media: str = "rtp", rtp_only: bool = False,
             media_sources: tuple[str, ...] = ()) -> Site:
        require_peer("kamailio")
        host = LAYOUTS[layout]
        kport = free_tcp_udp_port(host)
        kam = Kamailio(tmp_path, host, kport)
        started.append(kam)
        kam.start()
        base = free_udp_range(40)
        sip = {"mode": mode, "udp_port": free_tcp_udp_port(), "tls_port": free_port()}
        cfg = base_config(
            instances=[{"name": "pbx", "sip": f"udp:{host}:{kport}", "sip_domains": [DOMAIN], "rtp_only": rtp_only,
                        "media_sources": list(media_sources)}],
            services={"sip": sip, "media": {"mode": media, "port_min": base, "port_max": base + 39}})
        p = proxyd(cfg)
        return Site(p, kam, ("127.0.0.1", sip["tls_port"] if mode == "tls" else sip["udp_port"]))

    yield make
    for kam in started:
        kam.stop()


@contextlib.contextmanager
def phones(*phones: Baresip | Linphone) -> Iterator[None]:
    try:
        for ph in phones:
            ph.start()
        yield
    finally:
        for ph in phones:
            ph.stop()


def wait_flowing(s: Site, since: list[dict[str, Any]] | None = None, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The relay's streams once there is one and each carries RTP both ways (FLOWING packets more
    than in `since`, an earlier look at the same streams). A spiralled call may take one stream
    (media anchored on one pass) or one per pass: either way every stream must flow."""
    base = {(st["call_id"], k): st[k]["packets"] for st in since or [] for k in ("rtp_phone", "rtp_instance")}
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        seen = s.media().get("streams", [])
        if seen and all(st[k]["packets"] >= base.get((st["call_id"], k), 0) + FLOWING
                        for st in seen for k in ("rtp_phone", "rtp_instance")):
            return seen
        time.sleep(0.2)
    raise AssertionError(f"RTP not flowing both ways in the relay's streams: {seen}\n{s.diagnostics()}")


def assert_relayed(streams: list[dict[str, Any]]) -> None:
    """Each side latched on a peer, never on one of the relay's own ports: a relay port that
    latches onto another port of the same stream sends the phone its own audio back."""
    for st in streams:
        own = {f"127.0.0.1:{st[k]['port']}" for k in ("rtp_phone", "rtp_instance")}
        for k in ("rtp_phone", "rtp_instance"):
            assert st[k]["latched"] not in own, streams


def wait_idle(s: Site, start: dict[str, Any], timeout: float = 8.0) -> None:
    """Media released: no stream left and the port gauges back where they started."""
    deadline = time.monotonic() + timeout
    gauges: dict[str, Any] = {}
    while time.monotonic() < deadline:
        gauges = s.media()["gauges"]
        if gauges["active_streams"] == 0 and gauges["ports_in_use"] == start["ports_in_use"] \
                and gauges["ports_available"] == start["ports_available"]:
            return
        time.sleep(0.2)
    raise AssertionError(f"media not released: {gauges} (start {start})\n{s.diagnostics()}")


def heard(ph: Baresip, calls: int = 1, timeout: float = 5.0) -> None:
    """The phone's own account of its `calls`-th call (baresip prints RTP stats when a call ends):
    it received and decoded RTP, and from one stream only, not its own audio mixed in (it logs
    every SSRC switch)."""
    deadline = time.monotonic() + timeout
    stats: list[tuple[str, str]] = []
    while time.monotonic() < deadline:
        stats = re.findall(r"^packets:\s+(\d+)\s+(\d+)", ph.full_log(), re.M)
        if len(stats) >= calls:
            break
        time.sleep(0.1)
    assert len(stats) >= calls, f"{ph.user}: no RTP stats for call {calls}\n{ph.log()}"
    assert int(stats[calls - 1][1]) >= FLOWING // 2, f"{ph.user} received {stats[calls - 1][1]} packets\n{ph.log()}"
    assert "SSRC changed" not in ph.full_log(), ph.log()


def ring(a: Baresip, b: Baresip, timeout: float = 10.0, after: tuple[int, int] = (0, 0)) -> None:
    """b rings; a call that a ends first (an error response) fails with what a was told.
    `after`: events of a and b before this call (earlier calls' events) are not looked at."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.get("type") == "CALL_INCOMING" for e in b.events[after[1]:]):
            return
        closed = [e for e in a.events[after[0]:] if e.get("type") == "CALL_CLOSED"]
        if closed:
            raise AssertionError(f"{a.user}'s call to {b.aor} ended before ringing: {closed[0].get('param')}")
        time.sleep(0.05)
    raise AssertionError(f"{b.aor} did not ring in {timeout}s")


def baresip_call(s: Site, a: Baresip, b: Baresip, *, bye_from: Baresip) -> list[dict[str, Any]]:
    """a calls b, b answers, RTP both ways through the relay, `bye_from` hangs up; the relay's
    streams as they were during the call."""
    start = s.media()["gauges"]
    a.wait_registered()
    b.wait_registered()
    mark = {a: len(a.events), b: len(b.events)}
    a.calls, b.calls = a.calls + 1, b.calls + 1
    a.command("dial", b.aor)
    try:
        ring(a, b, after=(mark[a], mark[b]))
        b.command("accept")
        a.wait_event("CALL_ESTABLISHED", after=mark[a])
        b.wait_event("CALL_ESTABLISHED", after=mark[b])
        streams = wait_flowing(s)
        assert_relayed(streams)
        other = b if bye_from is a else a
        bye_from.command("hangup")
        bye_from.wait_event("CALL_CLOSED", after=mark[bye_from])
        closed = other.wait_event("CALL_CLOSED", after=mark[other])
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- caller\n{a.log()}\n{s.diagnostics()}") from None
    # the far end saw the BYE (not a timeout, not an error response)
    assert closed.get("param") == "Connection reset by peer", closed
    wait_idle(s, start)
    heard(a, calls=a.calls)
    heard(b, calls=b.calls)
    return streams


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_baresip_calls_baresip_bye_from_caller(site: Callable[..., Site], tmp_path: Path, layout: str) -> None:
    s = site(layout)
    a, b = Baresip(tmp_path, "alice", s.phone_side), Baresip(tmp_path, "bob", s.phone_side)
    with phones(a, b):
        baresip_call(s, a, b, bye_from=a)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_baresip_calls_baresip_bye_from_callee(site: Callable[..., Site], tmp_path: Path, layout: str) -> None:
    s = site(layout)
    a, b = Baresip(tmp_path, "alice", s.phone_side), Baresip(tmp_path, "bob", s.phone_side)
    with phones(a, b):
        baresip_call(s, a, b, bye_from=b)


def test_linphone_calls_baresip_hold_resume_bye(site: Callable[..., Site], tmp_path: Path) -> None:
    """linphonec (RFC 5626 instance id in its Contact; kamailio answers with GRUUs) calls baresip,
    puts it on hold and back (re-INVITEs through both passes), and hangs up."""
    s = site("all-in-one")
    start = s.media()["gauges"]
    a, b = Linphone(tmp_path, "carol", s.phone_side), Baresip(tmp_path, "bob", s.phone_side)
    with phones(a, b):
        a.wait_registered()
        b.wait_registered()
        mark = len(a.lines)
        a.send(f"call {b.aor}")
        try:
            b.wait_event("CALL_INCOMING")
            b.command("accept")
            a.wait_line(r"Call \d+ with .* connected", after=mark)
            b.wait_event("CALL_ESTABLISHED")
            assert_relayed(wait_flowing(s))
            a.send("pause")
            a.wait_line(r"is now paused", after=mark)
            a.send("resume")
            a.wait_line(r"Media streams established", after=len(a.lines) - 1)
            assert_relayed(wait_flowing(s, since=s.media()["streams"]))  # flowing again, both ways
            a.send("terminate")
            a.wait_line(r"ended", after=mark)
            closed = b.wait_event("CALL_CLOSED")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- linphonec\n{a.log()}\n--- baresip\n{b.log()}\n{s.diagnostics()}") \
                from None
        assert closed.get("param") == "Connection reset by peer", closed
        wait_idle(s, start)
        heard(b)


def test_baresip_calls_linphone_bye_from_baresip(site: Callable[..., Site], tmp_path: Path) -> None:
    s = site("separate")
    start = s.media()["gauges"]
    a, b = Baresip(tmp_path, "alice", s.phone_side), Linphone(tmp_path, "dave", s.phone_side)
    with phones(a, b):
        a.wait_registered()
        b.wait_registered()
        mark = len(b.lines)
        a.command("dial", b.aor)
        try:
            b.wait_line(r"Receiving new incoming call", after=mark)
            b.send("answer")
            a.wait_event("CALL_ESTABLISHED")
            assert_relayed(wait_flowing(s))
            a.command("hangup")
            a.wait_event("CALL_CLOSED")
            b.wait_line(r"ended", after=mark)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- baresip\n{a.log()}\n--- linphonec\n{b.log()}\n{s.diagnostics()}") \
                from None
        wait_idle(s, start)
        heard(a)


def test_baresip_cancel_before_answer(site: Callable[..., Site], tmp_path: Path) -> None:
    """The caller gives up while the callee rings: CANCEL through both passes, nothing held."""
    s = site("all-in-one")
    start = s.media()["gauges"]
    a, b = Baresip(tmp_path, "alice", s.phone_side), Baresip(tmp_path, "bob", s.phone_side)
    with phones(a, b):
        a.wait_registered()
        b.wait_registered()
        a.command("dial", b.aor)
        try:
            ring(a, b)
            a.command("hangup")
            a.wait_event("CALL_CLOSED")
            closed = b.wait_event("CALL_CLOSED")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- caller\n{a.log()}\n--- callee\n{b.log()}\n{s.diagnostics()}") \
                from None
        assert "CANCEL" in b.log() or closed.get("param"), closed
        wait_idle(s, start)


def test_baresip_calls_baresip_over_tcp(site: Callable[..., Site], tmp_path: Path) -> None:
    """Both phones on TCP to pforte (mode udp also listens on TCP); kamailio stays on UDP."""
    s = site("separate")
    a = Baresip(tmp_path, "alice", s.phone_side, transport="tcp")
    b = Baresip(tmp_path, "bob", s.phone_side, transport="tcp")
    with phones(a, b):
        baresip_call(s, a, b, bye_from=b)


def test_baresip_calls_linphone_over_tls(site: Callable[..., Site], tmp_path: Path) -> None:
    """pforte in mode tls (its self-signed certificate; neither phone checks it here), kamailio
    on UDP behind it; linphonec answers and hangs up."""
    s = site("all-in-one", mode="tls")
    start = s.media()["gauges"]
    a = Baresip(tmp_path, "alice", s.phone_side, transport="tls")
    b = Linphone(tmp_path, "dave", s.phone_side, transport="tls")
    with phones(a, b):
        a.wait_registered()
        b.wait_registered()
        mark = len(b.lines)
        a.command("dial", b.aor)
        try:
            b.wait_line(r"Receiving new incoming call", after=mark)
            b.send("answer")
            a.wait_event("CALL_ESTABLISHED")
            assert_relayed(wait_flowing(s))
            b.send("terminate")
            b.wait_line(r"ended", after=mark)
            closed = a.wait_event("CALL_CLOSED")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- baresip\n{a.log()}\n--- linphonec\n{b.log()}\n{s.diagnostics()}") \
                from None
        assert closed.get("param") == "Connection reset by peer", closed
        wait_idle(s, start)
        heard(a)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_phone_behind_pforte_and_a_pbx_local_phone_call_each_other(site: Callable[..., Site], tmp_path: Path,
                                                                    layout: str) -> None:
    """eve is registered at kamailio directly (an office phone on the PBX's LAN): one pass
    through pforte each way, the PBX's call to alice follows the Path of her registration.
    No spiral here, so all-in-one shows defect 2 of issue #19 alone (ACK/BYE lost the PBX's Route).
    eve's media comes from her own address, not kamailio's (a proxy-only PBX relays no media): the
    instance lists her network in `media_sources`, without which the relay trusts only the PBX's."""
    s = site(layout, media_sources=("127.0.0.1/32",))
    alice = Baresip(tmp_path, "alice", s.phone_side)
    eve = Baresip(tmp_path, "eve", (s.kamailio.host, s.kamailio.port))
    with phones(alice, eve):
        baresip_call(s, alice, eve, bye_from=eve)
        baresip_call(s, eve, alice, bye_from=eve)


@pytest.mark.parametrize("rtp_only", [False, True], ids=["opaque", "bridged"])
def test_srtp_phones(site: Callable[..., Site], tmp_path: Path, rtp_only: bool) -> None:
    """Media mode srtp, both phones SDES-SRTP only. Opaque: SRTP end to end, keys never
    touched. Bridged (the PBX marked rtp_only): each pass decrypts the phone's SRTP and speaks
    plain RTP towards kamailio, and the phones still hear each other."""
    s = site("separate", media="srtp", rtp_only=rtp_only)
    a = Baresip(tmp_path, "alice", s.phone_side, mediaenc="srtp-mand")
    b = Baresip(tmp_path, "bob", s.phone_side, mediaenc="srtp-mand")
    with phones(a, b):
        streams = baresip_call(s, a, b, bye_from=a)
    assert all(st["srtp_bridged"] is rtp_only for st in streams), streams


def test_linphone_calls_linphone_over_tcp(site: Callable[..., Site], tmp_path: Path) -> None:
    """Two linphonec over TCP in the all-in-one layout: instance ids and GRUUs on both ends; the
    callee hangs up."""
    s = site("all-in-one")
    start = s.media()["gauges"]
    a = Linphone(tmp_path, "carol", s.phone_side, transport="tcp")
    b = Linphone(tmp_path, "dave", s.phone_side, transport="tcp")
    with phones(a, b):
        a.wait_registered()
        b.wait_registered()
        ma, mb = len(a.lines), len(b.lines)
        a.send(f"call {b.aor}")
        try:
            b.wait_line(r"Receiving new incoming call", after=mb)
            b.send("answer")
            a.wait_line(r"Call \d+ with .* connected", after=ma)
            assert_relayed(wait_flowing(s))
            b.send("terminate")
            b.wait_line(r"ended", after=mb)
            a.wait_line(r"ended", after=ma)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- caller\n{a.log()}\n--- callee\n{b.log()}\n{s.diagnostics()}") \
                from None
        wait_idle(s, start)


def test_baresip_callee_holds_and_resumes(site: Callable[..., Site], tmp_path: Path) -> None:
    """The called phone puts the call on hold and back (re-INVITEs from the callee through both
    passes of the spiral); media flows both ways again afterwards, then the caller hangs up."""
    s = site("separate")
    start = s.media()["gauges"]
    a, b = Baresip(tmp_path, "alice", s.phone_side), Baresip(tmp_path, "bob", s.phone_side)
    with phones(a, b):
        a.wait_registered()
        b.wait_registered()
        a.command("dial", b.aor)
        try:
            ring(a, b)
            b.command("accept")
            a.wait_event("CALL_ESTABLISHED")
            assert_relayed(wait_flowing(s))
            for cmd in ("hold", "resume"):
                mark = len(a.events)
                got = b.command(cmd)
                assert got.get("ok"), got
                a.wait_event("CALL_REMOTE_SDP", after=mark)  # bob's re-INVITE reached alice
            assert_relayed(wait_flowing(s, since=s.media()["streams"]))
            a.command("hangup")
            b.wait_event("CALL_CLOSED")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- caller\n{a.log()}\n--- callee\n{b.log()}\n{s.diagnostics()}") \
                from None
        wait_idle(s, start)
        a.calls = b.calls = 1
        heard(a)
        heard(b)
