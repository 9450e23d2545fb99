"""Run inside a fresh network namespace (only `lo` up, 10.0.0.5 added to it): the attacks of
issue 20 against a real proxyd over UDP, with a recorder on every address the messages name
(both tenants' PBXs, a loopback port, an internal host). The PBX of tenant a answers REGISTERs
401 as a PBX does to a wrong password. Prints one JSON object: per attack, the phone's answer
and what each recorder received."""

from __future__ import annotations

import json
import select
import socket
import tempfile
import threading
import time
from pathlib import Path

from services.sip.message import parse, response
from tests.support import ProxydProcess, base_config, free_tcp_udp_port


class Recorder(threading.Thread):
    """Records every datagram; answers REGISTER with 401 if `challenge`."""

    def __init__(self, addr: tuple[str, int], challenge: bool = False):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(addr)
        self.port = self.sock.getsockname()[1]
        self.challenge, self.got, self.running = challenge, [], True

    def run(self) -> None:
        while self.running:
            ready, _, _ = select.select([self.sock], [], [], 0.1)
            if not ready:
                continue
            data, addr = self.sock.recvfrom(65535)
            self.got.append(data)
            if self.challenge and data.startswith(b"REGISTER "):
                resp = response(parse(data), 401, "Unauthorized", "pbx")
                resp.headers.append(["WWW-Authenticate", 'Digest realm="a.test", nonce="1"'])
                self.sock.sendto(resp.serialize(), addr)

    def take(self) -> list[str]:
        got, self.got = self.got, []
        return [g.decode("latin-1") for g in got]


def req(method: str, ruri: str, call_id: str, *, frm: str = "alice@a.test", to: str = "bob@a.test", to_tag: str = "",
        extra: str = "", vias: int = 1, cseq: int = 1) -> bytes:
    via = "".join(f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK{call_id}{cseq}v{i}\r\n" for i in range(vias))
    to_v = f"<sip:{to}>" + (f";tag={to_tag}" if to_tag else "")
    return (f"{method} {ruri} SIP/2.0\r\n{via}{extra}From: <sip:{frm}>;tag=f{call_id}\r\nTo: {to_v}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()


LONG_CALL_ID = b"Call-ID: " + b"L" * 60_000
ATTACKS = {
    "identity": req("INVITE", "sip:bob@a.test", "pai", extra="p-asserted-identity : <sip:ceo@a.test>\r\n"
                    "P-Preferred-Identity: <sip:ceo@a.test>\r\n"),
    "preloaded_route": req("INVITE", "sip:bob@a.test", "route", extra="Route: <sip:127.0.0.1:{loop};lr>\r\n"),
    "ruri_internal": req("INVITE", "sip:bob@10.0.0.5:5060", "ruri"),
    "ruri_loopback": req("INVITE", "sip:bob@127.0.0.1:{loop}", "ruriloop"),
    "maddr": req("INVITE", "sip:bob@a.test;maddr=10.0.0.5", "maddr"),
    "other_tenant_register": req("REGISTER", "sip:a.test", "reg-b", frm="alice@b.test", to="alice@b.test"),
    "sips_over_udp": req("INVITE", "sips:bob@a.test", "sips"),
    "stray_bye": req("BYE", "sip:bob@a.test", "stray1", to_tag="x"),
    "stray_cancel": req("CANCEL", "sip:bob@a.test", "stray2"),
    "stray_ack": req("ACK", "sip:bob@a.test", "stray3", to_tag="x"),
    "many_via": req("OPTIONS", "sip:bob@a.test", "vias", vias=1_000),
    # main made a dialog of each bare ACK pair with a 60 KB Call-ID, and forwarded both
    "long_call_id_ack": req("ACK", "sip:bob@a.test", "lc1", to_tag="x").replace(b"Call-ID: lc1", LONG_CALL_ID),
    "long_call_id_invite": req("INVITE", "sip:bob@a.test", "lc2").replace(b"Call-ID: lc2", LONG_CALL_ID),
}


def main() -> None:
    pbx_a, pbx_b = Recorder(("127.0.0.1", 0), challenge=True), Recorder(("127.0.0.1", 0))
    loop, internal = Recorder(("127.0.0.1", 0)), Recorder(("10.0.0.5", 5060))
    recorders = {"pbx_a": pbx_a, "pbx_b": pbx_b, "loopback": loop, "internal": internal}
    for r in recorders.values():
        r.start()
    port = free_tcp_udp_port()
    cfg = base_config(
        instances=[{"name": "a", "sip": f"udp:127.0.0.1:{pbx_a.port}", "sip_domains": ["a.test"]},
                   {"name": "b", "sip": f"udp:127.0.0.1:{pbx_b.port}", "sip_domains": ["b.test"]}],
        services={"sip": {"mode": "udp", "udp_port": port}},
    )
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        proc = ProxydProcess(Path(tmp), cfg).start()
        phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        phone.bind(("127.0.0.1", 0))
        try:
            for name, data in ATTACKS.items():
                phone.sendto(data.replace(b"{loop}", str(loop.port).encode()), ("127.0.0.1", port))
                results[name] = {"answer": answers(phone, 0.5), **{k: r.take() for k, r in recorders.items()}}
            # brute force: 60 wrong-password REGISTERs for one user, 20 a second
            for n in range(60):
                guess = f'Authorization: Digest username="alice", realm="a.test", response="{n:032x}"\r\n'
                phone.sendto(req("REGISTER", "sip:a.test", "brute", frm="alice@a.test", to="alice@a.test", cseq=n + 1,
                                 extra=guess), ("127.0.0.1", port))
                time.sleep(0.05)
            time.sleep(0.3)
            results["brute_force"] = {"answer": answers(phone, 0.5), **{k: r.take() for k, r in recorders.items()}}
            results["sip"] = proc.status()["services"]["sip"]
        finally:
            phone.close()
            proc.stop()
    print(json.dumps(results))


def answers(sock: socket.socket, wait: float) -> list[str]:
    """The status lines the phone got within `wait` seconds of the last one."""
    got = []
    while True:
        ready, _, _ = select.select([sock], [], [], wait)
        if not ready:
            return got
        got.append(sock.recv(65535).split(b"\r\n", 1)[0].decode("latin-1"))


if __name__ == "__main__":
    main()
