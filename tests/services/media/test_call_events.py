"""Issue #22 §4 for media: one `event=media_call_end` line per call, however it ends (released by
SIP, idle, refused answer, service stop), with what its sockets relayed each way; a re-offer that
replaces the streams is no end."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest

from services.media.service import MediaService
from services.media.session import UNANSWERED_FOR
from services.media_api import MediaError, Side
from tests.services.media.test_media import media, offer_sdp, port_of, rtp, udp  # noqa: F401 - the fixture

__all__ = ["media"]


def ends(caplog: pytest.LogCaptureFixture) -> list[dict[str, str]]:
    return [dict(re.findall(r"(\w+)=(\S+)", r.getMessage())) for r in caplog.records
            if r.getMessage().startswith("event=media_call_end ")]


async def test_a_released_call_ends_with_its_bytes(media: MediaService, caplog: pytest.LogCaptureFixture) -> None:
    phone_t, _, phone_port = await udp("127.0.0.2")
    pbx_t, pbx, pbx_port = await udp("127.0.0.3")
    with caplog.at_level(logging.INFO, logger="services.media"):
        to_pbx = media.offer("c1", "f", offer_sdp("127.0.0.2", phone_port), side=Side.PHONE, source_ip="127.0.0.2",
                             instance="pbx1")
        to_phone = media.answer("c1", "f", "t", offer_sdp("127.0.0.3", pbx_port), side=Side.INSTANCE,
                                source_ip="127.0.0.3")
        for seq in range(3):
            phone_t.sendto(rtp(b"v" * 160, seq=seq), ("127.0.0.1", port_of(to_phone)))
            await asyncio.wait_for(pbx.got.get(), 5)
        assert media.stats()["counters"]["latches"] == 1 and media.stats()["counters"]["relatches"] == 0
        # the phone's NAT rebinds: once the old source was silent, the new port of the same IP re-latches
        moved_t, _, _ = await udp("127.0.0.2")
        now = time.monotonic()
        media.expire_idle(now)
        media.expire_idle(now + 2.0)  # RELATCH_SILENCE, and not yet the fixture's 2 s idle timeout
        moved_t.sendto(rtp(b"v" * 160, seq=3), ("127.0.0.1", port_of(to_phone)))
        await asyncio.wait_for(pbx.got.get(), 5)
        moved_t.close()
        assert media.stats()["counters"]["relatches"] == 1
        media.delete("c1")
        media.delete("c1")  # idempotent: still one line
    phone_t.close()
    pbx_t.close()
    assert port_of(to_pbx)
    (end,) = ends(caplog)
    assert {k: end[k] for k in ("service", "client", "instance", "outcome", "streams", "packets_from_phone",
                                "bytes_from_phone", "packets_from_instance", "call_id")} == {
        "service": "media", "client": "127.0.0.2", "instance": "pbx1", "outcome": "released", "streams": "1",
        "packets_from_phone": "4", "bytes_from_phone": str(4 * (12 + 160)), "packets_from_instance": "0",
        "call_id": "c1"}
    assert float(end["duration"]) >= 0


async def test_idle_refused_answer_reoffer_and_stop(media: MediaService, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="services.media"):
        media.offer("idle", "f", offer_sdp("127.0.0.2", 4000), side=Side.PHONE, source_ip="127.0.0.2")
        media.offer("bad", "f", offer_sdp("127.0.0.2", 4002), side=Side.PHONE, source_ip="127.0.0.2")
        with pytest.raises(MediaError):
            media.answer("bad", "f", "t", b"v=0\r\nm=audio x RTP/AVP 0\r\n", side=Side.INSTANCE,
                         source_ip="127.0.0.3")
        media.offer("re", "f", offer_sdp("127.0.0.2", 4004), side=Side.PHONE, source_ip="127.0.0.2")
        two = offer_sdp("127.0.0.2", 4004) + b"m=video 4006 RTP/AVP 96\r\n"
        media.offer("re", "f", two, side=Side.INSTANCE, source_ip="127.0.0.3")  # other streams: same call
        media.calls["re"].since = media.calls["re"].since + 3600  # only "idle" is idle
        media.expire_idle(media.calls["idle"].since + UNANSWERED_FOR + 10)  # never answered: Timer C's hold
        await media.stop(1)
    got = {e["call_id"]: e["outcome"] for e in ends(caplog)}
    assert got == {"bad": "answer_refused", "idle": "idle_timeout", "re": "stopped"}
    assert len(ends(caplog)) == 3
