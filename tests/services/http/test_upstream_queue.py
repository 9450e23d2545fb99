"""The per-backend slots and their queue (services/http/upstream.py Pools), without sockets."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.http.upstream import Pools

KEY = ("http", "127.0.0.1", 8080)


def test_slots_then_queue_then_full_and_a_freed_slot_goes_to_the_oldest_waiter() -> None:
    pools = Pools(per_backend=2, queue=2)
    assert [pools.acquire(KEY, w) for w in "abcde"] == ["slot", "slot", "queued", "queued", "full"]
    assert pools.saturated == 1 and pools.queued == 2 and pools.waiting_count == 2
    assert pools.hand_over(KEY) == "c"  # the slot passes on: in flight stays 2
    assert pools.inflight[KEY] == 2
    pools.leave_queue(KEY, "d")  # gave up (closed, timed out)
    assert pools.hand_over(KEY) is None and pools.inflight[KEY] == 1 and KEY not in pools.waiting


@given(st.lists(st.tuples(st.sampled_from(["acquire", "free", "leave"]), st.integers(0, 9)), max_size=80),
       st.integers(1, 3), st.integers(0, 3))
def test_in_flight_never_exceeds_the_limit_and_every_exit_gives_back(ops: list[tuple[str, int]], limit: int,
                                                                      queue: int) -> None:
    pools = Pools(per_backend=limit, queue=queue)
    holding: set[int] = set()
    waiting: list[int] = []
    for op, w in ops:
        if op == "acquire" and w not in holding and w not in waiting:
            got = pools.acquire(KEY, w)
            if got == "slot":
                holding.add(w)
            elif got == "queued":
                waiting.append(w)
            else:
                assert len(holding) == limit and len(waiting) == queue
        elif op == "free" and w in holding:
            holding.discard(w)
            nxt = pools.hand_over(KEY)
            assert nxt == (waiting.pop(0) if waiting else None)  # first come, first served
            if nxt is not None:
                holding.add(nxt)
        elif op == "leave" and w in waiting:
            waiting.remove(w)
            pools.leave_queue(KEY, w)
        assert pools.inflight[KEY] == len(holding) <= limit
        assert pools.waiting_count == len(waiting) <= queue
    while holding:  # every exchange ends: the queue drains through the slots, then the slots are free
        holding.pop()
        nxt = pools.hand_over(KEY)
        if nxt is not None:
            waiting.remove(nxt)
            holding.add(nxt)
    assert pools.inflight[KEY] == 0 and pools.waiting_count == 0 and not waiting
