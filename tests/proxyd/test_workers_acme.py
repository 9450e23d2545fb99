"""ACME with `proxyd run --workers 2` and a real pebble: one renewer (in the parent), one account,
the challenge in every worker before the CA validates, and the issued and the renewed certificate
served by every worker (proxyd/workers_acme.py)."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from proxyd.admin import fetch_status
from tests.proxyd.pebble import PEBBLE, Pebble, start_pebble
from tests.support import ProxydProcess, base_config, free_port

pytestmark = pytest.mark.skipif(PEBBLE is None, reason="pebble is not installed")


@pytest.fixture
def pebble_short(tmp_path: Path) -> Iterator[Pebble]:
    p = start_pebble(tmp_path / "pebble", validity=15)  # renewed at its 2/3 point: 10 s
    yield p
    p.stop()


def worker_status(px: ProxydProcess, i: int) -> dict[str, Any]:
    code, body = fetch_status(px.state_dir / "workers" / f"w{i}" / "proxyd.sock")
    assert code == 200
    return dict(json.loads(body))


def wait_for(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            if (last := check()):
                return last
        except (OSError, KeyError, ValueError, AssertionError, TypeError) as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what} (last: {last!r})")


def served(px: ProxydProcess) -> set[str]:
    """The certificate fingerprint each worker serves (one element: they agree)."""
    return {worker_status(px, i)["certificates"][0]["fingerprint"] for i in (0, 1)}


def https_serials(port: int, root: Path, n: int = 24) -> list[int]:
    """n verified HTTPS requests from n source ports (the kernel spreads them over the workers)."""
    ctx = ssl.create_default_context(cafile=str(root))
    serials = []
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            while tls.recv(4096):
                pass
            serials.append(x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number)
    return serials


def requests_per_worker(px: ProxydProcess) -> list[int]:
    return [worker_status(px, i)["services"]["http"]["counters"].get("requests", 0) for i in (0, 1)]


def account_keys(state: Path) -> list[str]:
    """Every account.key in the state dir, not following the workers' acme/ symlinks."""
    return [os.path.join(d, f) for d, _, files in os.walk(state) for f in files if f == "account.key"]


def test_http_01_two_workers_one_renewer_the_issued_and_the_renewed_certificate_in_every_worker(
        proxyd: Callable[..., ProxydProcess], pebble_short: Pebble, tmp_path: Path) -> None:
    p = pebble_short
    port = free_port()
    # a plain-HTTP application owns the HTTP-01 port: the router of every worker answers the token
    app = {"name": "legacy", "port": p.http_port, "tls": False, "public_prefix": "/api/",
           "upstream": "http://127.0.0.1:9/api/"}
    cfg = base_config(proxy={"fqdn": "localhost"}, bind="127.0.0.1", applications=[app],
                      services={"web": {"mode": "rest_only", "port": port}},
                      tls={"mode": "acme", "acme_directory": p.directory, "acme_http_port": p.http_port,
                           "acme_ca_bundle": p.tls_ca})
    px = proxyd(cfg, extra_args=("--workers", "2"), wait=False)
    px.wait_revision(1, timeout=60)
    st = wait_for(lambda: (s := px.status())["acme"]["not_after"] and s, "the first certificate issued")
    first = st["acme"]["not_after"]
    assert st["acme"]["process"] == "parent" and st["acme"]["pid"] == px.proc.pid, st["acme"]  # type: ignore[union-attr]
    assert "Pebble Intermediate" in st["acme"]["issuer"] and st["acme"]["failures"] == 0
    # the workers run no renewer; both swap to the issued pair
    assert [worker_status(px, i)["acme"] for i in (0, 1)] == [None, None]
    fp = wait_for(lambda: len(f := served(px)) == 1 and not worker_status(px, 1)["certificates"][0]["self_signed"]
                  and f, "both workers serving the issued certificate")
    root = tmp_path / "root.pem"
    root.write_text(p.root_pem())
    before = requests_per_worker(px)
    serials = https_serials(port, root)
    after = requests_per_worker(px)
    assert len(set(serials)) == 1, serials
    assert all(b > a for a, b in zip(before, after, strict=True)), (before, after)  # both workers answered
    # one account, one state dir: the workers' acme/ is the parent's
    state = px.state_dir
    assert account_keys(state) == [str(state / "acme" / "account.key")]
    assert all((state / "workers" / f"w{i}" / "acme").resolve() == (state / "acme").resolve() for i in (0, 1))
    out = px.log_path.read_text()
    assert out.count("event=acme_issued") == 1
    assert "event=acme_fanout generation=1 tokens=1 alpn=0 workers=2" in out  # the token, in both, first
    _, metrics = fetch_status(state / "proxyd.sock", "/metrics")
    assert b'\npforte_acme_renewer{process="parent"} 1.0\n' in metrics
    shown = subprocess.run([sys.executable, "-m", "proxyd", "status", "--state-dir", str(state)],
                           capture_output=True, text=True, timeout=30).stdout
    assert f"acme: localhost  renewer: parent (pid {px.proc.pid})" in shown, shown  # type: ignore[union-attr]

    # renewal at the 2/3 point: once (not once per worker), and both workers serve the new one
    st = wait_for(lambda: (s := px.status())["acme"]["not_after"] != first and s, "the renewal", timeout=40)
    wait_for(lambda: px.log_path.read_text().count("event=acme_issued") == 2, "one issuance logged", timeout=10)
    wait_for(lambda: len(f := served(px)) == 1 and f != fp, "both workers serving the renewed certificate")
    renewed = https_serials(port, root)
    assert len(set(renewed)) == 1 and renewed[0] != serials[0], (serials[0], renewed)
    assert st["acme"]["failures"] == 0


def test_tls_alpn_01_two_workers_every_https_listener_holds_the_challenge(
        proxyd: Callable[..., ProxydProcess], tmp_path: Path) -> None:
    port = free_port()
    p = start_pebble(tmp_path / "pebble", tls_port=port)
    try:
        cfg = base_config(proxy={"fqdn": "localhost"}, bind="127.0.0.1",
                          services={"web": {"mode": "rest_only", "port": port}},
                          tls={"mode": "acme", "acme_directory": p.directory, "acme_challenge": "tls-alpn-01",
                               "acme_ca_bundle": p.tls_ca})
        px = proxyd(cfg, extra_args=("--workers", "2"), wait=False)
        px.wait_revision(1, timeout=60)
        st = wait_for(lambda: (s := px.status())["acme"]["not_after"] and s, "issued over TLS-ALPN-01")
        assert st["acme"]["last_error"] is None and st["acme"]["process"] == "parent"
        wait_for(lambda: len(served(px)) == 1 and not worker_status(px, 0)["certificates"][0]["self_signed"]
                 and not worker_status(px, 1)["certificates"][0]["self_signed"], "both workers serving it")
        out = px.log_path.read_text()
        assert "event=acme_fanout generation=1 tokens=0 alpn=1 workers=2" in out
        assert "event=acme_tls_alpn_validation service=http name=localhost" in out
        assert "tokens=0 alpn=0 workers=2" in out  # the challenge released in both after the order
        root = tmp_path / "root.pem"
        root.write_text(p.root_pem())
        assert len(set(https_serials(port, root, 12))) == 1
    finally:
        p.stop()


def test_http_01_own_listener_only_in_the_parent(proxyd: Callable[..., ProxydProcess], tmp_path: Path) -> None:
    """No router listener on the HTTP-01 port: the parent binds it for the order and nothing else
    does (no SO_REUSEPORT sharing with a worker that lacks the token)."""
    p = start_pebble(tmp_path / "pebble")
    try:
        cfg = base_config(proxy={"fqdn": "localhost"}, bind="127.0.0.1",
                          tls={"mode": "acme", "acme_directory": p.directory, "acme_http_port": p.http_port,
                               "acme_ca_bundle": p.tls_ca})
        px = proxyd(cfg, extra_args=("--workers", "2"), wait=False)
        px.wait_revision(1, timeout=60)
        st = wait_for(lambda: (s := px.status())["acme"]["not_after"] and s, "issued over HTTP-01")
        assert st["acme"]["failures"] == 0
        wait_for(lambda: len(served(px)) == 1 and not worker_status(px, 1)["certificates"][0]["self_signed"],
                 "both workers serving it")
        # the order is over: nothing listens on the port any more (SO_REUSEADDR: past the
        # validation connections' TIME_WAIT, but never past a listener), and no worker ever did
        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", p.http_port))
            s.listen()
        finally:
            s.close()
        assert not any(f":{p.http_port}" in str(x) for i in (0, 1)
                       for x in worker_status(px, i)["services"]["http"].get("listeners", []))
    finally:
        p.stop()
