"""The floor under any uvloop SIP relay, for `bench_sip`: datagrams passed 1:1 with no SIP work.

Phone-side datagrams go to the PBX; the PBX's go back to the last phone source. No parsing, no
Via, no Record-Route (sipp sends every message to its remote address anyway), so this is not a
proxy: it measures what uvloop's datagram transport and the kernel cost per message in this
process model, which pforte pays too.

    python -m bench.sip_bare_forwarder LISTEN_PORT PBX_PORT    (both on 127.0.0.1)
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import uvloop


class _Phone(asyncio.DatagramProtocol):
    def __init__(self, relay: _Relay):
        self.relay = relay

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.relay.phone_addr = addr
        self.relay.to_pbx(data)


class _Pbx(asyncio.DatagramProtocol):
    def __init__(self, relay: _Relay):
        self.relay = relay

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.relay.to_phone(data)


class _Relay:
    def __init__(self, pbx_port: int):
        self.pbx = ("127.0.0.1", pbx_port)
        self.phone_addr: tuple[Any, ...] | None = None
        self.front: asyncio.DatagramTransport | None = None
        self.back: asyncio.DatagramTransport | None = None

    def to_pbx(self, data: bytes) -> None:
        assert self.back is not None
        self.back.sendto(data, self.pbx)

    def to_phone(self, data: bytes) -> None:
        if self.front is not None and self.phone_addr is not None:
            self.front.sendto(data, self.phone_addr)


async def _serve(port: int, pbx_port: int) -> None:
    loop = asyncio.get_running_loop()
    relay = _Relay(pbx_port)
    relay.front, _ = await loop.create_datagram_endpoint(lambda: _Phone(relay), local_addr=("127.0.0.1", port))
    relay.back, _ = await loop.create_datagram_endpoint(lambda: _Pbx(relay), local_addr=("127.0.0.1", 0))
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(_serve(int(sys.argv[1]), int(sys.argv[2])))
