"""sipp phone -> pforte (SIP over UDP + media relay) -> sipp PBX, with real RTP: the phone plays
sipp's G.711 pcap, the PBX echoes it (`-rtp_echo`); both directions go through relay ports, seen
in the relay's per-stream counters in `proxyd status`."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.services.sip.sipp_support import SCENARIOS, sip_config, sipp_bg, stop
from tests.support import ProxydProcess, free_port, free_udp_range, merge

pytestmark = [pytest.mark.e2e, pytest.mark.peer]
HERE = Path(__file__).resolve().parent
PCAP = Path("/usr/share/sip-tester/g711a.pcap")
PCAP_PACKETS = 236


def media_port() -> int:
    """sipp also binds media_port + 2 (video): an even port with three free after it."""
    return free_udp_range(4)


def busy_stream(p: ProxydProcess) -> dict[str, Any] | None:
    streams = p.status()["services"]["media"].get("streams", [])
    return streams[0] if streams else None


def test_sipp_call_rtp_flows_both_ways_through_relay_ports(
        proxyd: Callable[..., ProxydProcess], tmp_path: Path) -> None:
    if not PCAP.exists():
        pytest.skip("sipp's pcap files (Debian sip-tester) are missing")
    uas_port, base = free_port(socket.SOCK_DGRAM), free_udp_range(40)
    uas = sipp_bg(["-sf", str(SCENARIOS / "pbx_uas.xml"), "-i", "127.0.0.1", "-p", str(uas_port),
                   "-mi", "127.0.0.1", "-mp", str(media_port()), "-rtp_echo", "-m", "1"],
                  tmp_path, tmp_path / "uas.log")
    uac = None
    try:
        cfg = merge(sip_config("udp", uas_port), {"services": {"media": {"mode": "rtp", "port_min": base,
                                                                         "port_max": base + 39}}})
        p = proxyd(cfg)
        port = cfg["services"]["sip"]["udp_port"]
        uac = sipp_bg(["-sf", str(HERE / "scenarios" / "call_rtp_uac.xml"), f"127.0.0.1:{port}",
                       "-i", "127.0.0.1", "-p", str(free_port(socket.SOCK_DGRAM)), "-mi", "127.0.0.1",
                       "-mp", str(media_port()), "-m", "1", "-timeout", "40s"], tmp_path, tmp_path / "uac.log")
        seen = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and uac.poll() is None:
            s = busy_stream(p)
            if s and s["rtp_phone"]["packets"] >= 50 and s["rtp_instance"]["packets"] >= 50:
                seen = s
                break
            time.sleep(0.2)
        assert seen is not None, (tmp_path / "uac.log").read_text()[-3000:]
        # both sides latched on the relay's ports in the configured range
        assert base <= seen["rtp_phone"]["port"] <= base + 39 and base <= seen["rtp_instance"]["port"] <= base + 39
        assert seen["rtp_phone"]["latched"].startswith("127.0.0.1:")
        assert seen["rtp_instance"]["latched"].startswith("127.0.0.1:")
        assert uac.wait(40) == 0, (tmp_path / "uac.log").read_text()[-3000:]
        out = (tmp_path / "uac.log").read_text()
        assert re.search(r"Successful call\s*\|\s*\d+\s*\|\s*1\b", out), out[-3000:]

        media = p.status()["services"]["media"]
        counters = media["counters"]
        # every packet of the pcap reached the PBX through the relay, and (nearly) all came back
        assert counters["packets_from_phone"] >= PCAP_PACKETS * 0.95, counters
        assert counters["packets_from_instance"] >= PCAP_PACKETS * 0.9, counters
        assert counters["bytes_from_phone"] >= counters["packets_from_phone"] * 172, counters
        assert media["gauges"]["active_streams"] == 0 and media["gauges"]["ports_in_use"] == 0
    finally:
        for proc in (uac, uas):
            if proc is not None:
                stop(proc)
