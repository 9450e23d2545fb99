"""The admin endpoint's health answers on a real proxyd: `/healthz` while the loop turns,
`/readyz` 200 only while the applied config runs in full, 503 with the reason otherwise (nothing
applied yet, the proxy switched off, draining on SIGTERM)."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from proxyd.admin import fetch_status
from tests.support import ProxydProcess, base_config, free_port


def ask(port: int, path: str, method: str = "GET") -> tuple[int, bytes, bytes]:
    """(status code, head, body) of one request to the admin TCP port."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: lb\r\n\r\n".encode())
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


def wait_ready(port: int, pred: Callable[[int, dict[str, Any]], bool], timeout: float = 15.0) -> dict[str, Any]:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            code, _, body = ask(port, "/readyz")
            last = (code, json.loads(body))
            if pred(*last):
                return dict(last[1])
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"/readyz never matched: {last}")


def app_config(app_port: int, upstream_port: int, **over: Any) -> dict[str, Any]:
    return base_config(applications=[{"name": "a", "port": app_port, "tls": False,
                                      "upstream": f"http://127.0.0.1:{upstream_port}/"}], **over)


def test_healthz_and_readyz_answer_200_once_the_config_runs(proxyd: Callable[..., ProxydProcess]) -> None:
    admin = free_port()
    p = proxyd(app_config(free_port(), free_port()), extra_args=("--admin", f"127.0.0.1:{admin}"))
    code, head, body = ask(admin, "/healthz")
    assert (code, json.loads(body)) == (200, {"status": "alive"})
    assert b"Cache-Control: no-store" in head
    code, _, body = ask(admin, "/readyz?probe=1")
    assert (code, json.loads(body)) == (200, {"ready": True, "revision": 1})
    code, head, body = ask(admin, "/readyz", "HEAD")  # what some balancers send
    assert code == 200 and body == b"" and b"Content-Length: " in head
    # the control socket answers the same
    code, body = fetch_status(p.state_dir / "proxyd.sock", "/readyz")
    assert (code, json.loads(body)["ready"]) == (200, True)
    assert ask(admin, "/nosuch")[0] == 404


def test_readyz_is_503_with_the_reason_until_a_config_applies(proxyd: Callable[..., ProxydProcess]) -> None:
    admin, app_port = free_port(), free_port()
    squatter = socket.create_server(("127.0.0.1", app_port))  # the application's port is taken
    try:
        p = proxyd(app_config(app_port, free_port()), wait=False, extra_args=("--admin", f"127.0.0.1:{admin}"))
        ready = wait_ready(admin, lambda code, r: code == 503 and len(r.get("reasons", [])) > 1)
        assert ready["ready"] is False and ready["revision"] is None
        assert ready["reasons"][0] == "no configuration applied yet"
        assert "last attempt failed: revision 1" in ready["reasons"][1]
        assert "is another process using this port?" in ready["reasons"][1]
        assert ask(admin, "/healthz")[0] == 200  # alive all the same: a restart would not help
    finally:
        squatter.close()
    p.reload(app_config(app_port, free_port(), revision=2))
    assert wait_ready(admin, lambda code, r: code == 200) == {"ready": True, "revision": 2}


def test_readyz_is_503_while_the_proxy_is_disabled(proxyd: Callable[..., ProxydProcess]) -> None:
    admin = free_port()
    proxyd(base_config(proxy={"enabled": False}), extra_args=("--admin", f"127.0.0.1:{admin}"))
    code, _, body = ask(admin, "/readyz")
    assert (code, json.loads(body)) == (503, {"ready": False, "revision": 1,
                                              "reasons": ["the proxy is disabled in revision 1"]})


def test_readyz_turns_503_as_soon_as_draining_starts(proxyd: Callable[..., ProxydProcess]) -> None:
    """A balancer polling /readyz takes the proxy out while established requests still finish."""
    admin, app_port = free_port(), free_port()
    backend = socket.create_server(("127.0.0.1", 0))  # accepts, never answers: a request in flight
    backend.settimeout(15)  # a request the proxy refused never arrives: fail, not hang
    client: socket.socket | None = None
    try:
        p = proxyd(app_config(app_port, backend.getsockname()[1]),
                   extra_args=("--admin", f"127.0.0.1:{admin}", "--drain-timeout", "10"))
        client = socket.create_connection(("127.0.0.1", app_port), timeout=10)
        client.sendall(b"GET /api/slow HTTP/1.1\r\nHost: proxy.test\r\n\r\n")  # the fqdn: others get 421
        conn, _ = backend.accept()
        assert p.proc is not None
        p.proc.send_signal(signal.SIGTERM)
        ready = wait_ready(admin, lambda code, r: code == 503, timeout=5)
        assert ready["reasons"] == ["stopping: established connections are draining"]
        assert ask(admin, "/healthz")[0] == 200
        assert p.proc.poll() is None  # still draining the request in flight
        conn.close()
    finally:
        backend.close()
        if client is not None:
            client.close()
