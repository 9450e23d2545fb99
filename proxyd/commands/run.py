"""`proxyd run`: standalone with `--config FILE`, managed (agent) with only `--state-dir`."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proxyd import cpus, logs
from proxyd.commands import state_dir_arg
from proxyd.config import ConfigError, ProxyConfig, load_file
from proxyd.daemon import Daemon, file_source
from proxyd.events import HTTP_EVENTS_LOGGER
from proxyd.loop import run as run_loop
from proxyd.statedir import StateDir
from proxyd.supervisor import discover
from proxyd.workers import Master, become_worker, worker_services
from proxyd.workers_acme import AcmeFollower

WORKERS_ENV = "PFORTE_WORKERS"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the proxy (standalone with --config, else managed)")
    p.add_argument("--config", type=Path, help="standalone mode: a ProxyConfig JSON file")
    state_dir_arg(p)
    p.add_argument("--admin", default="127.0.0.1:9180",
                   help="loopback address:port for /status and /metrics ('off' to disable; port 0 picks one)")
    p.add_argument("--log-format", choices=("text", "json"), default="text")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--request-log", choices=("all", "refusals"), default="all",
                   help="HTTP request lines: every ended request, or only refused and failed ones (the counters "
                        "count all)")
    p.add_argument("--drain-timeout", type=float, default=10.0,
                   help="seconds established connections get to finish on SIGTERM")
    p.add_argument("--workers", default=os.environ.get(WORKERS_ENV, "auto"),
                   help=f"worker processes: 'auto' (the default; ${WORKERS_ENV} overrides it) is one per CPU this "
                        "process may use (affinity mask and cgroup quota); 1 is one process without a parent. "
                        "HTTP/TLS and XMPP listen in every worker, SIP, media and provisioning in the first "
                        "(docs/operations.md)")
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by the parent for each worker it starts
    p.add_argument("--acme-fanout", type=Path, help=argparse.SUPPRESS)  # the parent's renewer's (workers_acme.py)
    m = p.add_argument_group("managed mode (no --config)")
    m.add_argument("--heartbeat-interval", type=float, default=60.0, help="seconds between heartbeats")
    m.add_argument("--poll-wait", type=float, default=55.0, help="long-poll wait asked of the manager (max 60)")
    m.add_argument("--backoff-max", type=float, default=60.0,
                   help="upper bound in seconds for retries while the manager is unreachable")
    p.set_defaults(func=run)


def worker_count(value: str) -> tuple[int, str]:
    """(workers, why) for `--workers`; ValueError for what is neither 'auto' nor a count >= 1."""
    if value == "auto":
        n, why = cpus.available()
        return n, f"auto: {why}"
    n = int(value)
    if n < 1:
        raise ValueError(value)
    return n, f"--workers {n}" if n > 1 else "--workers 1: one process"


def parse_admin(value: str) -> tuple[str, int] | None:
    if value == "off":
        return None
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def run(args: argparse.Namespace) -> int:
    try:
        workers, why = worker_count(args.workers) if args.worker is None else (1, f"worker {args.worker} of a parent")
    except ValueError:
        print(f"--workers: 'auto' or a count of at least 1, not {args.workers!r}", file=sys.stderr)
        return 2
    state = StateDir(args.state_dir).ensure()
    logs.setup(args.log_format, args.log_level, state.logs)
    if args.request_log == "refusals":  # served requests log at info, refusals and failures at warning
        logging.getLogger(HTTP_EVENTS_LOGGER).setLevel(logging.WARNING)
    if args.config is not None:
        try:
            load_file(args.config)
        except ConfigError as exc:
            if state.load_last_good() is None:
                for problem in exc.problems:
                    print(problem, file=sys.stderr)
                return 1
        source = file_source(args.config)
    else:
        # managed mode lives in the agent package
        from proxyd.agent import state as agent_state
        from proxyd.agent.runner import AgentOptions, manager_source

        if agent_state.load(state) is None:
            print(f"{state.root} is not registered with a manager: run `proxyd register URL "
                  f"--state-dir {state.root}` first, or use --config FILE for standalone mode", file=sys.stderr)
            return 1
        source = manager_source(AgentOptions(
            heartbeat_interval=args.heartbeat_interval, poll_wait=min(args.poll_wait, 60.0),
            backoff_max=max(args.backoff_max, 1.0),
        ))
    if workers > 1:
        master = Master(state, workers, why, ["--log-format", args.log_format, "--log-level", args.log_level,
                                              "--request-log", args.request_log],
                        args.drain_timeout, parse_admin(args.admin))
        run_loop(master.serve(source))
        return 0
    classes = None
    if args.worker is not None:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # until the ACME follower handles it
        become_worker()
        classes = [c for c in discover() if c.name in worker_services(args.worker, [c.name for c in discover()])]
    worker = args.worker is not None
    daemon = Daemon(state, admin_tcp=parse_admin(args.admin), drain_timeout=args.drain_timeout, classes=classes,
                    reuse_port=worker, host_duties=not worker)
    daemon.apply_listeners.append(_settle_heap_once())
    daemon.status_hooks.append(lambda: {"worker_count": 1, "workers_why": why})
    if worker and args.acme_fanout is not None:
        follower = AcmeFollower(args.acme_fanout, daemon)
        daemon.status_hooks.append(follower.status)
        source = _following(follower, source)
    run_loop(daemon.serve(source))
    return 0


def _following(follower: AcmeFollower, source: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The config source, with the worker's ACME follower started first (its SIGUSR1 handler must
    exist before the parent sees this worker answer)."""

    async def run(daemon: Any) -> None:
        follower.start()
        await source(daemon)

    return run


def _settle_heap_once() -> Callable[[ProxyConfig | None, str | None], None]:
    """After the first applied config: take what exists then (modules, config, listeners) out of
    the cycle collector's sight (`gc.freeze`) and collect the young generation less often. The
    relays allocate a few dozen containers per message that reference counting frees; with the
    default threshold (700) the collector ran every ~15 SIP messages and full collections walked
    every start-up object. Measured under sipp at 1,500 CPS: 2.1-2.7 µs of collector time per SIP
    message before, 0.9 after, and a shorter p99 tail."""
    done = False

    def settle(cfg: ProxyConfig | None, error: str | None) -> None:
        nonlocal done
        if done or cfg is None:
            return
        done = True
        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 20, 20)

    return settle
