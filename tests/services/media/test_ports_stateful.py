"""Every port a call takes comes back: random sequences of offers (too big, malformed, loop turns
between them), answers (usable or not), deletes, timeouts and reloads across several calls and
two phone addresses, against a real MediaService with real sockets on a 16-port range. After
every step the ports in use are exactly the ports of live streams (plus the bound spares, which
the gauges do not count), and after the last delete every port is free."""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from proxyd.access import AccessList
from proxyd.service import ServiceContext
from proxyd.statedir import StateDir
from proxyd.tls import CertStore
from services.media.service import MediaService, MediaView
from services.media_api import MediaError, Side
from tests.support import free_udp_range

SIZE = 16  # 8 pairs: 4 streams
CALLS = st.sampled_from(["a", "b", "c", "d", "e"])
SOURCES = st.sampled_from(["127.0.0.2", "127.0.0.3"])
#: per stream: 0 = rejected (port 0), else a port
STREAMS = st.lists(st.sampled_from([0, 4000, 4002]), min_size=0, max_size=10)


def body(ip: str, ports: list[int]) -> bytes:
    lines = ["v=0", f"o=- 1 1 IN IP4 {ip}", "s=-", f"c=IN IP4 {ip}", "t=0 0"]
    lines += [f"m=audio {p} RTP/AVP 0" for p in ports]
    return ("\r\n".join(lines) + "\r\n").encode()


class Ports(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.TemporaryDirectory()
        state = StateDir(Path(self.tmp.name)).ensure()
        self.media = MediaService(ServiceContext(state=state, certs=CertStore(state.certs), access=AccessList()))
        base = free_udp_range(SIZE)
        self.view = MediaView("rtp", base, base + SIZE - 1, 60.0, "127.0.0.1", None, setup_timeout=20.0,
                              max_streams=8, max_streams_per_source=3)
        self.loop.run_until_complete(self.media.start(self.view))
        self.clock = time.monotonic()
        self.outcomes: Counter[str] = Counter()

    def run(self, step: Callable[[], object]) -> object:
        async def in_the_loop() -> object:  # synchronous, called from the loop as the SIP relay does
            return step()

        try:
            return self.loop.run_until_complete(in_the_loop())
        except MediaError as exc:
            self.outcomes[f"refused_{exc.status}"] += 1
            return None

    @rule(call=CALLS, ports=STREAMS, source=SOURCES, phone=st.booleans())
    def offer(self, call: str, ports: list[int], source: str, phone: bool) -> None:
        side = Side.PHONE if phone else Side.INSTANCE
        self.run(lambda: self.media.offer(call, "f", body(source, ports), side=side, source_ip=source))

    @rule(call=CALLS)
    def malformed_offer(self, call: str) -> None:
        self.run(lambda: self.media.offer(call, "f", b"v=0\r\nm=audio x RTP/AVP 0\r\n", side=Side.PHONE,
                                          source_ip="127.0.0.2"))

    @rule(call=CALLS, ports=STREAMS, source=SOURCES, turns=st.integers(0, 3))
    def offer_then_loop_turns(self, call: str, ports: list[int], source: str, turns: int) -> None:
        """Sockets taken by an offer are handed to the loop behind its back: loop turns between
        steps (or none) change nothing about what is counted."""
        self.run(lambda: self.media.offer(call, "f", body(source, ports), side=Side.PHONE, source_ip=source))
        for _ in range(turns):
            self.loop.run_until_complete(asyncio.sleep(0))

    @rule(call=CALLS, ports=STREAMS, usable=st.booleans())
    def answer(self, call: str, ports: list[int], usable: bool) -> None:
        sdp = body("127.0.0.9", ports) if usable else b"not sdp at all"
        self.run(lambda: self.media.answer(call, "f", "t", sdp, side=Side.INSTANCE, source_ip="127.0.0.9"))

    @rule(call=CALLS)
    def delete(self, call: str) -> None:
        self.run(lambda: self.media.delete(call))

    @rule(seconds=st.sampled_from([1.0, 10.0, 25.0, 70.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock += seconds
        self.media.expire_idle(self.clock)

    @rule(per_source=st.integers(1, 4))
    def reload(self, per_source: int) -> None:
        self.loop.run_until_complete(self.media.reconfigure(dataclasses.replace(self.view,
                                                                                max_streams_per_source=per_source)))

    @invariant()
    def ports_in_use_are_the_ports_of_live_streams(self) -> None:
        media = self.media
        live = [leg_port for call in media.calls.values() for s in call.streams if s.legs
                for leg_port in (s.legs[0].phone_port, s.legs[0].instance_port)]
        spare = [port for port, _ in media.spare]
        assert len(set(live)) == len(live) and not set(live) & set(spare)
        assert media.ports.used == set(live) | set(spare)
        gauges = media.stats()["gauges"]
        assert gauges["ports_in_use"] == 2 * len(live)
        assert gauges["ports_available"] == SIZE - 2 * len(live)
        held: Counter[str] = Counter()
        for call in media.calls.values():
            if call.owner:
                held[call.owner] += sum(1 for s in call.streams if s.legs)
        assert held == +media.by_source

    def teardown(self) -> None:
        try:
            for call in list(self.media.calls):
                self.run(lambda call=call: self.media.delete(call))
            gauges = self.media.stats()["gauges"]
            assert gauges["ports_in_use"] == 0 and gauges["ports_available"] == SIZE and not self.media.by_source
            self.loop.run_until_complete(self.media.stop(1))
            self.loop.run_until_complete(asyncio.sleep(0))
            assert not self.media.ports.used and not self.media.spare
        finally:
            self.loop.close()
            self.tmp.cleanup()


Ports.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                                   suppress_health_check=[HealthCheck.too_slow])
test_ports_come_back = Ports.TestCase
