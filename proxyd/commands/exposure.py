"""`proxyd exposure`: what the running proxy lets through, per listener, proven by probing it.

Reads the configuration the daemon last applied (the last good config in the state dir), prints
the listing of `proxyd.exposure`, then sends its probes to the live listeners over loopback and
prints for each whether the outcome matches the config. Exit status 1 when any probe does not.
The result is kept in the state dir; while it is for the applied revision, a failing probe makes
its service Degraded in `proxyd status` with the reason."""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import sys

from proxyd.commands import state_dir_arg
from proxyd.exposure import RESULT_FILE, Probe, judge, listing, probes
from proxyd.statedir import StateDir

PROBE_TIMEOUT = 5.0
MAX_ANSWER = 65536  # the head and the start of the body are all a probe needs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("exposure", help="list what each listener exposes and probe it from outside")
    state_dir_arg(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-probe", action="store_true", help="only list, send nothing")
    p.set_defaults(func=run)


def send(probe: Probe, sni: str) -> bytes:
    """The thin runner: one connection per probe, the answer up to close (probes ask for it)."""
    li = probe.listener
    try:
        raw = socket.create_connection((li.host, li.port), timeout=PROBE_TIMEOUT)
    except OSError:
        return b""
    sock: socket.socket = raw
    try:
        if li.scheme == "https":
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # we probe routing, not the certificate
            sock = ctx.wrap_socket(raw, server_hostname=sni)
        sock.sendall(probe.request)
        out = b""
        while len(out) < MAX_ANSWER and (chunk := sock.recv(MAX_ANSWER)):
            out += chunk
        return out
    except (OSError, ssl.SSLError):
        return b""
    finally:
        sock.close()


def run(args: argparse.Namespace) -> int:
    cfg = StateDir(args.state_dir).load_last_good()
    if cfg is None:
        print(f"no applied configuration in {args.state_dir} (is proxyd running there?)", file=sys.stderr)
        return 1
    results = [] if args.no_probe else [(p, *judge(p, send(p, cfg.proxy.fqdn))) for p in probes(cfg)]
    failed = [r for r in results if not r[1]]
    if results:  # the daemon's status shows a failing self-test as Degraded (proxyd.exposure.degraded)
        record = {"revision": cfg.revision, "failed": [
            {"listener": p.listener.name, "class": p.klass, "what": p.what, "expect": list(p.expect), "got": got}
            for p, _, got in failed]}
        try:
            StateDir(args.state_dir).write_json_private(RESULT_FILE, record)
        except OSError as exc:
            print(f"could not record the result in {args.state_dir}: {exc}", file=sys.stderr)
    if args.json:
        print(json.dumps({
            "revision": cfg.revision,
            "listeners": [{"name": li.name, "reachable": li.reachable} for li in listing(cfg)],
            "probes": [{"listener": p.listener.name, "class": p.klass, "what": p.what, "expect": p.expect,
                        "got": got, "ok": ok} for p, ok, got in results],
            "failed": len(failed)}, indent=2))
        return 1 if failed else 0
    print(f"revision {cfg.revision} of {cfg.proxy.name!r} ({cfg.proxy.fqdn})")
    for li in listing(cfg):
        print(f"{li.name}")
        for line in li.reachable:
            print(f"    {line}")
        for p, ok, got in results:
            if p.listener == li:
                print(f"    {'ok  ' if ok else 'FAIL'} {p.klass:<9} {p.what}: expected {'/'.join(p.expect)}, got {got}")
    if results:
        print(f"{len(results) - len(failed)} of {len(results)} probes as configured"
              + (f"; {len(failed)} NOT" if failed else ""))
    return 1 if failed else 0
