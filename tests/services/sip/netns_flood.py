"""Run inside a fresh network namespace (only `lo` up): 20,000 spoofed UDP sources (raw IP
packets from 127.a.b.c, one OPTIONS, REGISTER or SUBSCRIBE each, spread over /24s so no
prefix limit holds them) flood an in-process SIP service while a registered phone sends an
OPTIONS every 100 spoofed packets and makes calls. Prints one JSON object: the phone's answers
and calls, and the sizes of the tables the flood fills, with whether the phone's entries are
still in them (`test_border_netns.py`)."""

from __future__ import annotations

import asyncio
import json
import select
import socket
import tempfile
from pathlib import Path

from proxyd.access import AccessList
from proxyd.config import parse_config
from proxyd.service import ServiceContext
from proxyd.statedir import StateDir
from proxyd.tls import CertStore
from services.sip.flow import Flow
from services.sip.message import parse
from services.sip.service import SipService, _Udp
from tests.services.sip.netns_amplification import Pbx, call, invite, spoofed
from tests.support import base_config, free_tcp_udp_port

SOURCES = 20_000
PROBE_EVERY = 100


def flood_and_probe(port: int, phone: socket.socket) -> dict[str, object]:
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    proxy = ("127.0.0.1", port)
    me = phone.getsockname()
    answered = unanswered = 0
    calls = [call(phone, port, "call-before")]
    try:
        for n in range(SOURCES):
            src = (f"127.{1 + n % 200}.{n // 200 % 250}.{1 + n % 7}", 1024 + n)
            method = ("OPTIONS", "REGISTER", "SUBSCRIBE")[n % 3]
            # a Route naming us, different each time: a Route set of its own to remember
            extra = f"Route: <sip:127.0.0.1:{port};lr;n={n}>\r\n" if method == "REGISTER" else ""
            data = invite(f"spoof-{n}", src, method).replace(b"Call-ID", f"{extra}X-N: {n}\r\nCall-ID".encode(), 1)
            raw.sendto(spoofed(data, src, proxy), ("127.0.0.1", 0))
            if n % PROBE_EVERY == 0:
                phone.sendto(invite(f"probe-{n}", me, "OPTIONS"), proxy)
                if _answer(phone, 1.0):
                    answered += 1
                else:
                    unanswered += 1
            if n == SOURCES // 2:
                calls.append(call(phone, port, "call-during"))
        calls.append(call(phone, port, "call-after"))
    finally:
        raw.close()
    return {"answered": answered, "unanswered": unanswered, "calls": calls}


def register(port: int, phone: socket.socket) -> bool:
    phone.sendto(invite("register", phone.getsockname(), "REGISTER"), ("127.0.0.1", port))
    while select.select([phone], [], [], 2.0)[0]:
        msg = parse(phone.recv(65535))
        if msg.status == 200 and (msg.get("CSeq") or "").endswith("REGISTER"):
            return True
    return False


def _answer(phone: socket.socket, wait: float) -> bool:
    while select.select([phone], [], [], wait)[0]:
        msg = parse(phone.recv(65535))
        if msg.status == 200 and (msg.get("CSeq") or "").endswith("OPTIONS"):
            return True
    return False


async def main() -> None:
    pbx = Pbx()
    pbx.start()
    port = free_tcp_udp_port()
    cfg = parse_config(base_config(
        instances=[{"name": "a", "sip": f"udp:127.0.0.1:{pbx.port}", "sip_domains": ["a.test"]}],
        services={"sip": {"mode": "udp", "udp_port": port}}))
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.bind(("127.0.0.1", 0))
    me = phone.getsockname()
    with tempfile.TemporaryDirectory() as tmp:
        state = StateDir(Path(tmp)).ensure()
        ctx = ServiceContext(state=state, certs=CertStore(state.certs), access=AccessList(), lookup=lambda name: None)
        svc = SipService(ctx)
        await svc.start(SipService.view(cfg))
        try:
            loop = asyncio.get_running_loop()
            registered = await loop.run_in_executor(None, register, port, phone)
            assert svc.phone_udp is not None and svc.relay is not None
            proto = svc.phone_udp.get_protocol()
            assert isinstance(proto, _Udp)
            relay = svc.relay
            flow = Flow("p", "udp", *me)
            # the very objects made for the phone's first datagram: a table cleared wholesale
            # (main, at 4,096 sources) would have made new ones since
            first_flow, first_token = proto.flows.get(me), relay.signer._minted.get(flow)
            out = await loop.run_in_executor(None, flood_and_probe, port, phone)
            out["registered"] = registered
            out["tables"] = {
                "udp_flows": [len(proto.flows), proto.flows.max_keys, proto.flows.get(me) is first_flow],
                "minted": [len(relay.signer._minted), relay.signer._minted.max_keys,
                           relay.signer._minted.get(flow) is first_token],
                "rr_uris": [len(relay._rr_uris), relay._rr_uris.max_keys, None],
                "routes": [len(relay._routes), relay._routes.max_keys, None],
            }
            out["sip"] = svc.stats()
        finally:
            await svc.stop(1.0)
            phone.close()
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
