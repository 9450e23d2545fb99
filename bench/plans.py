"""How long each bench may take in `make bench` (≤ 10 min in all) and `make bench QUICK=1` (≤ 2 min)
on a 2-core machine, what it needs, and the knobs that make it fit.

A plan sets a bench's own knobs — its environment (`env`, set before the bench is imported, for
constants read at import), module constants (`attrs`) or command line (`argv`) — before its
`main()` runs, so the benches keep one code path and the budget lives
here. A knob that a bench no longer has is an error at once (see `apply`), not a silently longer
run. Where a bench does not fit a budget at all it is left out of that profile and the run says so.
"""

from __future__ import annotations

import os
import types
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Plan:
    #: bench/bench_<name>.py, or a module path for benches with another entry point
    name: str
    #: seconds it should take here; the driver stops it at 1.5x this (and says so)
    budget: float
    #: programs it needs for its anchors; the driver says up front which are missing
    needs: tuple[str, ...] = ()
    #: module constants set before main()
    attrs: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    #: main(argv) when set; main() when None
    argv: list[str] | None = None
    #: UDP sockets it holds at once at most (the driver checks the fd limit and the free ports)
    udp_sockets: int = 0
    module: str = ""

    @property
    def target(self) -> str:
        return self.module or f"bench.bench_{self.name}"


#: the budgets add up to well under the run's 600 s: each bench may take up to 1.5x its own while
#: the others keep three quarters of theirs (bench/run.py allowance)
FULL = [
    Plan("http", 100, ("nginx", "wrk", "taskset", "haproxy"),
         env={"BENCH_HTTP_DURATION": "5", "BENCH_HTTP_ROUNDS": "2"}),
    # two rates the sipp pair sustains on a busy machine: a rate it does not costs a 64-s sipp
    # timeout per try (3 tries), and the ratio rests on CPU per call, not on the highest rate
    # the bare-uvloop floor row runs by hand (`bench_sip --only ...`): it is no anchor
    Plan("sip", 110, ("sipp", "kamailio", "taskset"),
         argv=["--duration", "5", "--rates", "400,800", "--rounds", "1", "--only", "pforte,pforte+rtp,kamailio"]),
    Plan("media", 140, ("rtpengine", "cc", "taskset"), env={"BENCH_MEDIA_TRIAL": "1"}, udp_sockets=8_064 + 320),
    Plan("xmpp", 50, ("haproxy",)),
    Plan("workers", 40, ("nginx", "wrk", "taskset"), env={"BENCH_HTTP_DURATION": "5", "BENCH_WORKERS_ROUNDS": "2"}),
    Plan("http_slow", 30, ("nginx", "wrk", "taskset"), env={"BENCH_HTTP_DURATION": "5"}),
    Plan("agent", 15),
    Plan("manager", 60, attrs={"PROXIES": 1000, "RAMP": 10.0, "STEADY": 15.0, "AFTER": 10.0}),
]

QUICK = [
    Plan("http", 18, ("nginx", "wrk", "taskset", "haproxy"),
         env={"BENCH_HTTP_DURATION": "2", "BENCH_HTTP_ROUNDS": "1"}),
    # one low rate: the ratio rests on CPU per call, and a busy machine fails sipp at 1,000 CPS
    Plan("sip", 20, ("sipp", "kamailio", "taskset"),
         argv=["--duration", "2", "--rates", "300", "--rounds", "1", "--only", "pforte,pforte+rtp,kamailio"]),
    Plan("media", 45, ("rtpengine", "cc", "taskset"),
         env={"BENCH_MEDIA_TRIAL": "0.5", "BENCH_MEDIA_STREAMS": "100"}, udp_sockets=800 + 320),
    Plan("xmpp", 9, ("haproxy",), attrs={"SESSIONS": 500, "BULK_MB": 64}),
    Plan("workers", 14, ("nginx", "wrk", "taskset"), env={"BENCH_HTTP_DURATION": "2", "BENCH_WORKERS_ROUNDS": "1"}),
]

#: left out of the timed profiles, run by name (`bench/run.py sip_attack`): 1,000,000 spoofed
#: sources at 2,000/s take over 8 minutes on their own
EXTRA = [Plan("sip_attack", 600, ("unshare",), module="bench.sip_attack")]


def plans(quick: bool, names: list[str]) -> list[Plan]:
    """The plans to run: the profile's, or those named (from the profile when it has them)."""
    profile = QUICK if quick else FULL
    if not names:
        return profile
    known = {p.name: p for p in [*EXTRA, *FULL, *profile]}
    here = os.path.dirname(os.path.abspath(__file__))
    unknown = [n for n in names if n not in known and not os.path.exists(os.path.join(here, f"bench_{n}.py"))]
    if unknown:
        raise SystemExit(f"unknown bench: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return [known.get(n) or Plan(n, 600) for n in names]


def apply(plan: Plan, module: types.ModuleType) -> None:
    """Set the plan's module constants on the imported bench (its env was set before the import)."""
    for name, value in plan.attrs.items():
        if not hasattr(module, name):
            raise AttributeError(f"{module.__name__} has no {name}: bench/plans.py is out of date")
        setattr(module, name, value)
