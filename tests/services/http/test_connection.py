"""The server connection core (services/http/connection.py) as transcripts: bytes and times in, events out.

Every transcript is fed whole, one byte at a time, and at a split; the events (NEED_DATA aside,
Data joined) must be the same however the bytes arrive.
"""

from __future__ import annotations

import pytest

from proxyd.config import WebLimits
from services.http import connection, framing
from services.http.connection import END_OF_MESSAGE, NEED_DATA, PAUSED, Data, ProtocolError, Request, ServerConnection

LIMITS = WebLimits(head_timeout=10, idle_timeout=60, body_grace=10, min_body_rate=1024)
GET = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"


def events(conn: ServerConnection) -> list:
    out = []
    while True:
        ev = conn.next_event()
        if ev is NEED_DATA or ev is PAUSED:
            return out + [ev]
        out.append(ev)
        if isinstance(ev, ProtocolError):
            return out


def read(data: bytes, step: int | None = None) -> list:
    """The events of `data` fed in pieces of `step` bytes (all at once: None), Data joined, one
    request per cycle (the adapter starts the next cycle once it has answered)."""
    conn, got = ServerConnection(LIMITS, 0.0), []
    pieces = [data] if step is None else [data[i:i + step] for i in range(0, len(data), step)]
    for piece in pieces:
        conn.receive_data(piece, 0.0)
        while True:
            for ev in events(conn):
                if isinstance(ev, Data) and got and isinstance(got[-1], Data):
                    got[-1] = Data(got[-1].data + ev.data)
                elif ev is not NEED_DATA and ev is not PAUSED:
                    got.append(ev)
            if isinstance(got[-1:] and got[-1], ProtocolError):
                return [repr(e) for e in got]
            if conn.state == connection.DONE and conn.ended:
                conn.start_next_cycle(0.0)
                if conn.buffered:
                    continue
            break
    return [repr(e) for e in got]


def same_however_fed(data: bytes) -> list:
    whole = read(data)
    assert read(data, 1) == whole
    assert read(data, 7) == whole
    return whole


def test_a_request_without_body_is_a_request_then_its_end_then_paused() -> None:
    conn = ServerConnection(LIMITS, 0.0)
    conn.receive_data(GET, 1.0)
    ev = conn.next_event()
    assert isinstance(ev, Request) and ev.head.method == b"GET" and ev.head.target == b"/a"
    assert conn.next_event() is END_OF_MESSAGE
    assert conn.next_event() is PAUSED
    conn.receive_data(GET, 2.0)  # pipelined: kept until the next cycle
    assert conn.next_event() is PAUSED and conn.buffered == len(GET)
    conn.start_next_cycle(3.0)
    assert isinstance(conn.next_event(), Request)


def test_pipelined_requests_with_bodies_come_out_in_order_however_the_bytes_arrive() -> None:
    data = (b"POST /1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
            b"POST /2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n2\r\nde\r\n0\r\n"
            b"X-T: 1\r\n\r\n" + GET)
    assert same_however_fed(data) == [
        "Request(b'POST' b'/1')", "Data(b'hello')", "END_OF_MESSAGE",
        "Request(b'POST' b'/2')", "Data(b'abcde')", "END_OF_MESSAGE",
        "Request(b'GET' b'/a')", "END_OF_MESSAGE"]


@pytest.mark.parametrize(("data", "status"), [
    (b"GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n", 400),  # bare LF
    (b"GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", 400),  # bare CR
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 5000, 431),
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX", 400),
])
def test_what_can_never_be_a_request_is_a_protocol_error_with_its_status(data: bytes, status: int) -> None:
    got = same_however_fed(data)
    assert got[-1].startswith(f"ProtocolError({status}, ")
    conn = ServerConnection(LIMITS, 0.0)
    conn.receive_data(data, 0.0)
    first = events(conn)[-1]
    assert conn.next_event() is first  # and it stays broken
    assert conn.deadline == connection.NEVER


def test_a_huge_head_is_refused_as_soon_as_it_is_over_the_limit_not_at_its_end() -> None:
    conn = ServerConnection(LIMITS, 0.0)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n", 0.0)
    sent = 0
    while True:
        conn.receive_data(b"X-A: " + b"b" * 1000 + b"\r\n", 0.0)
        sent += 1
        ev = conn.next_event()
        if ev is not NEED_DATA:
            break
    assert isinstance(ev, ProtocolError) and ev.status == 431 and sent <= 33


def test_a_dripped_head_costs_each_byte_once_not_a_rescan(monkeypatch: pytest.MonkeyPatch) -> None:
    scanned = []
    real = framing._head_end

    def counting(buf: bytes | bytearray, start: int) -> int:
        scanned.append(len(buf) - start)
        return real(buf, start)

    monkeypatch.setattr(framing, "_head_end", counting)
    head = b"GET / HTTP/1.1\r\nHost: x\r\n" + (b"X-A: " + b"b" * 300 + b"\r\n") * 90 + b"\r\n"
    conn = ServerConnection(LIMITS, 0.0)
    for i in range(len(head)):
        conn.receive_data(head[i:i + 1], 0.0)
        ev = conn.next_event()
    assert isinstance(ev, Request)
    # each call looks at what is new (and the 3 bytes before it that may start the CRLFCRLF); a
    # rescan of the buffer per byte would be len(head)**2 / 2 = 300 million
    assert sum(scanned) <= 5 * len(head)


def test_the_head_deadline_runs_from_the_start_then_the_idle_timeout_then_from_the_first_byte() -> None:
    conn = ServerConnection(LIMITS, 100.0)
    assert conn.deadline == 110.0 and conn.state == connection.IDLE
    conn.receive_data(GET, 101.0)
    assert isinstance(conn.next_event(), Request) and conn.next_event() is END_OF_MESSAGE
    assert conn.deadline == connection.NEVER  # the adapter waits for the backend now, on its own deadline
    conn.start_next_cycle(105.0)
    assert conn.deadline == 165.0 and conn.expire() is None  # idle: closed quietly
    conn.receive_data(b"GET / HT", 150.0)
    assert conn.next_event() is NEED_DATA and conn.state == connection.HEAD and conn.deadline == 160.0
    err = conn.expire()
    assert isinstance(err, ProtocolError) and (err.status, err.reason) == (408, "request head not received in time")


def test_a_body_must_keep_the_minimum_rate_after_its_grace_time() -> None:
    conn = ServerConnection(LIMITS, 0.0)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1024, 0.0)
    assert isinstance(conn.next_event(), Request)
    assert conn.deadline == 0.0 + 10 + 1024 / 1024
    assert repr(conn.next_event()) == repr(Data(b"x" * 1024))
    conn.receive_data(b"x" * 2048, 5.0)
    assert conn.deadline == 10 + 3072 / 1024
    conn.receive_data(b"x", 50.0)  # the rate cap is long gone: the time it would take stays
    assert conn.deadline == pytest.approx(10 + 3073 / 1024)
    conn.next_event()
    err = conn.expire()
    assert isinstance(err, ProtocolError) and err.status == 408 and "minimum rate" in err.reason


def test_a_stalled_body_is_bounded_by_the_idle_timeout_too() -> None:
    conn = ServerConnection(LIMITS, 0.0)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n", 0.0)
    conn.next_event()
    conn.receive_data(b"x" * 1024 * 1000, 1.0)
    assert conn.deadline == 61.0


def test_a_refused_requests_body_is_skipped_when_it_is_all_here() -> None:
    conn = ServerConnection(LIMITS, 0.0)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" + GET, 0.0)
    assert isinstance(conn.next_event(), Request)
    assert conn.skip_body() and conn.buffered == len(GET)
    conn.next_event()  # END_OF_MESSAGE
    conn.start_next_cycle(1.0)
    assert isinstance(conn.next_event(), Request)
    for rest in (b"ab", b"3\r\nabc\r\n0\r\n\r\n"):  # not all here, or chunked: the adapter must close
        framing_field = b"Content-Length: 3" if rest == b"ab" else b"Transfer-Encoding: chunked"
        conn = ServerConnection(LIMITS, 0.0)
        conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\n" + framing_field + b"\r\n\r\n" + rest, 0.0)
        assert isinstance(conn.next_event(), Request) and not conn.skip_body()


def test_what_follows_a_101_is_handed_over_whole() -> None:
    conn = ServerConnection(LIMITS, 0.0)
    ws = (b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    conn.receive_data(ws + b"\x81\x05hello", 0.0)
    ev = conn.next_event()
    assert isinstance(ev, Request) and ev.head.upgrade == b"websocket"
    assert conn.take_buffered() == b"\x81\x05hello" and conn.buffered == 0


def test_a_thousand_pipelined_requests_in_one_read_are_read_without_copying_the_rest_each_time() -> None:
    conn = ServerConnection(LIMITS, 0.0)
    conn.receive_data(GET * 1000, 0.0)
    n = 0
    while isinstance(conn.next_event(), Request):
        n += 1
        assert conn.next_event() is END_OF_MESSAGE
        assert type(conn.buf) is bytearray or not conn.buf  # copied once into a buffer that shrinks at its front
        conn.start_next_cycle(0.0)
    assert n == 1000
