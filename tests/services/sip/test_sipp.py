"""sipp as phone and PBX through a real proxyd: REGISTER, calls over UDP and TLS, calls from the
PBX to a registered phone over its Path flow, a call between two phones spiralling through a
PBX, 404 for unknown domains, 483 at Max-Forwards 0."""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from proxyd.tls import fingerprint
from services.sip.framing import StreamFramer
from services.sip.message import parse, split_commas
from services.sip.proxy import RETRY_AFTER
from tests.services.sip.sipp_support import SCENARIOS, request, sip_config, sipp, sipp_bg, stop, udp_request
from tests.support import free_port

pytestmark = pytest.mark.peer


def _uas(tmp_path: Path, transport: str = "u1") -> tuple[int, object]:
    port = free_port(socket.SOCK_DGRAM)
    args = ["-sf", str(SCENARIOS / "pbx_uas.xml"), "-i", "127.0.0.1", "-p", str(port), "-t", transport]
    proc = sipp_bg(args, tmp_path, tmp_path / "uas.log")
    return port, proc


def _assert_calls(res: object, calls: int) -> None:
    out = res.stdout + res.stderr  # type: ignore[attr-defined]
    assert res.returncode == 0, out[-4000:]  # type: ignore[attr-defined]
    m = re.search(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", out)
    f = re.search(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", out)
    assert m and int(m.group(1)) == calls, out[-4000:]
    assert f and int(f.group(1)) == 0, out[-4000:]


def test_udp_100_calls(proxyd, tmp_path: Path) -> None:
    uas_port, uas = _uas(tmp_path)
    try:
        cfg = sip_config("udp", uas_port)
        p = proxyd(cfg)
        port = cfg["services"]["sip"]["udp_port"]
        res = sipp(["-sf", str(SCENARIOS / "call_uac.xml"), f"127.0.0.1:{port}", "-i", "127.0.0.1",
                    "-p", str(free_port(socket.SOCK_DGRAM)), "-m", "100", "-r", "50", "-l", "50"], tmp_path)
        _assert_calls(res, 100)
        counters = p.status()["services"]["sip"]["counters"]
        assert counters["forwarded_requests"] >= 300 and counters["forwarded_responses"] >= 300
    finally:
        stop(uas)  # type: ignore[arg-type]


def test_tcp_phone_100_calls(proxyd, tmp_path: Path) -> None:
    """Mode udp also takes phones over TCP on the same port (RFC 3261 §18): 100 calls from a
    sipp phone over one TCP connection; responses and in-dialog requests come back over it."""
    uas_port, uas = _uas(tmp_path)
    try:
        cfg = sip_config("udp", uas_port)
        p = proxyd(cfg)
        port = cfg["services"]["sip"]["udp_port"]
        assert f"tcp://127.0.0.1:{port}" in p.status()["services"]["sip"]["listeners"]
        res = sipp(["-sf", str(SCENARIOS / "call_uac.xml"), f"127.0.0.1:{port}", "-i", "127.0.0.1",
                    "-p", str(free_port()), "-t", "t1", "-m", "100", "-r", "50", "-l", "50"], tmp_path)
        _assert_calls(res, 100)
        sip = p.status()["services"]["sip"]
        assert sip["counters"]["forwarded_requests"] >= 300
        assert sip["gauges"]["connections"] == 0  # sipp has closed its connection: forgotten
    finally:
        stop(uas)  # type: ignore[arg-type]


def _tls_call(conn: ssl.SSLSocket, framer: StreamFramer, n: int, port: int) -> None:
    """One full call from a TLS phone (Python, real TLS) through pforte to the sipp UAS."""
    me = f"127.0.0.1:{conn.getsockname()[1]}"
    sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"

    def req(method: str, ruri: str, cseq: int, extra: str = "", body: str = "") -> None:
        ctype = "Content-Type: application/sdp\r\n" if body else ""
        conn.sendall((f"{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/TLS {me};branch=z9hG4bKt{n}x{cseq}{method}\r\n"
                      f"From: <sip:tls@pbx.test>;tag=f{n}\r\nTo: <sip:svc@pbx.test>{extra}\r\nCall-ID: tls{n}\r\n"
                      f"CSeq: {cseq} {method}\r\nContact: <sip:tls@{me};transport=tls>\r\nMax-Forwards: 70\r\n"
                      f"{ctype}Content-Length: {len(body)}\r\n\r\n{body}").encode())

    def read() -> str:
        while True:
            got = framer.feed(conn.recv(65535))
            if got:
                assert len(got) == 1
                return got[0].decode("latin-1")

    req("INVITE", "sip:svc@pbx.test", 1, body=sdp)
    resp = read()
    while not resp.startswith("SIP/2.0 200"):
        assert resp.startswith("SIP/2.0 1"), resp
        resp = read()
    rr = _hdr(resp, "Record-Route")
    assert len(rr) == 2
    target = re.search(r"<([^>]+)>", _hdr(resp, "Contact")[0]).group(1)  # type: ignore[union-attr]
    tag = _hdr(resp, "To")[0].split("tag=")[1]
    routes = f";tag={tag}\r\nRoute: {rr[1]}, {rr[0]}"
    req("ACK", target, 1, routes)
    req("BYE", target, 2, routes)
    assert read().startswith("SIP/2.0 200 OK"), "BYE not answered"


def test_tls_calls(proxyd, tmp_path: Path) -> None:
    """Debian's sipp has no TLS, so the TLS phone is a Python client; the PBX is sipp."""
    uas_port, uas = _uas(tmp_path)
    try:
        cfg = sip_config("tls", uas_port)
        p = proxyd(cfg)
        port = cfg["services"]["sip"]["tls_port"]
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", port), timeout=20) as raw, \
                ctx.wrap_socket(raw, server_hostname="proxy.test") as conn:
            framer = StreamFramer()
            conn.sendall(b"\r\n\r\n")
            assert conn.recv(10) == b"\r\n", p.output()  # RFC 5626 keepalive pong
            for n in range(20):
                _tls_call(conn, framer, n, port)
        assert p.status()["services"]["sip"]["counters"]["forwarded_requests"] >= 60
    finally:
        stop(uas)  # type: ignore[arg-type]


def test_unknown_domain_404_and_max_forwards_483(proxyd, tmp_path: Path) -> None:
    cfg = sip_config("udp", free_port(socket.SOCK_DGRAM))
    proxyd(cfg)
    port = cfg["services"]["sip"]["udp_port"]
    assert udp_request(port, request("OPTIONS", "sip:x@unknown.test")).startswith(b"SIP/2.0 404 Not Found\r\n")
    reply = udp_request(port, request("OPTIONS", "sip:x@pbx.test", max_forwards=0, call="t2"))
    assert reply.startswith(b"SIP/2.0 483 ")
    assert b"Call-ID: t2\r\n" in reply


def _recv(sock: socket.socket) -> tuple[str, tuple[str, int]]:
    data, addr = sock.recvfrom(65535)
    return data.decode("latin-1"), addr


def _hdr(msg: str, name: str) -> list[str]:
    """Every value of header `name`, whether on lines of their own or joined by commas."""
    lines = [line.split(":", 1)[1] for line in msg.split("\r\n") if line.lower().startswith(name.lower() + ":")]
    return [v for line in lines for v in split_commas(line)]


@pytest.mark.parametrize("phone_transport", ["u1", "t1"])
def test_pbx_calls_registered_phone_over_path(proxyd, tmp_path: Path, phone_transport: str) -> None:
    """A Python PBX receives the REGISTER (with our Path), then calls the sipp phone through it:
    over UDP, or over the phone's own TCP connection."""
    pbx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pbx.bind(("127.0.0.1", 0))
    pbx.settimeout(20)
    cfg = sip_config("udp", pbx.getsockname()[1])
    p = proxyd(cfg)
    port = cfg["services"]["sip"]["udp_port"]
    phone = sipp_bg(["-sf", str(SCENARIOS / "phone_register.xml"), f"127.0.0.1:{port}", "-i", "127.0.0.1",
                     "-p", str(free_port()), "-t", phone_transport, "-m", "1", "-timeout", "40s"], tmp_path,
                    tmp_path / "phone.log")
    try:
        reg, relay = _recv(pbx)
        assert reg.startswith("REGISTER sip:pbx.test SIP/2.0")
        path = _hdr(reg, "Path")[0]
        contact = re.search(r"<([^>]+)>", _hdr(reg, "Contact")[0]).group(1)  # type: ignore[union-attr]
        assert "pf-flow=" in contact
        ok = reg.split("\r\n\r\n")[0].replace("REGISTER sip:pbx.test SIP/2.0", "SIP/2.0 200 OK", 1)
        pbx.sendto((ok + "\r\n\r\n").encode(), relay)
        call_id = _hdr(reg, "Call-ID")[0]
        me = f"127.0.0.1:{pbx.getsockname()[1]}"
        invite = (f"INVITE {contact} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKpbx1\r\nRoute: {path}\r\n"
                  f"From: <sip:pbx@pbx.test>;tag=pbx\r\nTo: <sip:phone@pbx.test>\r\nCall-ID: {call_id}\r\n"
                  f"CSeq: 2 INVITE\r\nContact: <sip:pbx@{me}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        pbx.sendto(invite.encode(), relay)
        final = ""
        while not final.startswith("SIP/2.0 200"):
            final, _ = _recv(pbx)
        rr = _hdr(final, "Record-Route")
        assert len(rr) == 2 and all("pf" not in v or ";lr" in v for v in rr)
        to = _hdr(final, "To")[0]
        for n, method in ((2, "ACK"), (3, "BYE")):
            req = (f"{method} {contact} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKpbx{n}\r\n"
                   f"Route: {rr[0]}\r\nRoute: {rr[1]}\r\nFrom: <sip:pbx@pbx.test>;tag=pbx\r\nTo: {to}\r\n"
                   f"Call-ID: {call_id}\r\nCSeq: {2 if method == 'ACK' else 3} {method}\r\n"
                   f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
            pbx.sendto(req.encode(), relay)
        bye_ok, _ = _recv(pbx)
        assert bye_ok.startswith("SIP/2.0 200") and "3 BYE" in bye_ok
        assert phone.wait(30) == 0, (tmp_path / "phone.log").read_text()[-3000:]
        if phone_transport == "t1":  # everything to the phone went over its connection
            assert "transport=tcp" in rr[0]
            assert "unreachable_flows" not in p.status()["services"]["sip"]["counters"]
    finally:
        stop(phone)
        pbx.close()


def test_flood_blocks_one_source_other_keeps_working(proxyd) -> None:
    cfg = sip_config("udp", free_port(socket.SOCK_DGRAM))
    cfg["services"]["sip"]["rate_limit"] = 20
    p = proxyd(cfg)
    port = cfg["services"]["sip"]["udp_port"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flood:
        flood.bind(("127.0.0.2", 0))
        me = "{}:{}".format(*flood.getsockname())
        for n in range(200):
            flood.sendto(request("OPTIONS", "sip:x@nowhere.test", call=f"f{n}").replace("{me}", me)
                         .replace("\n", "\r\n").encode(), ("127.0.0.1", port))
    for attempt in range(3):  # UDP on a busy machine: allow a lost datagram
        try:
            reply = udp_request(port, request("OPTIONS", "sip:x@nowhere.test", call=f"o{attempt}"), src="127.0.0.3")
            break
        except TimeoutError:
            continue
    assert reply.startswith(b"SIP/2.0 404 ")
    sip = p.status()["services"]["sip"]
    assert sip["counters"]["dropped_rate_limited"] >= 100
    assert sip["gauges"]["blocked_sources"] == 1
    with pytest.raises(TimeoutError):
        udp_request(port, request("OPTIONS", "sip:x@nowhere.test", call="again"), src="127.0.0.2", timeout=1.0)


def test_udp_phone_to_tcp_pbx(proxyd, tmp_path: Path) -> None:
    """The instance's `sip` target is TCP: calls go over one reused connection, framed by Content-Length."""
    uas_port = free_port()
    uas = sipp_bg(["-sf", str(SCENARIOS / "pbx_uas.xml"), "-i", "127.0.0.1", "-p", str(uas_port), "-t", "t1"],
                  tmp_path, tmp_path / "uas.log")
    try:
        cfg = sip_config("udp", uas_port, transport="tcp")
        p = proxyd(cfg)
        port = cfg["services"]["sip"]["udp_port"]
        res = sipp(["-sf", str(SCENARIOS / "call_uac.xml"), f"127.0.0.1:{port}", "-i", "127.0.0.1",
                    "-p", str(free_port(socket.SOCK_DGRAM)), "-m", "100", "-r", "50", "-l", "50"], tmp_path)
        _assert_calls(res, 100)
        sip = p.status()["services"]["sip"]
        assert sip["gauges"]["connections"] == 1  # one connection to the PBX, reused by every call
        assert sip["gauges"]["tls_connections"] == 0
        assert "backend_connect_failed" not in sip["counters"]
    finally:
        stop(uas)


def _tls_pbx(tmp_path: Path) -> tuple[socket.socket, list[str], str]:
    """A TLS PBX on loopback (see `_tls_uas`): its listener, the methods it saw, its certificate."""
    cert, key = tmp_path / "pbx.pem", tmp_path / "pbx.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-subj", "/CN=pbx.test", "-days", "1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[str] = []
    threading.Thread(target=_tls_uas, args=(listener, ctx, seen), daemon=True).start()
    return listener, seen, cert.read_text()


@pytest.mark.parametrize("pinned", [False, True])
def test_udp_phone_to_tls_pbx(proxyd, tmp_path: Path, pinned: bool) -> None:
    """Debian's sipp has no TLS: the TLS PBX is a Python UAS answering every request with 200.
    Pinned: the instance names the PBX certificate's fingerprint, without colons, in lower case."""
    listener, seen, cert_pem = _tls_pbx(tmp_path)
    try:
        cfg = sip_config("udp", listener.getsockname()[1], transport="tls")
        if pinned:
            cfg["instances"][0]["sip_tls_fingerprint"] = fingerprint(cert_pem).replace(":", "").lower()
        p = proxyd(cfg)
        port = cfg["services"]["sip"]["udp_port"]
        res = sipp(["-sf", str(SCENARIOS / "call_uac.xml"), f"127.0.0.1:{port}", "-i", "127.0.0.1",
                    "-p", str(free_port(socket.SOCK_DGRAM)), "-m", "20", "-r", "10", "-l", "10"], tmp_path)
        _assert_calls(res, 20)
        assert seen.count("INVITE") == 20 and seen.count("BYE") == 20
        gauges = p.status()["services"]["sip"]["gauges"]
        assert gauges["connections"] == 1 == gauges["tls_connections"]  # pforte_sip_tls_connections
    finally:
        listener.close()


def _invite(port: int, call: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
        phone.bind(("127.0.0.1", 0))
        me = phone.getsockname()
        text = request("INVITE", "sip:svc@pbx.test", call=call).replace("{me}", f"{me[0]}:{me[1]}")
        phone.sendto(text.replace("\n", "\r\n").encode(), ("127.0.0.1", port))


def _wait_counter(p: object, name: str, value: int) -> dict[str, int]:
    deadline = time.monotonic() + 10
    counters: dict[str, int] = {}
    while time.monotonic() < deadline and counters.get(name, 0) < value:
        time.sleep(0.1)
        counters = p.status()["services"]["sip"]["counters"]  # type: ignore[attr-defined]
    return counters


def test_tls_pbx_with_another_certificate_gets_nothing(proxyd, tmp_path: Path) -> None:
    """A pinned PBX that presents another certificate: the connection is closed after the handshake,
    before any SIP message is written to it, and the mismatch is counted."""
    listener, seen, cert_pem = _tls_pbx(tmp_path)
    try:
        cfg = sip_config("udp", listener.getsockname()[1], transport="tls")
        good = fingerprint(cert_pem)
        cfg["instances"][0]["sip_tls_fingerprint"] = ("0" if good[0] != "0" else "1") + good[1:]
        p = proxyd(cfg)
        _invite(cfg["services"]["sip"]["udp_port"], "wrong-pin")
        counters = _wait_counter(p, "backend_certificate_mismatch", 1)
        assert counters.get("backend_certificate_mismatch") == 1, counters
        assert counters["backend_down_drops"] == 1  # the INVITE that waited for the connection
        for n in range(3):  # within RETRY_AFTER: answered 503, no new connection to the PBX
            reply = udp_request(cfg["services"]["sip"]["udp_port"], request("INVITE", "sip:svc@pbx.test", call=f"a{n}"))
            assert reply.startswith(b"SIP/2.0 503 Service Unavailable\r\n") and b"\r\nRetry-After: 5\r\n" in reply
        counters = p.status()["services"]["sip"]["counters"]
        assert counters["unavailable_backend"] == 3 and counters["backend_certificate_mismatch"] == 1, counters
        assert seen == []
        assert p.status()["services"]["sip"]["gauges"]["connections"] == 0
    finally:
        listener.close()


def test_unreachable_tcp_pbx_is_retried_after_a_pause(proxyd) -> None:
    """Nothing listens at the PBX's TCP port: the connect fails once; requests in the next seconds
    get a 503 with Retry-After instead of each trying a new connection; after the pause a request
    tries again."""
    cfg = sip_config("udp", free_port(), transport="tcp")
    p = proxyd(cfg)
    port = cfg["services"]["sip"]["udp_port"]
    _invite(port, "first")
    counters = _wait_counter(p, "backend_connect_failed", 1)
    assert counters.get("backend_connect_failed") == 1, counters
    assert counters["backend_down_drops"] == 1  # the INVITE that waited for the connection
    reply = udp_request(port, request("INVITE", "sip:svc@pbx.test", call="second"))
    assert reply.startswith(b"SIP/2.0 503 ") and b"\r\nRetry-After: 5\r\n" in reply and b"Call-ID: second\r\n" in reply
    counters = p.status()["services"]["sip"]["counters"]
    assert counters["unavailable_backend"] == 1 and counters["backend_connect_failed"] == 1
    time.sleep(RETRY_AFTER)
    _invite(port, "third")
    counters = _wait_counter(p, "backend_connect_failed", 2)
    assert counters["backend_connect_failed"] == 2 and counters["unavailable_backend"] == 1, counters


def test_tls_pbx_that_never_handshakes_times_out(proxyd) -> None:
    """A PBX port that takes the TCP connection but never speaks TLS: the connect gives up after
    CONNECT_TIMEOUT (5 s) instead of queueing messages for the OS's minutes."""
    silent = socket.create_server(("127.0.0.1", 0))  # never accepts: the kernel completes the TCP handshake
    try:
        cfg = sip_config("udp", silent.getsockname()[1], transport="tls")
        p = proxyd(cfg)
        _invite(cfg["services"]["sip"]["udp_port"], "silent")
        time.sleep(3)
        assert "backend_connect_failed" not in p.status()["services"]["sip"]["counters"]
        counters = _wait_counter(p, "backend_connect_failed", 1)
        assert counters.get("backend_connect_failed") == 1, counters
    finally:
        silent.close()


def test_pinning_a_connected_pbx_checks_its_connection_again(proxyd, tmp_path: Path) -> None:
    """A pin added while a connection to the PBX is open closes it: the next request opens a new
    one, which is checked (here against another certificate, so nothing more reaches the PBX)."""
    listener, seen, cert_pem = _tls_pbx(tmp_path)
    try:
        cfg = sip_config("udp", listener.getsockname()[1], transport="tls")
        p = proxyd(cfg)
        port = cfg["services"]["sip"]["udp_port"]
        _invite(port, "before-pin")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "INVITE" not in seen:
            time.sleep(0.05)
        assert seen == ["INVITE"]
        good = fingerprint(cert_pem)
        cfg["instances"][0]["sip_tls_fingerprint"] = ("0" if good[0] != "0" else "1") + good[1:]
        cfg["revision"] += 1
        p.reload(cfg)
        _invite(port, "after-pin")
        counters = _wait_counter(p, "backend_certificate_mismatch", 1)
        assert counters.get("backend_certificate_mismatch") == 1, counters
        assert seen == ["INVITE"]
    finally:
        listener.close()


def _tls_uas(listener: socket.socket, ctx: ssl.SSLContext, seen: list[str]) -> None:
    """Serve the proxy's connections one after the other until the listener is closed."""
    while True:
        try:
            raw, _ = listener.accept()
        except OSError:
            return
        try:
            _tls_uas_conn(ctx.wrap_socket(raw, server_side=True), seen)
        except (OSError, ssl.SSLError):
            continue  # the proxy dropped the connection: wait for its next one


def _tls_uas_conn(conn: ssl.SSLSocket, seen: list[str]) -> None:
    with conn:
        framer = StreamFramer()
        while True:
            try:
                data = conn.recv(65535)
            except OSError:
                return
            if not data:
                return
            for m in framer.feed(data):
                text = m.decode("latin-1")
                method = text.split(" ", 1)[0]
                seen.append(method)
                if method == "ACK":
                    continue
                head = text.split("\r\n\r\n", 1)[0].split("\r\n")
                keep = [h for h in head[1:] if h.split(":", 1)[0].lower() in ("via", "from", "call-id", "cseq",
                                                                               "record-route")]
                to = next(h for h in head if h.lower().startswith("to:"))
                if ";tag=" not in to:
                    to += ";tag=pbx"
                body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" \
                       b"m=audio 7000 RTP/AVP 0\r\n" if method == "INVITE" else b""
                ctype = ["Content-Type: application/sdp"] if body else []
                me = conn.getsockname()
                resp = ["SIP/2.0 200 OK", *keep, to, f"Contact: <sip:pbx@{me[0]}:{me[1]};transport=tls>", *ctype,
                        f"Content-Length: {len(body)}", "", ""]
                conn.sendall("\r\n".join(resp).encode() + body)


def _spiralling_pbx(sock: socket.socket, contact: str, path: str, done: threading.Event, seen: list[str]) -> None:
    """A record-routing PBX that knows one extension, registered through pforte: a request to
    `…@pbx.test` goes back to pforte towards the phone's Contact over its Path (the spiral);
    in-dialog requests lose our Route, responses our Via, and go back to pforte as well."""
    me = f"127.0.0.1:{sock.getsockname()[1]}"
    n = 0
    while not done.is_set():
        try:
            data, relay = sock.recvfrom(65535)
        except TimeoutError:
            continue
        msg = parse(data)
        seen.append(f"{msg.method or msg.status} {msg.uri}".strip())
        if msg.method is None:
            msg.pop_first("Via")
        else:
            n += 1
            if msg.uri.endswith("@pbx.test"):
                msg.uri = contact
                msg.insert("Route", path)
                msg.insert("Record-Route", f"<sip:{me};lr>")
            elif msg.get("Route") == f"<sip:{me};lr>":
                msg.pop_first("Route")
            msg.insert("Via", f"SIP/2.0/UDP {me};branch=z9hG4bKspiral{n}")
            msg.set("Max-Forwards", str(int(msg.get("Max-Forwards") or 70) - 1))
        sock.sendto(msg.serialize(), relay)


def test_extension_calls_extension_through_a_spiral(proxyd, tmp_path: Path) -> None:
    """Two sipp phones of one instance: phone -> pforte -> PBX -> pforte -> phone. The INVITE
    comes back to pforte with its Via in it, but for another Request-URI: a spiral, forwarded;
    the call (and its ACK, BYE and responses over both passes) completes. Once pforte answered
    the second pass with 482."""
    pbx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pbx.bind(("127.0.0.1", 0))
    pbx.settimeout(0.2)
    cfg = sip_config("udp", pbx.getsockname()[1])
    p = proxyd(cfg)
    port = cfg["services"]["sip"]["udp_port"]
    # sipp takes a message for its call by Call-ID: the callee's INVITE must carry the Call-ID
    # of its REGISTER, so both phones use the same one
    cid = ["-cid_str", "spiral-%u"]
    callee = sipp_bg(["-sf", str(SCENARIOS / "phone_register.xml"), f"127.0.0.1:{port}", "-i", "127.0.0.1",
                      "-p", str(free_port()), "-m", "1", "-timeout", "40s", *cid], tmp_path, tmp_path / "callee.log")
    done, seen = threading.Event(), []
    pbx_thread: threading.Thread | None = None
    try:
        pbx.settimeout(20)
        reg, relay = _recv(pbx)
        path = _hdr(reg, "Path")[0]
        contact = re.search(r"<([^>]+)>", _hdr(reg, "Contact")[0]).group(1)  # type: ignore[union-attr]
        ok = reg.split("\r\n\r\n")[0].replace("REGISTER sip:pbx.test SIP/2.0", "SIP/2.0 200 OK", 1)
        pbx.sendto((ok + "\r\n\r\n").encode(), relay)
        pbx.settimeout(0.2)
        pbx_thread = threading.Thread(target=_spiralling_pbx, args=(pbx, contact, path, done, seen), daemon=True)
        pbx_thread.start()
        res = sipp(["-sf", str(SCENARIOS / "call_uac.xml"), f"127.0.0.1:{port}", "-i", "127.0.0.1",
                    "-p", str(free_port(socket.SOCK_DGRAM)), "-s", "phone", "-m", "1", *cid], tmp_path, timeout=40)
        _assert_calls(res, 1)
        assert callee.wait(30) == 0, (tmp_path / "callee.log").read_text()[-3000:]
        counters = p.status()["services"]["sip"]["counters"]
        assert counters["spirals"] >= 3 and "loops" not in counters, counters  # INVITE, ACK, BYE
        assert seen[0] == "INVITE sip:phone@pbx.test" and "482 " not in " ".join(seen), seen
    finally:
        done.set()
        if pbx_thread is not None:
            pbx_thread.join(5)
        stop(callee)
        pbx.close()
