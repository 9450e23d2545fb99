"""The relay on both event loops (proxyd runs uvloop): bulk bytes intact both ways, with backpressure."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import uvloop

from tests.services.xmpp.conftest import start_proxy, xmpp_config

HEADER = (b"<?xml version='1.0'?><stream:stream to='a.test' xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


async def _backend(got: asyncio.Future[bytes]) -> asyncio.Server:
    """An XMPP-ish backend: reads what arrives (slowly, to exercise backpressure) and echoes it."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received = bytearray()
        while chunk := await reader.read(65536):
            received += chunk
            writer.write(chunk)
            await writer.drain()
        got.set_result(bytes(received))
        writer.close()
    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def _bulk(tmp_path: Path, size: int, proxy_protocol: bool) -> None:
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    server = await _backend(got)
    port = server.sockets[0].getsockname()[1]
    cfg = xmpp_config(None)
    cfg["instances"][0]["xmpp"] = f"127.0.0.1:{port}"
    cfg["instances"][0]["xmpp_proxy_protocol"] = proxy_protocol
    proxy = await start_proxy(tmp_path, cfg)
    payload = HEADER + os.urandom(size)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)

    async def send() -> None:
        for i in range(0, len(payload), 1 << 16):
            writer.write(payload[i:i + (1 << 16)])
            await writer.drain()
        writer.write_eof()

    sender = asyncio.create_task(send())
    echoed = await asyncio.wait_for(reader.read(-1), 60)
    await sender
    received = await asyncio.wait_for(got, 10)
    writer.close()
    await proxy.service.stop(2.0)
    server.close()
    prefix = received[:len(received) - len(payload)]
    assert hashlib.sha256(received[len(prefix):]).digest() == hashlib.sha256(payload).digest()
    assert echoed == received  # the backend echoed everything, PROXY header included
    if proxy_protocol:
        assert prefix.startswith(b"\r\n\r\n\x00\r\nQUIT\n\x21\x11") and prefix[16:20] == bytes([127, 0, 0, 1])
    else:
        assert prefix == b""
    stats = proxy.service.stats()["counters"]
    assert stats["bytes_client_to_backend"] == len(payload)
    assert stats["bytes_backend_to_client"] == len(received)


@pytest.mark.parametrize("loop", list(LOOPS))
@pytest.mark.parametrize("proxy_protocol", [False, True])
def test_bulk_relay_both_loops(tmp_path: Path, loop: str, proxy_protocol: bool) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(_bulk(tmp_path, 8 << 20, proxy_protocol))
