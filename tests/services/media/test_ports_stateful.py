"""Every port a call takes comes back: random sequences of offers (too big, malformed, over a
source's or an instance's limit), answers (usable or not), ports the adapter could not bind,
deletes, timeouts with and without media, reloads, and instance sides naming another call's port
(a spiral's passes linked and unlinked) across several calls, two phone addresses
and two instances, driven straight into the sans-IO session core on a 16-port pool. After every
step the ports the pool has in use are exactly the ports of live streams, the actions opened
exactly the live streams' sockets, and after the last delete every port is free."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from services.media.ports import PortPool
from services.media.session import Action, Close, Latch, MediaView, Open, Refused, Sessions
from services.media_api import MediaError, Side

SIZE = 16  # 8 pairs: 4 streams
BASE = 40000
CALLS = st.sampled_from(["a", "b", "c", "d", "e"])
SOURCES = st.sampled_from(["127.0.0.2", "127.0.0.3"])
INSTANCES = st.sampled_from(["", "10.0.0.1:5060", "10.0.0.2:5060"])
#: per stream: 0 = rejected (port 0), else a port
STREAMS = st.lists(st.sampled_from([0, 4000, 4002]), min_size=0, max_size=10)


def body(ip: str, ports: list[int]) -> bytes:
    lines = ["v=0", f"o=- 1 1 IN IP4 {ip}", "s=-", f"c=IN IP4 {ip}", "t=0 0"]
    lines += [f"m=audio {p} RTP/AVP 0" for p in ports]
    return ("\r\n".join(lines) + "\r\n").encode()


class Ports(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.view = MediaView("rtp", BASE, BASE + SIZE - 1, 60.0, "127.0.0.1", None, setup_timeout=20.0,
                              max_streams=8, max_streams_per_source=3, max_streams_per_instance=3)
        self.core = Sessions(self.view, PortPool(BASE, BASE + SIZE - 1), log=logging.getLogger("test"))
        self.now = 1000.0
        self.open: dict[int, int] = {}  # what the actions opened: phone port -> instance port
        self.latched: set[int] = set()  # streams (by phone port) whose phone sent a proven packet
        self.outcomes: Counter[str] = Counter()

    def perform(self, actions: list[Action]) -> None:
        """What the adapter does, minus the sockets: Latch only on what is open."""
        for a in actions:
            if isinstance(a, Open):
                assert a.phone not in self.open and a.instance not in self.open.values()
                self.open[a.phone] = a.instance
            elif isinstance(a, Close):
                assert self.open.pop(a.phone) == a.instance
                self.latched.discard(a.phone)
            elif isinstance(a, Latch):
                assert any(a.port in (p, p + 1, q, q + 1) for p, q in self.open.items())

    def call(self, step: str, fn: object) -> None:
        try:
            self.perform(fn().actions)  # type: ignore[operator]
        except Refused as exc:
            self.perform(exc.actions)
            self.outcomes[f"{step}_refused_{exc.status}"] += 1
        except MediaError as exc:
            self.outcomes[f"{step}_refused_{exc.status}"] += 1

    @rule(call=CALLS, ports=STREAMS, source=SOURCES, phone=st.booleans(), instance=INSTANCES)
    def offer(self, call: str, ports: list[int], source: str, phone: bool, instance: str) -> None:
        side = Side.PHONE if phone else Side.INSTANCE
        self.call("offer", lambda: self.core.offer(call, body(source, ports), side=side, source_ip=source,
                                                   relay_ip="127.0.0.1", now=self.now, instance=instance))

    @rule(call=CALLS)
    def malformed_offer(self, call: str) -> None:
        self.call("offer", lambda: self.core.offer(call, b"v=0\r\nm=audio x RTP/AVP 0\r\n", side=Side.PHONE,
                                                   source_ip="127.0.0.2", relay_ip="127.0.0.1", now=self.now))

    @rule(call=CALLS, ports=STREAMS, source=SOURCES, which=st.integers(0, 3))
    def offer_on_a_port_held_elsewhere(self, call: str, ports: list[int], source: str, which: int) -> None:
        """The adapter could not bind one of the ports drawn: it reports it, the core gives back the rest."""
        fresh = call not in self.core.calls
        self.offer(call, ports, source, True, "")
        opened = [p for s in self.core.calls[call].streams if s.phone for p in (s.phone, s.instance)] \
            if fresh and call in self.core.calls else []
        if opened:
            bad = opened[which % len(opened)]
            self.perform(self.core.unbindable(call, [bad], self.now))
            assert bad not in self.core.pool.used and call not in self.core.calls

    @rule(call=CALLS, ports=STREAMS, usable=st.booleans())
    def answer(self, call: str, ports: list[int], usable: bool) -> None:
        sdp = body("127.0.0.9", ports) if usable else b"not sdp at all"
        self.call("answer", lambda: self.core.answer(call, sdp, side=Side.INSTANCE, source_ip="127.0.0.9",
                                                     relay_ip="127.0.0.1", now=self.now))

    @rule(call=CALLS, other=CALLS, offer=st.booleans())
    def instance_names_another_calls_port(self, call: str, other: str, offer: bool) -> None:
        """A spiral: the instance side of `call` names the PBX-facing port of `other` (both ways
        round, the two are linked; deleting either unlinks the other)."""
        streams = [s for s in self.core.calls[other].streams if s.phone] if other in self.core.calls else []
        sdp = body("127.0.0.1", [streams[0].instance if streams else BASE])
        fn = self.core.offer if offer else self.core.answer
        self.call("link", lambda: fn(call, sdp, side=Side.INSTANCE, source_ip="127.0.0.9", relay_ip="127.0.0.1",
                                     now=self.now))
        event(f"passes linked: {bool(self.core.counters['spiral_passes_linked'])}")

    @rule(call=CALLS)
    def delete(self, call: str) -> None:
        self.perform(self.core.delete(call))

    @rule(call=CALLS)
    def phone_latches(self, call: str) -> None:
        if call in self.core.calls:
            self.latched.update(s.phone for s in self.core.calls[call].streams if s.phone)

    @rule(seconds=st.sampled_from([1.0, 10.0, 25.0, 70.0]), flowing=st.booleans())
    def time_passes(self, seconds: float, flowing: bool) -> None:
        self.now += seconds
        packets = int(self.now) if flowing else 0  # a stream with media counts more each time
        self.perform(self.core.expire(self.now, {p: (packets, p in self.latched) for p in self.open}))

    @rule(per_source=st.integers(1, 4), per_instance=st.integers(1, 4))
    def reload(self, per_source: int, per_instance: int) -> None:
        self.core.reconfigure(dataclasses.replace(self.view, max_streams_per_source=per_source,
                                                  max_streams_per_instance=per_instance))

    @invariant()
    def ports_in_use_are_the_ports_of_live_streams(self) -> None:
        core = self.core
        live = [p for call in core.calls.values() for s in call.streams if s.phone for p in (s.phone, s.instance)]
        assert len(set(live)) == len(live)
        assert core.pool.used == set(live) == {p for pq in self.open.items() for p in pq}
        blocked = {p for _, p in core.pool.blocked}
        assert core.pool.available == SIZE // 2 - len(live) - len(blocked)
        held: Counter[str] = Counter()
        per_instance: Counter[str] = Counter()
        for call in core.calls.values():
            n = sum(1 for s in call.streams if s.phone)
            assert n == call.held
            held[call.owner] += n if call.owner else 0
            per_instance[call.instance] += n if call.instance else 0
        assert +held == +core.by_source and +per_instance == +core.by_instance
        streams = [s for call in core.calls.values() for s in call.streams if s.phone]
        assert core.facing_instance == {s.instance: s for s in streams}
        for s in streams:  # links are mutual, between live streams, never to itself
            assert s.linked is None or (s.linked.linked is s and s.linked is not s and s.linked in streams)

    def teardown(self) -> None:
        for call in list(self.core.calls):
            self.perform(self.core.delete(call))
        self.perform(self.core.expire(self.now + 3600, {}))  # blocked ports get another try
        assert not self.core.pool.used and not self.open and not self.core.by_source and not self.core.by_instance
        assert self.core.pool.available == SIZE // 2


Ports.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_ports_come_back = Ports.TestCase
