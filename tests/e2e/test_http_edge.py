"""The HTTP edge, attacked as a client would: through a real proxyd to a recording backend.

The backend records every request that reaches it. A refused request must be answered by the
proxy with its status and must never show up there; an allowed one must arrive in its canonical
form, without the fields the client is not allowed to set.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ProxydProcess, base_config, free_port


class Recorder:
    """A keep-alive HTTP/1.1 backend on loopback: records (head, body) of each request, answers 200."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.seen: list[tuple[bytes, bytes]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        conn.settimeout(30)
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                body, buf = self._body(conn, head, buf)
                with self.lock:
                    self.seen.append((head, body))
                path = head.split(b" ")[1]
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(path), path))
        except OSError:
            return
        finally:
            conn.close()

    def _body(self, conn: socket.socket, head: bytes, buf: bytes) -> tuple[bytes, bytes]:
        lines = (line.partition(b":") for line in head.split(b"\r\n")[1:])
        fields = {k.strip().lower(): v.strip() for k, _, v in lines}
        if fields.get(b"transfer-encoding") == b"chunked":
            while not buf.endswith(b"0\r\n\r\n"):
                data = conn.recv(65536)
                if not data:
                    raise OSError("body cut short")
                buf += data
            return buf, b""
        n = int(fields.get(b"content-length", b"0"))
        while len(buf) < n:
            data = conn.recv(65536)
            if not data:
                raise OSError("body cut short")
            buf += data
        return buf[:n], buf[n:]

    def take(self) -> list[tuple[bytes, bytes]]:
        with self.lock:
            out, self.seen = self.seen, []
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProxydProcess, Recorder, int, int]]:
    rec = Recorder()
    app_port = free_port()
    cfg = base_config(
        applications=[{"name": "a", "port": app_port, "tls": False, "upstream": f"http://127.0.0.1:{rec.port}/base/"}],
        instances=[{"name": "inst1", "web": f"http://127.0.0.1:{rec.port}/ui"}],
        services={"web": {"mode": "rest_only", "port": free_port()}})
    workdir = Path(tmp_path_factory.mktemp("edge"))
    p = ProxydProcess(workdir, cfg).start()
    yield p, rec, app_port, cfg["services"]["web"]["port"]
    p.stop()
    rec.close()


def exchange(port: int, data: bytes, tls: bool = False) -> bytes:
    s = socket.create_connection(("127.0.0.1", port), timeout=15)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        s = ctx.wrap_socket(s)
    s.sendall(data)
    out = b""
    try:
        while b"\r\n\r\n" not in out or len(out) < out.index(b"\r\n\r\n") + 4 + _length(out):
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except (TimeoutError, ConnectionError, ssl.SSLError):
        pass
    s.close()
    return out


def _length(out: bytes) -> int:
    for line in out[: out.index(b"\r\n\r\n")].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def get(target: bytes, host: bytes = b"proxy.test", extra: bytes = b"") -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + extra + b"Connection: close\r\n\r\n"


PATH_ATTACKS = [
    b"/api/..;/admin", b"/api/.;x/admin", b"/api/%2e%2e;/admin", b"/api/..%3B/admin", b"/api/..%3b/admin",
    b"/api/x%3Bjsessionid=1", b"/api;/x", b"/api/..\\admin", b"/api/..%5Cadmin", b"/api/%5c..%5cadmin",
    b"/api/%u002e%u002e/admin", b"/api/%c0%ae%c0%ae/admin", b"/api/%EF%BC%8E%EF%BC%8E/admin", b"/api/%ef%bc%8fadmin",
    b"/api/%EF%BC%BC..", b"/api/%EF%BC%85%32%65", b"/api/%E2%88%95admin", b"/api./x", b"/api%20/x", b"/api/x.",
    b"/api/x%20", b"/api//x", b"/api/x%00", b"/api/x%0a", b"/api/%2e%2e/admin", b"/api/a%2fb", b"/api/%252e%252e/",
]


@pytest.mark.parametrize("target", PATH_ATTACKS)
def test_path_readings_that_could_differ_are_400_and_never_reach_the_backend(edge, target: bytes) -> None:  # type: ignore[no-untyped-def]
    p, rec, app_port, _ = edge
    rec.take()
    resp = exchange(app_port, get(target))
    assert resp.startswith(b"HTTP/1.1 400 "), resp[:80]
    assert rec.take() == []


@pytest.mark.parametrize("target", [b"/API/x", b"/Api/x", b"/%41PI/x"])
def test_case_variants_of_the_prefix_are_not_the_route(edge, target: bytes) -> None:  # type: ignore[no-untyped-def]
    _, rec, app_port, _ = edge
    rec.take()
    assert exchange(app_port, get(target)).startswith(b"HTTP/1.1 404 ")
    assert rec.take() == []


@pytest.mark.parametrize(("target", "upstream"), [
    (b"/api/%7Euser/x", b"/base/~user/x"), (b"/api/%61b", b"/base/ab"), (b"/api/a%2eb", b"/base/a.b"),
    (b"/api/%c3%a4?q=%2f..", b"/base/%C3%A4?q=%2f.."), (b"/api/x/", b"/base/x/"),
])
def test_escaped_forms_of_allowed_paths_arrive_canonical(edge, target: bytes, upstream: bytes) -> None:  # type: ignore[no-untyped-def]
    _, rec, app_port, _ = edge
    rec.take()
    resp = exchange(app_port, get(target))
    assert resp.startswith(b"HTTP/1.1 200 "), resp[:80]
    [(head, _)] = rec.take()
    assert head.split(b" ")[1] == upstream


def test_instance_routes_refuse_the_same_readings(edge) -> None:  # type: ignore[no-untyped-def]
    _, rec, _, web_port = edge
    rec.take()
    for target in (b"/inst1/services/..;/admin", b"/inst1/services%2f..%2fadmin", b"/inst1/%EF%BD%93ervices/x",
                   b"/inst1/services./x", b"/inst1/services/%2e%2e/admin"):
        assert exchange(web_port, get(target), tls=True).startswith(b"HTTP/1.1 400 "), target
    for target in (b"/Inst1/services/x", b"/inst1/SERVICES/x", b"/inst1/admin"):
        assert exchange(web_port, get(target), tls=True).startswith(b"HTTP/1.1 404 "), target
    assert rec.take() == []
    assert exchange(web_port, get(b"/inst1/services/%7Ex"), tls=True).startswith(b"HTTP/1.1 200 ")
    [(head, _)] = rec.take()
    assert head.startswith(b"GET /ui/services/~x ")


RETARGETING = [b"X-Original-URL: /admin", b"X-Rewrite-URL: /admin", b"X-Override-URL: /admin",
               b"X-HTTP-Method-Override: DELETE", b"X-HTTP-Method: DELETE", b"X-Method-Override: DELETE",
               b"X-Forwarded-Host: evil.example", b"X-Forwarded-Prefix: /admin", b"X-Forwarded-Proto: http",
               b"X-Forwarded-Port: 1", b"X-Forwarded-For: 10.0.0.1", b"Forwarded: for=10.0.0.1;host=evil",
               b"X-Real-IP: 10.0.0.1", b"Connection: X-Secret\r\nX-Secret: 1"]


def test_fields_a_backend_would_obey_never_arrive(edge) -> None:  # type: ignore[no-untyped-def]
    p, rec, app_port, _ = edge
    rec.take()
    for field in RETARGETING:
        assert exchange(app_port, get(b"/api/x", extra=field + b"\r\n")).startswith(b"HTTP/1.1 200 "), field
        [(head, _)] = rec.take()
        lower = head.lower()
        assert b"evil" not in lower and b"/admin" not in lower and b"delete" not in lower, (field, head)
        assert b"10.0.0.1" not in lower and b"x-secret" not in lower and b"x-forwarded-port: 1\r" not in lower
        assert b"x-forwarded-host: proxy.test\r\n" in lower  # the proxy's own, from the Host it checked
    assert "fields='X-Original-URL'" in p.log_path.read_text(errors="replace")


def test_h2c_and_other_upgrades_are_stripped_and_bad_websocket_handshakes_refused(edge) -> None:  # type: ignore[no-untyped-def]
    _, rec, app_port, _ = edge
    rec.take()
    h2c = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
    assert exchange(app_port, get(b"/api/x", extra=h2c)).startswith(b"HTTP/1.1 200 ")
    [(head, _)] = rec.take()
    assert b"upgrade" not in head.lower() and b"http2-settings" not in head.lower()
    for bad in (b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
                b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: x\r\nSec-WebSocket-Version: 13\r\n",
                b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"):
        assert exchange(app_port, get(b"/api/x", extra=bad)).startswith(b"HTTP/1.1 400 "), bad
    assert rec.take() == []


@pytest.mark.parametrize(("request_bytes", "status"), [
    (get(b"/api/x", b"evil.example"), 421), (get(b"/api/x", b"localhost"), 421), (get(b"/api/x", b"127.0.0.2"), 421),
    (get(b"/api/x", b"[::1]"), 421), (get(b"http://evil.example/api/x", b"evil.example"), 421),
    (get(b"/api/x", b"proxy.test/x"), 400), (get(b"/api/x", b"proxy.test?x"), 400),
    (get(b"/api/x", b"a@proxy.test"), 400),
    (get(b"/api/x", b"proxy.test,evil"), 400), (get(b"/api/x", b"proxy.test:99999"), 400),
    (get(b"/api/x", b"proxy.test x"), 400), (get(b"http://evil.example/api/x"), 400),
    (get(b"http://u@proxy.test/api/x"), 400),
    (b"GET /api/x HTTP/1.1\r\nHost: proxy.test\r\nHost: evil\r\n\r\n", 400),
    (b"GET /api/x HTTP/1.1\r\n\r\n", 400),
])
def test_authority_grammar_then_name(edge, request_bytes: bytes, status: int) -> None:  # type: ignore[no-untyped-def]
    _, rec, app_port, _ = edge
    rec.take()
    resp = exchange(app_port, request_bytes)
    assert resp.startswith(f"HTTP/1.1 {status} ".encode()), resp[:80]
    assert rec.take() == []


@pytest.mark.parametrize("host", [b"proxy.test", b"PROXY.test:8443", b"proxy.test.", b"127.0.0.1"])
def test_the_proxys_own_names_are_served(edge, host: bytes) -> None:  # type: ignore[no-untyped-def]
    _, rec, app_port, _ = edge
    rec.take()
    assert exchange(app_port, get(b"/api/x", host)).startswith(b"HTTP/1.1 200 ")
    absolute = b"http://" + host + b"/api/y"
    assert exchange(app_port, get(absolute, host)).startswith(b"HTTP/1.1 200 ")
    assert [h.split(b" ")[1] for h, _ in rec.take()] == [b"/base/x", b"/base/y"]


# -- framing -------------------------------------------------------------------------------------

@pytest.mark.parametrize("request_bytes", [
    b"GET /api/x HTTP/1.1\nHost: proxy.test\n\n", b"GET /api/x HTTP/1.1\r\nHost: proxy.test\n\n",
    b"GET /api/x HTTP/1.1\r\nHost: proxy.test\rX: y\r\n", b"GET /api/x\rHTTP/1.1\r\n",
])
def test_bare_lf_or_cr_in_a_head_is_400_at_once(edge, request_bytes: bytes) -> None:  # type: ignore[no-untyped-def]
    _, rec, app_port, _ = edge
    rec.take()
    s = socket.create_connection(("127.0.0.1", app_port), timeout=3)  # far below the 10 s head deadline
    s.sendall(request_bytes)
    assert s.recv(1000).startswith(b"HTTP/1.1 400 ")
    assert s.recv(1000) == b""  # and closed
    s.close()
    assert rec.take() == []


CHUNKED = b"POST /api/x HTTP/1.1\r\nHost: proxy.test\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(("request_bytes", "status"), [
    (CHUNKED + b"5;a\nb\r\nhello\r\n0\r\n\r\n", 400),
    (CHUNKED + b"5;" + b"e" * 300
     + b"\r\nhello\r\n0\r\n\r\n", 400),
    (CHUNKED + b"5\r\nhello\r\n0\r\nX: a\nb\r\n\r\n", 400),
    (b"PUT /api/x HTTP/1.1\r\nHost: proxy.test\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx", 417),
    (b"POST /api/x HTTP/1.0\r\nHost: proxy.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"GET /api/x HTTP/2.0\r\nHost: proxy.test\r\n\r\n", 505),
    (b"POST /api/x HTTP/1.1\r\nHost: proxy.test\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
])
def test_framing_errors_get_their_status_and_no_complete_request_reaches_the_backend(
        edge, request_bytes: bytes, status: int) -> None:  # type: ignore[no-untyped-def]
    _, rec, app_port, _ = edge
    rec.take()
    assert exchange(app_port, request_bytes).startswith(f"HTTP/1.1 {status} ".encode())
    assert rec.take() == []  # the recorder only records a request whose body ended properly


class Watcher:
    """A backend that reads one request and reports how its connection ended: 'reset' or 'eof'."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.ended: list[str] = []
        self.done = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        conn, _ = self.sock.accept()
        conn.settimeout(30)
        try:
            while conn.recv(65536):
                pass
            self.ended.append("eof")
        except ConnectionResetError:
            self.ended.append("reset")
        except OSError as exc:
            self.ended.append(repr(exc))
        conn.close()
        self.done.set()


@pytest.mark.parametrize("start", [
    b"POST /api/x HTTP/1.1\r\nHost: proxy.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    b"POST /api/x HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 1000000\r\n\r\nhello",  # above BUFFER_BODY
])
def test_an_abandoned_body_resets_the_backend_connection(tmp_path: Path, start: bytes) -> None:
    w = Watcher()
    port = free_port()
    p = ProxydProcess(tmp_path, base_config(applications=[
        {"name": "a", "port": port, "tls": False, "upstream": f"http://127.0.0.1:{w.port}/"}])).start()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(start)
        time.sleep(0.5)  # the head and the first bytes are upstream
        s.close()  # the client gives up half-way
        assert w.done.wait(10)
        assert w.ended == ["reset"]
        assert "event=request_body_abandoned" in p.log_path.read_text(errors="replace")
    finally:
        p.stop()
        w.sock.close()


# -- slow and greedy clients ---------------------------------------------------------------------

class Counting:
    """A backend that counts the connections it is given and how each ended."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.ended: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    def _drain(self, conn: socket.socket) -> None:
        conn.settimeout(60)
        try:
            while conn.recv(65536):
                pass
            self.ended.append("eof")
        except ConnectionResetError:
            self.ended.append("reset")
        except OSError as exc:
            self.ended.append(repr(exc))
        conn.close()


def test_slow_clients_cost_only_themselves(tmp_path: Path) -> None:
    """At once: a TCP connection that never starts TLS, a small POST body dripped a byte every 2 s,
    a large one dripped likewise. After the deadlines (10 s) all three are gone; the small body never
    took a backend connection, the large one's was reset."""
    be = Counting()
    app_port, tls_port = free_port(), free_port()
    p = ProxydProcess(tmp_path, base_config(applications=[
        {"name": "a", "port": app_port, "tls": False, "upstream": f"http://127.0.0.1:{be.port}/"},
        {"name": "b", "port": tls_port, "tls": True, "upstream": f"http://127.0.0.1:{be.port}/"}])).start()
    try:
        silent = socket.create_connection(("127.0.0.1", tls_port), timeout=30)
        small = socket.create_connection(("127.0.0.1", app_port), timeout=30)
        large = socket.create_connection(("127.0.0.1", app_port), timeout=30)
        small.sendall(b"POST /api/x HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 1000\r\n\r\n")
        large.sendall(b"POST /api/x HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 10000000\r\n\r\n")
        start = time.monotonic()
        answers: dict[str, bytes] = {}
        while time.monotonic() - start < 20 and len(answers) < 2:
            for name, s in (("small", small), ("large", large)):
                if name in answers:
                    continue
                try:
                    s.sendall(b"x")
                except OSError:
                    answers[name] = b"closed"
            time.sleep(2)
            for name, s in (("small", small), ("large", large)):
                s.settimeout(0.01)
                try:
                    got = s.recv(1000)
                    answers.setdefault(name, got)
                except TimeoutError:
                    pass
                except OSError:
                    answers.setdefault(name, b"closed")
        elapsed = time.monotonic() - start
        assert answers["small"].startswith(b"HTTP/1.1 408 ") and answers["large"].startswith(b"HTTP/1.1 408 "), answers
        assert elapsed < 16
        silent.settimeout(5)
        assert silent.recv(100) == b""  # closed by the handshake deadline (10 s) meanwhile
        time.sleep(0.5)
        assert be.accepted == 1 and be.ended == ["reset"]  # only the large body took (and lost) a backend
        log = p.log_path.read_text(errors="replace")
        assert "request body below the minimum rate" in log
        for s in (silent, small, large):
            s.close()
    finally:
        p.stop()
        be.sock.close()


def test_one_address_cannot_hold_every_connection(tmp_path: Path) -> None:
    """`services.web.limits.connections_per_address` (set to 40 here) closes one address's next
    connection at accept; another address is served."""
    PER_ADDRESS = 40
    be = Counting()
    port = free_port()
    cfg = base_config(applications=[
        {"name": "a", "port": port, "tls": False, "upstream": f"http://127.0.0.1:{be.port}/"}])
    cfg["services"]["web"]["limits"] = {"connections_per_address": PER_ADDRESS}
    p = ProxydProcess(tmp_path, cfg).start()
    held: list[socket.socket] = []
    try:
        for _ in range(PER_ADDRESS):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        time.sleep(0.5)
        extra = socket.create_connection(("127.0.0.1", port), timeout=10)
        extra.settimeout(5)
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            extra.sendall(get(b"/api/x"))
            if extra.recv(100) == b"":
                raise ConnectionResetError
        extra.close()
        assert "per-address connection limit 40 reached" in p.log_path.read_text(errors="replace")
        # another loopback address is another client: it is served
        other = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.2", 0))
        other.sendall(get(b"/api/x"))
        deadline = time.monotonic() + 5
        while be.accepted == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert be.accepted == 1  # its request went upstream
        other.close()
        held.pop().close()
        time.sleep(0.5)
        st = p.status()["services"]["http"]
        assert st["counters"]["connections_refused"] >= 1
        assert st["gauges"]["connection_limit_per_address"] == PER_ADDRESS
    finally:
        for s in held:
            s.close()
        p.stop()
        be.sock.close()


def test_a_backend_at_its_in_flight_limit_queues_then_refuses(tmp_path: Path) -> None:
    """A backend that never answers, with `backend_connections` 4 and `backend_queue` 2: four
    requests hold connections to it, the next two wait, the seventh is 503 with Retry-After at
    once; a finished exchange passes its slot to the oldest waiter, and a waiter whose queue
    timeout passes gets 503 with Retry-After, never a backend connection."""
    be = Counting()
    port = free_port()
    cfg = base_config(applications=[
        {"name": "a", "port": port, "tls": False, "upstream": f"http://127.0.0.1:{be.port}/"}])
    cfg["services"]["web"]["limits"] = {"backend_connections": 4, "backend_queue": 2,
                                        "backend_queue_timeout": 3, "retry_after": 7}
    p = ProxydProcess(tmp_path, cfg).start()
    held: list[socket.socket] = []

    def send() -> socket.socket:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(get(b"/api/x"))
        held.append(s)
        return s

    def accepted(n: int) -> int:
        deadline = time.monotonic() + 10
        while be.accepted < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return be.accepted

    try:
        for _ in range(4):
            send()
        assert accepted(4) == 4
        first, second = send(), send()  # queued
        time.sleep(0.5)
        resp = exchange(port, get(b"/api/x"))
        assert resp.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 7\r\n" in resp, resp[:200]
        st = p.status()["services"]["http"]
        assert st["gauges"]["backend_queue_waiting"] == 2 and st["gauges"]["backend_connection_limit"] == 4
        assert be.accepted == 4
        gone = held.pop(0)  # its exchange ends (a reset: a half-closed client would still be waiting for its answer)
        gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        gone.close()
        assert accepted(5) == 5  # the oldest waiter got the slot
        second.settimeout(10)
        late = second.recv(1000)
        assert late.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 7\r\n" in late, late[:200]
        time.sleep(0.3)
        assert be.accepted == 5
        st = p.status()["services"]["http"]
        assert st["counters"]["backend_saturated"] == 2 and st["counters"]["backend_queued"] == 2
        assert st["gauges"]["backend_queue_waiting"] == 0
        log = p.log_path.read_text(errors="replace")
        assert "4 requests in flight and 2 waiting" in log and "no free slot within the queue timeout" in log
        del first
    finally:
        for s in held:
            s.close()
        p.stop()
        be.sock.close()


# -- pipelined streams through real sockets, against h11's reading -----------------------------------

A = b"GET /api/a HTTP/1.1\r\nHost: proxy.test\r\n\r\n"
B = b"POST /api/b HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 5\r\n\r\nhello"
C = (b"POST /api/c HTTP/1.1\r\nHost: proxy.test\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n")
LAST = b"GET /api/end HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\n\r\n"


def unchunk(body: bytes) -> bytes:
    out = b""
    while True:
        line, _, body = body.partition(b"\r\n")
        n = int(line.split(b";")[0], 16)
        if not n:
            return out
        out, body = out + body[:n], body[n + 2:]


@pytest.mark.parametrize(("stream", "forwarded", "last_status"), [
    (A + B + C + LAST, 4, 200),
    (A + b"GET /api/f HTTP/1.1\r\nHost: proxy.test\r\nX: a\r\n folded\r\n\r\n" + A, 1, 400),  # h11 unfolds
    (B + b"POST /api/s HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n" + A, 1, 400),  # h11 lets TE win: a smuggling pair
    (A + b"GET /api/n HTTP/1.1\r\nHost: proxy.test\r\nX: a\x00b\r\n\r\n" + A, 1, 400),  # both refuse
    (C + b"GET /api/l HTTP/1.1\nHost: proxy.test\n\n" + A, 1, 400),  # h11 takes bare LF
    (B + b"GET /api/h HTTP/1.1\r\nHost: proxy.test\r\nX-Big: " + b"b" * 33000 + b"\r\n\r\n", 1, 431),
])
def test_pipelined_streams_reach_the_backend_as_h11_reads_them_or_not_at_all(
        edge, stream: bytes, forwarded: int, last_status: int) -> None:  # type: ignore[no-untyped-def]
    from tests.services.http.test_connection_differential import theirs
    _, rec, app_port, _ = edge
    rec.take()
    s = socket.create_connection(("127.0.0.1", app_port), timeout=15)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for i in range(0, len(stream), 7):  # dripped, so that heads and bodies arrive cut anywhere
            s.sendall(stream[i:i + 7])
            if i < 2000:
                time.sleep(0.002)
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused and closed: what follows the refusal is never read
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except (TimeoutError, ConnectionError):
        pass
    s.close()
    answers = [a for a in out.split(b"HTTP/1.1 ")[1:]]
    assert [a[:3] for a in answers] == [b"200"] * forwarded + ([b"%d" % last_status] if last_status != 200 else []), out
    want = theirs(stream.replace(b"Host: proxy.test", b"Host: x"))[0][:forwarded]
    got = rec.take()
    assert len(got) == forwarded == len(want)
    for (head, body), (method, target, _, payload) in zip(got, want, strict=True):
        assert head.split(b" ")[:2] == [method, b"/base/" + target[len(b"/api/"):]]
        assert (unchunk(body) if b"transfer-encoding: chunked" in head.lower() else body) == payload
