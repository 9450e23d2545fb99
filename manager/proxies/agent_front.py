"""The agents' two hot requests, as a bare ASGI handler in front of Django: config poll and heartbeat.

Every proxy keeps a config long-poll open and heartbeats every minute, and all of them again
right after a change. Through Django each request is a sync request cycle on a thread with its
own database work. Here, for a proxy whose key `FEED` knows and which has no action waiting:

- a config poll is answered from `FEED`'s memory: 304 when the proxy has the newest revision
  (after waiting up to `wait` seconds for a newer one), the newest config JSON otherwise;
- a heartbeat is checked (size, JSON, fields), queued in `heartbeats.BATCH` and answered at once;
  one from an address this process has not seen the proxy at is first given to the DNS updater
  (one small query), so a moved proxy's record starts updating before the answer, as in Django.

Both count in the request metrics under their URL names (`observe.count`), as Django's do. At
shutdown (ASGI lifespan) the heartbeats not written yet are written; at startup the publisher
thread (publisher.py) starts.

Everything else, and these two for a proxy the feed does not know yet, with an action pending or
with its key sent over plain HTTP from another host,
goes to Django unchanged, which answers them the slow, complete way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from typing import Any
from urllib.parse import parse_qs

from manager.observe import count
from manager.proxies.feed import FEED
from manager.proxies.heartbeats import BATCH, INTERVAL, dns_check, flush
from manager.proxies.permissions import key_transport_ok
from manager.proxies.publisher import PUBLISHER

CONFIG_PATH = "/api/v1/proxy/config"
HEARTBEAT_PATH = "/api/v1/proxy/heartbeat"
MAX_WAIT = 60.0
STOP_PUBLISH = 2.0  # seconds a stop waits for a publish under way (serve's grace is 3 s)
MAX_HEARTBEAT = 64 * 1024  # a heartbeat is a few hundred bytes; a larger body is refused (413)


def _header(scope: dict[str, Any], name: bytes) -> str:
    for k, v in scope["headers"]:
        if k == name:
            return v.decode("latin-1")
    return ""


async def _answer(send: Any, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None,
                  content_type: bytes = b"application/json") -> None:
    hdrs = list(headers or [])
    if body or status not in (204, 304):
        hdrs += [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


class Replay:
    """`receive` for Django after we watched it for a disconnect: what we read is handed on first."""

    def __init__(self, receive: Any) -> None:
        self.receive = receive
        self.seen: list[dict[str, Any]] = []

    async def until_disconnect(self) -> None:
        while (msg := await self.receive())["type"] != "http.disconnect":
            self.seen.append(msg)

    async def __call__(self) -> dict[str, Any]:
        return self.seen.pop(0) if self.seen else await self.receive()


DONE, WAITED, DJANGO = "done", "waited", "django"
log = logging.getLogger("manager.agent_front")


class Counted:
    """`send` that remembers the status it sent, for the request metrics."""

    def __init__(self, send: Any) -> None:
        self.send = send
        self.status: int | None = None

    async def __call__(self, msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            self.status = msg["status"]
        await self.send(msg)


async def _config(scope: dict[str, Any], receive: Replay, send: Any, proxy_id: int) -> str:
    """Answer the poll from memory (DONE); else Django answers, at once if we WAITED already."""
    try:
        wait = min(max(float(parse_qs(scope["query_string"].decode("latin-1")).get("wait", ["0"])[0]), 0.0),
                   MAX_WAIT)
    except ValueError:
        return DJANGO  # Django says what is wrong with it
    etag = _header(scope, b"if-none-match").strip().removeprefix("W/").strip('"')
    known = FEED.known(proxy_id)
    if known is None:
        return DJANGO
    if str(known) == etag and wait > 0:
        parking = asyncio.ensure_future(FEED.wait_newer(proxy_id, known, wait))
        gone = asyncio.ensure_future(receive.until_disconnect())
        await asyncio.wait({parking, gone}, return_when=asyncio.FIRST_COMPLETED)
        if gone.done():  # the proxy went away (or the server is stopping): stop waiting for it
            parking.cancel()
            return DONE
        gone.cancel()
        if FEED.actions_seen(proxy_id):
            return WAITED  # woken by an action: Django delivers it
    number, body = FEED.current(proxy_id)
    if number is None or FEED.actions_seen(proxy_id):
        return WAITED
    tag = [(b"etag", f'"{number}"'.encode())]
    if str(number) == etag:
        await _answer(send, 304, headers=tag)
        return DONE
    if body is None:
        return WAITED  # known only by number (published before the body was read): Django reads it
    await _answer(send, 200, body, tag)
    return DONE


async def _read_body(receive: Any, limit: int) -> bytes | None:
    """The request body, or None when it is larger than `limit` or the client went away."""
    chunks, size = [], 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return None
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not msg.get("more_body"):
            return b"".join(chunks)


def _text(value: Any) -> str | None:
    # ASCII without NUL: what the serializer's CharField would take as it is (but stripped)
    return value.strip() if type(value) is str and value.isascii() and "\x00" not in value else None


def plain_heartbeat(data: dict[str, Any]) -> dict[str, Any] | None:
    """What `HeartbeatIn` makes of a heartbeat of the plain shape an agent sends (each field absent
    or of its exact JSON type), or None for anything else, which the serializer judges. The
    serializer took 1.6 ms a heartbeat on the loop: 10,000 agents heartbeat right after a change."""
    out: dict[str, Any] = {}
    for name, value in data.items():
        if name == "applied_revision":
            if value is not None and type(value) is not int:
                return None
        elif name == "uptime":
            if type(value) not in (int, float) or not math.isfinite(value):
                return None
            value = float(value)
        elif name in ("version", "last_error"):
            if value is None and name == "last_error":
                pass
            elif (value := _text(value)) is None or (len(value) > 50 and name == "version"):
                return None
        elif name in ("services", "network", "certificate"):
            if type(value) is not dict and (value is not None or name == "services"):
                return None
            value = None if value is None else dict(value)
        else:
            continue  # a field the serializer does not know: left out, as it does
        out[name] = value
    return out


def _heartbeat_errors(data: Any) -> tuple[dict[str, Any], dict[str, list[str]]]:
    from manager.proxies.api import HeartbeatIn

    if not isinstance(data, dict):
        return {}, {"non_field_errors": ["expected a JSON object"]}
    plain = plain_heartbeat(data)
    if plain is not None:
        return plain, {}
    ser = HeartbeatIn(data=data)
    if not ser.is_valid():
        return {}, {k: [str(e) for e in v] for k, v in ser.errors.items()}
    return dict(ser.validated_data), {}


async def _heartbeat(scope: dict[str, Any], receive: Any, send: Any, proxy_id: int) -> None:
    body = await _read_body(receive, MAX_HEARTBEAT)
    if body is None:
        await _answer(send, 413, b'{"detail": "heartbeat body too large"}')
        return
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        await _answer(send, 400, b'{"detail": "JSON parse error"}')
        return
    valid, errors = _heartbeat_errors(data)
    if errors:
        await _answer(send, 400, json.dumps(errors).encode())
        return
    client = scope.get("client")
    source = client[0] if client else None
    await dns_check(proxy_id, source)
    BATCH.add(proxy_id, source, valid)
    await _answer(send, 200, json.dumps({"active_revision": FEED.known(proxy_id), "interval": INTERVAL,
                                         "actions": []}).encode())


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            PUBLISHER.start()  # global changes are published by its thread, not in the admin's request
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            # a publish under way finishes if it can (else the next start publishes it)
            await asyncio.to_thread(PUBLISHER.idle, STOP_PUBLISH)
            try:
                await flush()  # answered heartbeats are not lost with the process
            except Exception:  # noqa: BLE001 - the process ends either way; say what was lost
                log.exception("event=heartbeat_write_failed at=shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return


def in_front_of(django_app: Any) -> Any:
    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        client = scope.get("client") or (None,)
        # a key over plain HTTP from another host is not looked at here: Django refuses it (or trusts
        # a TLS-terminating proxy's header, SECURE_PROXY_SSL_HEADER, which this front does not read)
        if (scope["type"] == "http" and scope["path"] in (CONFIG_PATH, HEARTBEAT_PATH)
                and key_transport_ok(scope.get("scheme") == "https", client[0])):
            await FEED.ready()
            proxy_id = FEED.authenticate(_header(scope, b"authorization"))
            if proxy_id is not None and not FEED.actions_seen(proxy_id):
                started, counted = time.perf_counter(), Counted(send)
                if scope["path"] == CONFIG_PATH and scope["method"] == "GET":
                    replay = Replay(receive)
                    outcome = await _config(scope, replay, counted, proxy_id)
                    if outcome == DONE:
                        if counted.status is not None:  # None: the proxy went away while waiting
                            count("api-config", counted.status, started)
                        return
                    if outcome == WAITED:
                        scope = {**scope, "query_string": b""}  # Django answers at once: the waiting is done
                    await django_app(scope, replay, send)
                    return
                elif scope["path"] == HEARTBEAT_PATH and scope["method"] == "POST":
                    await _heartbeat(scope, receive, counted, proxy_id)
                    count("api-heartbeat", counted.status or 500, started)
                    return
        await django_app(scope, receive, send)

    return application
