"""`proxyd status`: ask the running daemon (control socket in the state dir) how it is doing."""

from __future__ import annotations

import argparse
import json
import sys

from proxyd.admin import fetch_status
from proxyd.commands import state_dir_arg
from proxyd.statedir import StateDir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show per-service state, listeners and counters")
    state_dir_arg(p)
    p.add_argument("--json", action="store_true", help="print the raw JSON status")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    sock = StateDir(args.state_dir).control_socket
    try:
        code, body = fetch_status(sock)
    except OSError as exc:
        print(f"proxyd is not running (no answer on {sock}: {exc.strerror or exc})", file=sys.stderr)
        return 1
    status = json.loads(body)
    if args.json:
        print(json.dumps(status, indent=2))
        return 0 if code == 200 else 1
    print(render(status))
    return 0


def render(st: dict) -> str:
    lines = [
        f"proxyd {st.get('version')} ({st.get('loop')}), up {st.get('uptime')} s, proxy {st.get('proxy')!r}",
        f"revision applied: {st.get('revision')}   enabled: {st.get('enabled')}",
        f"certificate: {st.get('certificate')}",
    ]
    if st.get("manager"):
        m = st["manager"]
        lines.append(f"manager: {m.get('url')}  state: {m.get('state')}  last contact: {m.get('last_contact')}")
        if m.get("reason"):
            lines.append(f"  manager reason: {m['reason']}")
        if m.get("last_error"):
            lines.append(f"  rejected revision: {m['last_error']}")
    if st.get("last_error"):
        lines.append(f"last error: {st['last_error']}")
    if st.get("acme"):
        a = st["acme"]
        lines.append(f"acme: {','.join(a.get('names', []))}  renewer: {a.get('process')} (pid {a.get('pid')})  "
                     f"failures: {a.get('failures')}")
        if a.get("last_error"):
            lines.append(f"  acme last error: {a['last_error']}")
    if st.get("worker_count") is not None:
        lines.append(f"workers: {st['worker_count']} ({st.get('workers_why')})")
    for w in st.get("workers", []):
        lines.append(f"  worker {w['id']}: {w['state']:<8} pid {w['pid']}  revision {w['revision']}  "
                     f"restarts {w['restarts']}  {','.join(w['services']) or '-'}")
    for name, svc in st.get("services", {}).items():
        listeners = ", ".join(str(x) for x in svc.get("listeners", [])) or "-"
        lines.append(f"  {name:<13} {svc.get('state'):<8} {listeners}")
        for group in ("counters", "gauges"):
            items = svc.get(group) or {}
            if items:
                lines.append("      " + "  ".join(f"{k}={v}" for k, v in items.items()))
        if svc.get("last_error"):
            lines.append(f"      last error: {svc['last_error']}")
        if svc.get("degraded"):
            lines.append(f"      degraded: {svc['degraded']}")
    return "\n".join(lines)
