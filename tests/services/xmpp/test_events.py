"""Issue #22 §4 for XMPP: one `event=xmpp_session_end` line per session, relayed or refused, with
its bytes each way and duration; refused ones held to the flood limit; and every reason the
service can refuse for has a zero series from the first scrape."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest

from proxyd.events import Limiter
from proxyd.metric_families import XMPP_REFUSAL_REASONS
from tests.services.xmpp.conftest import Proxy, start_proxy, wait_for, xmpp_config
from tests.services.xmpp.test_refusals import STREAMS, exchange

XMPP = Path(__file__).parents[3] / "services" / "xmpp"


def ends(caplog: pytest.LogCaptureFixture) -> list[dict[str, str]]:
    return [dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', r.getMessage())) for r in caplog.records
            if r.getMessage().startswith("event=xmpp_session_end ")]


async def test_a_relayed_session_ends_with_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            writer.write(chunk + chunk)  # twice as many bytes back: the two directions differ
        writer.close()

    backend = await asyncio.start_server(echo, "127.0.0.1", 0)
    cfg = xmpp_config(None)
    cfg["instances"][0]["xmpp"] = f"127.0.0.1:{backend.sockets[0].getsockname()[1]}"
    proxy = await start_proxy(tmp_path, cfg)
    sent = b"<?xml version='1.0'?><stream:stream to='a.test' " + STREAMS + b">" + b"<presence/>" * 10
    try:
        with caplog.at_level(logging.INFO, logger="services.xmpp"):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(sent)
            got = b""
            while len(got) < 2 * len(sent):
                got += await asyncio.wait_for(reader.read(65536), 10)
            writer.close()
            await wait_for(lambda: ends(caplog))
    finally:
        await proxy.service.stop(2.0)
        backend.close()
    (end,) = ends(caplog)
    assert {k: end[k] for k in ("service", "listener", "instance", "outcome", "bytes_in", "bytes_out")} == {
        "service": "xmpp", "listener": "starttls", "instance": "inst-a", "outcome": "relayed",
        "bytes_in": str(len(sent)), "bytes_out": str(2 * len(sent))}
    assert end["client"].startswith("127.0.0.1:") and float(end["duration"]) >= 0


async def test_refused_sessions_are_logged_within_the_flood_limit(bare_proxy: Proxy,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    bare_proxy.service.refusal_lines = Limiter(rate=1, burst=5)
    with caplog.at_level(logging.INFO, logger="services.xmpp"):
        t0 = asyncio.get_running_loop().time()
        for _ in range(40):
            assert await exchange(bare_proxy.port, b"GET / HTTP/1.1\r\n\r\n") == b""
        elapsed = asyncio.get_running_loop().time() - t0
        await wait_for(lambda: bare_proxy.service.stats()["by_reason"]["garbage"]["refusals"] == 40)
    refused = ends(caplog)
    assert 5 <= len(refused) <= 5 + elapsed + 1 < 40
    assert all(e["outcome"] == "refused" and e["reason"] == "garbage" and e["instance"] == "-" for e in refused)


def test_every_refusal_reason_is_known_up_front() -> None:
    """The peekers' and the relay's reasons, read from their source, are all in XMPP_REFUSAL_REASONS."""
    found: set[str] = set()
    for name in ("stream_header.py", "client_hello.py", "relay.py"):
        text = (XMPP / name).read_text()
        found |= set(re.findall(r'_Bad\("(\w+)"\)', text)) | set(re.findall(r'refuse\("(\w+)"', text))
        found |= set(re.findall(r'Refusal\("(\w+)"\)', text)) | set(re.findall(r'self\.refuse, "(\w+)"', text))
        for pair in re.findall(r'"(\w+)" if result\.sni else "(\w+)"', text):
            found |= set(pair)
    assert len(found) > 20
    assert found <= set(XMPP_REFUSAL_REASONS), found - set(XMPP_REFUSAL_REASONS)
