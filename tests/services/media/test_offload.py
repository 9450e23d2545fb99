"""The session core's offload decisions (sans-IO): what the kernel may forward, and when it stops."""

from __future__ import annotations

import logging

from services.media.ports import PortPool
from services.media.session import MediaView, Offload, Sessions, Unoffload
from services.media_api import Side
from tests.services.media.test_media import offer_sdp

PHONE, PBX = "10.1.0.2", "10.2.0.2"
BASE = 40000


def core(streams_per_source: int = 64) -> Sessions:
    view = MediaView("rtp", BASE, BASE + 99, 60, "0.0.0.0", None, max_streams_per_source=streams_per_source,
                     instance_hosts=frozenset({PBX}))
    return Sessions(view, PortPool(BASE, BASE + 99), log=logging.getLogger("test"))


def call(c: Sessions, cid: str, phone_port: int = 4000) -> tuple[int, int]:
    c.offer(cid, offer_sdp(PHONE, phone_port), side=Side.PHONE, source_ip=PHONE, relay_ip="10.2.0.1", now=0)
    c.answer(cid, offer_sdp(PBX, 5000), side=Side.INSTANCE, source_ip=PBX, relay_ip="10.1.0.1", now=0)
    st = c.calls[cid].streams[0]
    return st.phone, st.instance


def test_both_legs_latched_offloads_both_directions_to_the_latched_sources() -> None:
    c = core()
    p, i = call(c, "a")
    assert c.offloads({p: (PHONE, 4000)}, kernel=True) == []  # one side latched: userspace keeps it
    got = c.offloads({p: (PHONE, 4000), i: (PBX, 5000)}, kernel=True)
    assert got == [Offload(p, (PHONE, 4000), (PBX, 5000), i), Offload(i, (PBX, 5000), (PHONE, 4000), p)]
    assert c.offloads({p: (PHONE, 4000), i: (PBX, 5000)}, kernel=True) == []  # installed stays installed


def test_no_offload_for_a_source_userspace_would_not_accept_or_a_place_it_would_not_send_to() -> None:
    c = core()
    p, i = call(c, "a")
    for bad in ((("10.9.9.9", 4000), (PBX, 5000)),  # not where the phone's signalling came from
                ((PHONE, 4000), ("127.0.0.1", 5000)),  # loopback
                ((PHONE, 4000), ("224.0.0.1", 5000))):  # multicast
        assert c.offloads({p: bad[0], i: bad[1]}, kernel=True) == []
    assert c.offloads({p: (PHONE, 4000), i: (PBX, 5000)}, kernel=False) == []  # no kernel: nothing


def test_an_sdp_a_relatch_delete_or_the_kernel_going_away_take_the_offload_back_first() -> None:
    c = core()
    p, i = call(c, "a")
    latched = {p: (PHONE, 4000), i: (PBX, 5000)}
    c.offloads(latched, kernel=True)
    out = c.offer("a", offer_sdp(PHONE, 4002), side=Side.PHONE, source_ip=PHONE, relay_ip="10.2.0.1", now=1).actions
    assert out[:2] == [Unoffload(p), Unoffload(i)]  # before any Latch of the re-offer
    c.offloads(latched, kernel=True)
    assert c.relatched(p) == [Unoffload(p), Unoffload(i)] and c.relatched(p) == []
    c.offloads(latched, kernel=True)
    assert c.offloads({p: (PHONE, 4002), i: (PBX, 5000)}, kernel=True)[:2] == [Unoffload(p), Unoffload(i)]
    assert c.offloads({}, kernel=False) == [Unoffload(p), Unoffload(i)]
    c.offloads(latched, kernel=True)
    assert c.delete("a")[:2] == [Unoffload(p), Unoffload(i)]


def test_the_kernel_s_elements_are_bounded_by_the_stream_limits() -> None:
    c = core(streams_per_source=3)
    latched = {}
    for n in range(5):
        try:
            p, i = call(c, f"c{n}", 4000 + 2 * n)
        except Exception:  # noqa: BLE001 - the source's limit: refused, nothing held
            continue
        latched |= {p: (PHONE, 4000 + 2 * n), p + 1: (PHONE, 4001 + 2 * n), i: (PBX, 5000), i + 1: (PBX, 5001)}
    installed = [a for a in c.offloads(latched, kernel=True) if isinstance(a, Offload)]
    assert len(c.calls) == 3 and len(installed) == 3 * 4  # 2 directions x (RTP, RTCP) per stream
