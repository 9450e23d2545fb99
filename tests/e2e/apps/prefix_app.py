"""A small web app for the HTTP router's prefix rule: login cookie, redirects, Refresh, WebSocket echo.

It runs either prefix-unaware (what pforte's mode `rewrite` expects: it writes its own root-
relative paths, `Path=/`, absolute URLs on the Host it was sent) or prefix-aware (mode
`forward_prefix`: it puts `X-Forwarded-Prefix` in front of every path it writes). `base` mounts
it on a sub-path of its own (an application upstream such as `http://app/base/`).

Routes, under `base`:
  GET  /            an HTML page with *relative* links (bodies are never rewritten)
  GET|POST /login   sets `sid` (HttpOnly) and answers 303 -> /home
  GET  /home        200 "hello <user>" with a valid `sid` cookie, else 401
  GET  /logout      expires the cookie, 302 -> / as an absolute URL: on the Host it was sent, or
                    (aware) on X-Forwarded-Proto/-Host/-Port
  GET  /self        302 to its own origin's /home (http://<its address>:<its port>/home)
  GET  /refresh     200 with `Refresh: 0; url=/home`
  GET  /echo        JSON: method, path, request headers
  GET  /ws          WebSocket echo (text frames come back as "echo:<text>")

In tests: `with PrefixApp(aware=False) as app: app.url`; other processes (a browser test) can run
it as `python -m tests.e2e.apps.prefix_app --port N [--aware] [--base /x]`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import secrets
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    # -- what the app believes its public URL space is ---------------------------------------------

    def prefix(self) -> str:
        """Where this app's paths start in the URLs it writes: its base, behind the announced prefix."""
        announced = (self.headers.get("X-Forwarded-Prefix") or "").rstrip("/") if self.server.aware else ""
        return announced + self.server.base

    def link(self, path: str) -> str:
        return self.prefix() + path

    # -- plumbing ----------------------------------------------------------------------------------

    def answer(self, status: int, body: bytes = b"", headers: tuple[tuple[str, str], ...] = (),
               ctype: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def cookie(self, name: str) -> str | None:
        for part in (self.headers.get("Cookie") or "").split(";"):
            k, _, v = part.strip().partition("=")
            if k == name:
                return v
        return None

    def route(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode("latin-1")) if length else {}
        url = urlsplit(self.path)
        base = self.server.base
        if not (url.path == base or url.path.startswith(base + "/")):
            return self.answer(404, b"not mine\n")
        path = url.path[len(base):] or "/"
        handler = ROUTES.get((self.command if self.command != "HEAD" else "GET", path))
        if handler is None:
            return self.answer(404, b"no such page\n")
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        handler(self, {**query, **{k: v[0] for k, v in form.items()}})

    do_GET = do_POST = do_HEAD = route  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass

    # -- pages -------------------------------------------------------------------------------------

    def index(self, q: dict[str, str]) -> None:
        body = (b"<!doctype html><title>prefix app</title><h1>prefix app</h1>"
                b'<form method="post" action="login"><input name="user" value="alice"><button>log in</button></form>'
                b'<a id="home" href="home">home</a> <a id="logout" href="logout">log out</a>')
        self.answer(200, body, ctype="text/html; charset=utf-8")

    def login(self, q: dict[str, str]) -> None:
        sid = secrets.token_hex(8)
        self.server.sessions[sid] = q.get("user", "alice")
        cookie = f"sid={sid}; Path={self.link('/')}; HttpOnly; SameSite=Lax"
        self.answer(303, b"", (("Set-Cookie", cookie), ("Location", self.link("/home"))))

    def home(self, q: dict[str, str]) -> None:
        user = self.server.sessions.get(self.cookie("sid") or "")
        if user is None:
            return self.answer(401, b"not logged in\n")
        self.answer(200, f"hello {user}\n".encode())

    def origin(self) -> str:
        """The origin the app puts in absolute URLs: the Host it was sent; aware, the forwarded one."""
        h = self.headers
        if self.server.aware and h.get("X-Forwarded-Host"):
            proto, port = h.get("X-Forwarded-Proto") or "http", h.get("X-Forwarded-Port") or ""
            default = {"http": "80", "https": "443"}.get(proto)
            return f"{proto}://{h['X-Forwarded-Host']}" + (f":{port}" if port and port != default else "")
        return f"http://{h.get('Host') or 'localhost'}"

    def logout(self, q: dict[str, str]) -> None:
        self.server.sessions.pop(self.cookie("sid") or "", None)
        expire = f"sid=; Path={self.link('/')}; Max-Age=0"
        self.answer(302, b"", (("Set-Cookie", expire), ("Location", self.origin() + self.link("/"))))

    def self_redirect(self, q: dict[str, str]) -> None:
        host, port = self.server.server_address[:2]
        self.answer(302, b"", (("Location", f"http://{host}:{port}{self.link('/home')}"),))

    def refresh(self, q: dict[str, str]) -> None:
        self.answer(200, b"moving\n", (("Refresh", f"0; url={self.link('/home')}"),))

    def echo(self, q: dict[str, str]) -> None:
        body = json.dumps({"method": self.command, "path": self.path,
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.answer(200, body, ctype="application/json")

    def websocket(self, q: dict[str, str]) -> None:
        key = self.headers.get("Sec-WebSocket-Key")
        if key is None or "websocket" not in (self.headers.get("Upgrade") or "").lower():
            return self.answer(400, b"a WebSocket upgrade is expected here\n")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()  # noqa: S324 - RFC 6455
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        while (frame := read_frame(self.rfile)) is not None:
            opcode, data = frame
            if opcode == 8:  # close: answer it and end
                self.wfile.write(encode_frame(8, data[:2]))
                return
            if opcode == 9:  # ping
                self.wfile.write(encode_frame(10, data))
            elif opcode == 1:
                self.wfile.write(encode_frame(1, b"echo:" + data))
            self.wfile.flush()


ROUTES: dict[tuple[str, str], Any] = {
    ("GET", "/"): Handler.index, ("GET", "/login"): Handler.login, ("POST", "/login"): Handler.login,
    ("GET", "/home"): Handler.home, ("GET", "/logout"): Handler.logout, ("GET", "/self"): Handler.self_redirect,
    ("GET", "/refresh"): Handler.refresh, ("GET", "/echo"): Handler.echo, ("GET", "/ws"): Handler.websocket,
}


def read_frame(rfile: Any) -> tuple[int, bytes] | None:
    """One client frame (RFC 6455 §5.2, masked, unfragmented is all a browser sends for short text)."""
    head = rfile.read(2)
    if len(head) < 2:
        return None
    opcode, n = head[0] & 0x0F, head[1] & 0x7F
    if n == 126:
        n = struct.unpack("!H", rfile.read(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", rfile.read(8))[0]
    mask = rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
    data = rfile.read(n)
    return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def encode_frame(opcode: int, data: bytes) -> bytes:
    n = len(data)
    size = bytes([n]) if n < 126 else b"\x7e" + struct.pack("!H", n) if n < 65536 else b"\x7f" + struct.pack("!Q", n)
    return bytes([0x80 | opcode]) + size + data


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], aware: bool, base: str) -> None:
        self.aware, self.base = aware, base.rstrip("/")
        self.sessions: dict[str, str] = {}
        super().__init__(addr, Handler)


class PrefixApp:
    """The app on a thread: `url` is its address (with `base`)."""

    def __init__(self, *, aware: bool = False, base: str = "", host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = Server((host, port), aware, base)
        self.port = int(self.server.server_address[1])
        self.url = f"http://{host}:{self.port}{self.server.base}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> PrefixApp:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--aware", action="store_true", help="honour X-Forwarded-Prefix (mode forward_prefix)")
    ap.add_argument("--base", default="", help="the sub-path the app is mounted on, e.g. /base")
    args = ap.parse_args()
    Server((args.host, args.port), args.aware, args.base).serve_forever()


if __name__ == "__main__":
    main()
