"""A minimal stand-in for the manager's proxy API (register, config long-poll, heartbeat).

Used to test the agent's protocol handling (304, 401, unreachable, invalid revisions) on real
sockets without the Django manager; the e2e tests in tests/e2e/ use the real manager.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeManager:
    def __init__(self, port: int = 0, tls: tuple[str, str] | None = None):
        self.tls = tls  # (cert file, key file): serve https
        self.cond = threading.Condition()
        self.config: dict[str, Any] | None = None
        self.revision = 0
        self.api_keys = {"key-1"}
        self.tokens: dict[str, str] = {}  # token -> "fresh" | "used" | "expired" | "taken" (agent registered)
        self.register_paths: list[str] = []  # request paths of registrations: a token must never be in one
        self.heartbeats: list[dict[str, Any]] = []
        #: DNS-01: the TXT records the agent asked for (name -> values), and every change asked
        self.txt: dict[str, set[str]] = {}
        self.dns_changes: list[tuple[str, bool]] = []
        self.config_requests = 0
        self.parked_polls = 0  # config long-polls waiting for a newer revision right now
        self.ignore_etag = False  # misbehave: answer 200 with the same revision every time
        # misbehave: a handler writing whatever it likes as the answer to config / heartbeat requests
        self.hostile_config: Any = None
        self.hostile_heartbeat: Any = None
        self.port = port
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> FakeManager:
        handler = type("H", (_Handler,), {"mgr": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.server.daemon_threads = True
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        with self.cond:
            self.cond.notify_all()

    def publish(self, config: dict[str, Any]) -> None:
        with self.cond:
            self.config, self.revision = config, int(config["revision"])
            self.cond.notify_all()

    def wait_parked_poll(self, timeout: float = 15.0) -> None:
        """Until a config long-poll of the agent is waiting here (so a publish answers that one)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.parked_polls == 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no long-poll parked within {timeout}s")
                self.cond.wait(left)

    def wait_heartbeat(self, pred: Any, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for hb in reversed(self.heartbeats):
                    if pred(hb):
                        return hb
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching heartbeat in {timeout}s; got {self.heartbeats[-3:]}")
                self.cond.wait(left)


class _Handler(BaseHTTPRequestHandler):
    mgr: FakeManager

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet test server
        pass

    def _json(self, code: int, data: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(data).encode() if data is not None else b""
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorized(self) -> bool:
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if key not in self.mgr.api_keys:
            self._json(401, {"detail": "invalid api key"})
            return False
        return True

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path == "/api/v1/register/":  # the token in the body, as the real manager takes it
            self.mgr.register_paths.append(self.path)
            self._register(str(body.get("token", "")))
        elif self.path == "/api/v1/proxy/heartbeat" and self._authorized():
            with self.mgr.cond:
                self.mgr.heartbeats.append(body)
                self.mgr.cond.notify_all()
            if self.mgr.hostile_heartbeat is not None:
                self.mgr.hostile_heartbeat(self)
                return
            self._json(200, {"active_revision": self.mgr.revision, "interval": 60})
        elif self.path == "/api/v1/proxy/acme-dns" and self._authorized():
            name, value, present = str(body["name"]), str(body["value"]), bool(body["present"])
            with self.mgr.cond:
                values = self.mgr.txt.setdefault(f"_acme-challenge.{name}.", set())
                (values.add if present else values.discard)(value)
                self.mgr.dns_changes.append((name, present))
            self._json(200, {})

    def _register(self, token: str) -> None:
        state = self.mgr.tokens.get(token)
        if state is None:
            self._json(404, {"detail": "unknown registration"})
        elif state == "taken":
            self._json(409, {"detail": "proxy 'edge' already has a registered agent (key 7.abcdef…); an admin "
                                       "must allow re-registration on the proxy's page in the manager first"})
        elif state != "fresh":
            self._json(410, {"detail": f"registration {'already used' if state == 'used' else 'expired'}"})
        else:
            self.mgr.tokens[token] = "used"
            self._json(201, {"proxy": {"id": 7, "name": "edge"}, "api_key": "key-1", "manager_url": self.mgr.url})

    def do_GET(self) -> None:  # noqa: N802
        if not self.path.startswith("/api/v1/proxy/config") or not self._authorized():
            return
        m = re.search(r"wait=(\d+)", self.path)
        wait = min(int(m[1]) if m else 0, 60)
        self.mgr.config_requests += 1
        if self.mgr.hostile_config is not None:
            self.mgr.hostile_config(self)
            return
        seen = None if self.mgr.ignore_etag else self.headers.get("If-None-Match")
        deadline = time.monotonic() + wait
        with self.mgr.cond:
            while self.mgr.config is None or seen == f'"{self.mgr.revision}"':
                left = deadline - time.monotonic()
                if left <= 0 or self.mgr.server is None:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.mgr.parked_polls += 1
                self.mgr.cond.notify_all()
                try:
                    self.mgr.cond.wait(left)
                finally:
                    self.mgr.parked_polls -= 1
            cfg, rev = self.mgr.config, self.mgr.revision
        self._json(200, cfg, {"ETag": f'"{rev}"'})
