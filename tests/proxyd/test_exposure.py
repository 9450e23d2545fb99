"""`proxyd exposure` against a real proxyd: the listing, and every probe as the config says, with
a recording backend that fails the test if a refused probe ever reaches it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

from proxyd.admin import fetch_status
from proxyd.config import loads
from proxyd.exposure import CLOSED, FORWARDED, outcome, probes
from proxyd.statedir import StateDir
from tests.services.http.test_proxy import (
    Backend,
    keepalive_handler,
    ok,
)
from tests.support import ProxydProcess, base_config, free_port

Proxyd = Callable[..., ProxydProcess]


def config(backend: int, web_mode: str = "web_and_rest", **extra: object) -> dict:
    up = f"http://127.0.0.1:{backend}"
    return base_config(
        instances=[{"name": "inst1", "web": up + "/ui", "provisioning": up + "/prov/{MAC}"}],
        applications=[{"name": "api", "port": free_port(), "tls": False, "upstream": up + "/app",
                       "public_prefix": "/api/"}],
        services={"web": {"mode": web_mode, "port": free_port()},
                  "provisioning": {"mode": "https", "https_port": free_port(), "http_port": free_port()}},
        **extra)


def exposure(p: ProxydProcess) -> tuple[int, dict]:
    r = subprocess.run([sys.executable, "-m", "proxyd", "exposure", "--state-dir", str(p.state_dir), "--json"],
                       capture_output=True, text=True, timeout=120)
    return r.returncode, json.loads(r.stdout)


def test_every_probe_matches_the_config_and_refused_ones_never_reach_the_backend(
        proxyd: Proxyd, scripted) -> None:  # type: ignore[no-untyped-def]
    backend: Backend = scripted(keepalive_handler(lambda head: ok(b"hello")))
    p = proxyd(config(backend.port, "rest_only"))
    code, report = exposure(p)
    assert code == 0 and report["failed"] == 0, [x for x in report["probes"] if not x["ok"]]
    assert json.loads(fetch_status(StateDir(p.state_dir).control_socket)[1])["services"]["http"]["state"] == "running"
    kinds = {x["class"] for x in report["probes"]}
    assert kinds == {"allowed", "path", "authority", "override", "upgrade", "framing", "denial"}
    names = [li["name"].split(" ")[0] for li in report["listeners"]]
    assert names == ["router", "application", "provisioning"]
    assert any("rest_only" in line for line in report["listeners"][0]["reachable"])
    lines = {h.split(b"\r\n", 1)[0] for h in backend.requests}
    # only the allowed canonical forms (and the stripped h2c upgrade on them) got through
    assert lines <= {b"GET /ui/services/ HTTP/1.1", b"GET /ui/services/~ HTTP/1.1", b"GET /app/ HTTP/1.1",
                     b"GET /app/~ HTTP/1.1"}, lines
    assert all(b"upgrade" not in h.lower() and b"x-original-url" not in h.lower() for h in backend.requests)


def test_a_probe_that_does_not_match_fails_the_command(proxyd: Proxyd, scripted) -> None:  # type: ignore[no-untyped-def]
    # a backend answering exactly like the proxy's own 404: the allowed forms look refused
    backend: Backend = scripted(keepalive_handler(lambda head: b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; "
                                                  b"charset=utf-8\r\nContent-Length: 14\r\n\r\n404 Not Found\n"))
    p = proxyd(config(backend.port))
    code, report = exposure(p)
    failed = [x for x in report["probes"] if not x["ok"]]
    assert code == 1 and failed and all(x["class"] in ("allowed", "upgrade") for x in failed)
    status = json.loads(fetch_status(StateDir(p.state_dir).control_socket)[1])
    http = status["services"]["http"]
    assert http["state"] == "degraded" and "exposure self-test" in http["degraded"], http
    assert status["services"]["provisioning"]["state"] == "running"  # its denials still matched


def test_outside_the_allow_list_everything_is_closed() -> None:
    cfg = loads(json.dumps(config(9, allow_sources=["192.0.2.0/24"])).encode(), source="t")
    assert all(pr.expect == (CLOSED,) for pr in probes(cfg))
    assert outcome(b"") == CLOSED and outcome(b"HTTP/1.1 200 OK\r\n\r\n") == FORWARDED
    assert outcome(b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\n"
                   b"Content-Length: 16\r\nConnection: close\r\n\r\n502 Bad Gateway\n") == FORWARDED
