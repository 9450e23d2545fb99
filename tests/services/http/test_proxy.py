"""The connection protocol through a real proxyd against scripted backends on raw sockets.

Each backend here is a few lines of socket code saying exactly what goes over the wire, so framing
corner cases (pipelining, chunked responses cut anywhere, HEAD, 100 Continue, a pooled connection
the backend closed, broken responses) are asserted byte for byte.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from services.http.framing import Body
from tests.support import ProxydProcess, base_config, free_port

Proxyd = Callable[..., ProxydProcess]
Handler = Callable[[socket.socket, "Backend"], None]


class Backend:
    """Accepts connections on loopback and runs `handler` for each in its own thread."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.requests: list[bytes] = []
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.settimeout(10)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self.handler(conn, self)
        except OSError:
            pass
        finally:
            conn.close()

    def read_head(self, conn: socket.socket, buf: bytearray) -> bytes | None:
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                return None
            buf += data
        end = buf.index(b"\r\n\r\n") + 4
        head = bytes(buf[:end])
        del buf[:end]
        self.requests.append(head)
        return head

    def close(self) -> None:
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def scripted() -> Iterator[Callable[[Handler], Backend]]:
    made: list[Backend] = []

    def make(handler: Handler) -> Backend:
        made.append(Backend(handler))
        return made[-1]

    yield make
    for b in made:
        b.close()


def app_proxy(proxyd: Proxyd, backend: Backend) -> tuple[ProxydProcess, int]:
    port = free_port()
    p = proxyd(base_config(applications=[{"name": "a", "port": port, "tls": False,
                                          "upstream": f"http://127.0.0.1:{backend.port}/"}]))
    return p, port


def talk(port: int, data: bytes, until: Callable[[bytes], bool], timeout: float = 10) -> tuple[socket.socket, bytes]:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    return s, read_until(s, until)


def read_until(s: socket.socket, until: Callable[[bytes], bool]) -> bytes:
    out = b""
    while not until(out):
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    return out


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def keepalive_handler(answer: Callable[[bytes], bytes]) -> Handler:
    def handler(conn: socket.socket, b: Backend) -> None:
        buf = bytearray()
        while (head := b.read_head(conn, buf)) is not None:
            conn.sendall(answer(head))
    return handler


def test_pipelined_requests_are_answered_in_order_over_one_backend_connection(proxyd: Proxyd, scripted) -> None:  # type: ignore[no-untyped-def]
    be = scripted(keepalive_handler(lambda head: ok(head.split(b" ")[1])))
    p, port = app_proxy(proxyd, be)
    reqs = b"".join(b"GET /api/r%d HTTP/1.1\r\nHost: proxy.test\r\n\r\n" % i for i in range(3))
    s, out = talk(port, reqs, lambda o: o.count(b"HTTP/1.1 200") == 3 and o.endswith(b"/r2"))
    s.close()
    assert out.count(b"HTTP/1.1 200") == 3
    assert out.index(b"/r0") < out.index(b"/r1") < out.index(b"/r2")
    assert be.connections == 1


def test_chunked_response_cut_into_single_bytes_passes_and_the_connection_is_reused(proxyd: Proxyd,
                                                                                   scripted) -> None:  # type: ignore[no-untyped-def]
    body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"

    def handler(conn: socket.socket, b: Backend) -> None:
        buf = bytearray()
        while b.read_head(conn, buf) is not None:
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(len(body)):
                conn.sendall(body[i:i + 1])
                time.sleep(0.001)

    be = scripted(handler)
    p, port = app_proxy(proxyd, be)
    s, out = talk(port, b"GET /api/a HTTP/1.1\r\nHost: proxy.test\r\n\r\n",
                  lambda o: o.endswith(b"\r\n\r\n") and b"0\r\n" in o)
    assert out.endswith(body)
    s.sendall(b"GET /api/b HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
    again = read_until(s, lambda o: o.endswith(body))
    s.close()
    assert again.startswith(b"HTTP/1.1 200") and again.endswith(body)
    assert be.connections == 1


def test_head_response_has_no_body_even_with_a_content_length(proxyd: Proxyd, scripted) -> None:  # type: ignore[no-untyped-def]
    def answer(head: bytes) -> bytes:
        if head.startswith(b"HEAD"):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
        return ok(b"after")

    be = scripted(keepalive_handler(answer))
    p, port = app_proxy(proxyd, be)
    s, out = talk(port, b"HEAD /api/a HTTP/1.1\r\nHost: proxy.test\r\n\r\n", lambda o: o.endswith(b"\r\n\r\n"))
    assert b"Content-Length: 1000" in out
    s.sendall(b"GET /api/b HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
    assert read_until(s, lambda o: o.endswith(b"after")).endswith(b"after")
    s.close()


def test_expect_100_continue_is_relayed(proxyd: Proxyd, scripted) -> None:  # type: ignore[no-untyped-def]
    def handler(conn: socket.socket, b: Backend) -> None:
        buf = bytearray()
        head = b.read_head(conn, buf)
        assert head is not None and b"expect: 100-continue" in head.lower()
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        while len(buf) < 4:
            buf += conn.recv(100)
        conn.sendall(ok(bytes(buf)))

    be = scripted(handler)
    p, port = app_proxy(proxyd, be)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"PUT /api/a HTTP/1.1\r\nHost: proxy.test\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
    assert read_until(s, lambda o: o.endswith(b"\r\n\r\n")).startswith(b"HTTP/1.1 100 Continue")
    s.sendall(b"data")
    assert read_until(s, lambda o: o.endswith(b"data")).startswith(b"HTTP/1.1 200")
    s.close()


def test_a_pooled_connection_the_backend_closed_is_retried_transparently(proxyd: Proxyd,
                                                                       scripted) -> None:  # type: ignore[no-untyped-def]
    def handler(conn: socket.socket, b: Backend) -> None:  # answers once, then drops the idle connection
        buf = bytearray()
        if b.read_head(conn, buf) is not None:
            conn.sendall(ok(b"one"))
            time.sleep(0.2)

    be = scripted(handler)
    p, port = app_proxy(proxyd, be)
    s, out = talk(port, b"GET /api/a HTTP/1.1\r\nHost: proxy.test\r\n\r\n", lambda o: o.endswith(b"one"))
    time.sleep(0.6)
    s.sendall(b"GET /api/b HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
    assert read_until(s, lambda o: o.endswith(b"one")).startswith(b"HTTP/1.1 200")
    s.close()
    assert be.connections == 2
    assert p.status()["services"]["http"]["counters"].get("upstream_errors", 0) == 0


def test_hop_by_hop_response_fields_are_dropped(proxyd: Proxyd, scripted) -> None:  # type: ignore[no-untyped-def]
    extra = b"Connection: keep-alive, X-Private\r\nKeep-Alive: timeout=5\r\nX-Keep-Alive-Ok: yes\r\n"
    be = scripted(keepalive_handler(lambda head: ok(b"x", extra)))
    p, port = app_proxy(proxyd, be)
    s, out = talk(port, b"GET /api/a HTTP/1.1\r\nHost: proxy.test\r\n\r\n", lambda o: o.endswith(b"\r\n\r\nx"))
    s.close()
    head = out.split(b"\r\n\r\n")[0].lower()
    assert b"\r\nconnection:" not in head and b"\r\nkeep-alive:" not in head
    assert b"\r\nx-keep-alive-ok: yes" in head


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
])
def test_a_broken_response_is_a_502(proxyd: Proxyd, scripted, answer: bytes) -> None:  # type: ignore[no-untyped-def]
    be = scripted(keepalive_handler(lambda head: answer))
    p, port = app_proxy(proxyd, be)
    s, out = talk(port, b"GET /api/a HTTP/1.1\r\nHost: proxy.test\r\n\r\n", lambda o: b"\r\n\r\n" in o)
    s.close()
    assert out.startswith(b"HTTP/1.1 502 ")


def test_a_response_cut_short_closes_the_client_connection(proxyd: Proxyd, scripted) -> None:  # type: ignore[no-untyped-def]
    def handler(conn: socket.socket, b: Backend) -> None:
        if b.read_head(conn, bytearray()) is not None:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part")

    be = scripted(handler)
    p, port = app_proxy(proxyd, be)
    s, out = talk(port, b"GET /api/a HTTP/1.1\r\nHost: proxy.test\r\n\r\n", lambda o: False)  # reads until closed
    s.close()
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"only-part")


def test_response_until_close_is_passed_and_ends_the_client_connection(proxyd: Proxyd,
                                                                      scripted) -> None:  # type: ignore[no-untyped-def]
    def handler(conn: socket.socket, b: Backend) -> None:
        if b.read_head(conn, bytearray()) is not None:
            conn.sendall(b"HTTP/1.1 200 OK\r\n\r\nstream until EOF")

    be = scripted(handler)
    p, port = app_proxy(proxyd, be)
    s, out = talk(port, b"GET /api/a HTTP/1.1\r\nHost: proxy.test\r\n\r\n", lambda o: False)
    s.close()
    assert out.endswith(b"stream until EOF")
    assert b"Connection: close" in out.split(b"\r\n\r\n")[0]


def test_thousands_of_pipelined_requests_answered_locally_in_one_read(proxyd: Proxyd, scripted) -> None:  # type: ignore[no-untyped-def]
    """Refusals answered by the proxy itself (404 outside the prefix) for a flood of pipelined
    requests: every one answered in order, the connection and the proxy keep working."""
    be = scripted(keepalive_handler(lambda head: ok(b"fine")))
    p, port = app_proxy(proxyd, be)
    n = 3000
    flood = b"GET /nope HTTP/1.1\r\nHost: proxy.test\r\n\r\n" * n + b"GET /api/ok HTTP/1.1\r\nHost: proxy.test\r\n\r\n"
    s, out = talk(port, flood, lambda o: o.endswith(b"fine"), timeout=30)
    s.close()
    assert out.count(b"HTTP/1.1 404 ") == n and out.endswith(b"fine")
    assert p.status()["services"]["http"]["counters"]["refused_404"] == n


def test_a_slow_backend_is_a_504_after_upstream_timeout_and_others_keep_answering(proxyd: Proxyd, scripted) -> None:  # type: ignore[no-untyped-def]
    release = threading.Event()

    def silent(conn: socket.socket, b: Backend) -> None:
        if b.read_head(conn, bytearray()) is not None:
            release.wait(20)  # accepts and reads the request, never answers

    slow = scripted(silent)
    fast = scripted(keepalive_handler(lambda head: ok(b"fast")))
    slow_port, fast_port = free_port(), free_port()
    p = proxyd(base_config(
        applications=[{"name": "slow", "port": slow_port, "tls": False, "upstream": f"http://127.0.0.1:{slow.port}/"},
                      {"name": "fast", "port": fast_port, "tls": False, "upstream": f"http://127.0.0.1:{fast.port}/"}],
        services={"web": {"mode": "off", "upstream_timeout": 1.5}}))
    try:
        started = time.monotonic()
        waiting = socket.create_connection(("127.0.0.1", slow_port), timeout=10)
        waiting.sendall(b"GET /api/wait HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
        for _ in range(5):  # meanwhile the other application answers
            s, out = talk(fast_port, b"GET /api/x HTTP/1.1\r\nHost: proxy.test\r\n\r\n", lambda o: o.endswith(b"fast"))
            s.close()
            assert out.startswith(b"HTTP/1.1 200 ")
        waiting.setblocking(False)
        with pytest.raises(BlockingIOError):
            waiting.recv(1)  # ... while the slow one is still waiting
        waiting.setblocking(True)
        out = read_until(waiting, lambda o: b"\r\n\r\n" in o)
        waited = time.monotonic() - started
        waiting.close()
        assert out.startswith(b"HTTP/1.1 504 ")
        assert 1.5 <= waited < 4.0  # never before the deadline; the sweeper looks every 0.5 s
        assert p.status()["services"]["http"]["counters"]["upstream_errors"] == 1
    finally:
        release.set()


def drip(s: socket.socket, data: bytes) -> None:
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(len(data)):
        s.sendall(data[i:i + 1])
        time.sleep(0.002)  # one byte per segment, so the proxy reads them one at a time


def test_a_request_dripped_byte_by_byte_reaches_the_backend_whole_and_reframed(proxyd: Proxyd,
                                                                              scripted) -> None:  # type: ignore[no-untyped-def]
    bodies: list[bytes] = []

    def handler(conn: socket.socket, b: Backend) -> None:
        buf = bytearray()
        if b.read_head(conn, buf) is None:
            return
        while not buf.endswith(b"0\r\n\r\n"):
            buf += conn.recv(65536)
        bodies.append(bytes(buf))
        conn.sendall(ok(b"done"))

    be = scripted(handler)
    p, port = app_proxy(proxyd, be)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    drip(s, b"POST /api/x HTTP/1.1\r\nHost: proxy.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n3\r\n ok\r\n0\r\nX-T: 1\r\n\r\n")
    out = read_until(s, lambda o: o.endswith(b"done"))
    s.close()
    assert out.startswith(b"HTTP/1.1 200") and len(bodies) == 1
    # re-framed as it arrived (a chunk per read), without the extension and the trailer
    reader, spans = Body(0, True), []
    assert reader.feed(bodies[0], spans) == len(bodies[0]) and reader.done
    assert b"".join(bodies[0][a:e] for a, e in spans) == b"hello ok"
    assert b"ext" not in bodies[0] and b"X-T" not in bodies[0]
    assert b"transfer-encoding: chunked" in be.requests[0].lower()


def test_a_bare_lf_in_a_dripped_head_is_refused_at_once_not_at_the_head_deadline(proxyd: Proxyd,
                                                                               scripted) -> None:  # type: ignore[no-untyped-def]
    be = scripted(keepalive_handler(lambda head: ok(b"never")))
    p, port = app_proxy(proxyd, be)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    started = time.monotonic()
    drip(s, b"GET /api/x HTTP/1.1\r\nHost: proxy.test\nX")
    out = read_until(s, lambda o: o.endswith(b"\n\n") or b"400 Bad Request\n" in o)
    s.close()
    assert out.startswith(b"HTTP/1.1 400") and time.monotonic() - started < 5  # the head deadline is 10 s
    assert be.connections == 0
