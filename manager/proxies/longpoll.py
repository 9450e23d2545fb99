"""The waiting part of the config long-poll, as a bare ASGI handler in front of Django.

A thousand proxies renew their long-polls every wait period. Through Django each renewal costs a
request cycle with two thread hops (its sync request signals) even when nothing changed, and a
wave of renewals held heartbeats up for seconds in the load bench. Here a renewal from a proxy
whose key was checked recently and which already has the newest revision waits on `notify`
without touching Django; when the wait ends empty it answers 304 itself, and when something new
arrives it hands the request to the Django view with `wait` removed, which answers at once.
Every other request goes to Django unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs

from manager.proxies import notify
from manager.proxies.api import MAX_WAIT, authenticate_cached
from manager.proxies.permissions import key_transport_ok

CONFIG_PATH = "/api/v1/proxy/config"


def _header(scope: dict[str, Any], name: bytes) -> str:
    for k, v in scope["headers"]:
        if k == name:
            return v.decode("latin-1")
    return ""


async def park(scope: dict[str, Any]) -> tuple[bool, int] | None:
    """-> (something new arrived, revision the proxy has), or None when Django must answer."""
    try:
        wait = min(float(parse_qs(scope["query_string"].decode("latin-1")).get("wait", ["0"])[0]), MAX_WAIT)
    except ValueError:
        return None
    if not wait > 0:
        return None
    client = scope.get("client") or (None,)
    if not key_transport_ok(scope.get("scheme") == "https", client[0]):
        return None  # Django refuses it (or trusts a TLS-terminating proxy's header: SECURE_PROXY_SSL_HEADER)
    proxy_id = authenticate_cached(_header(scope, b"authorization"))
    if proxy_id is None:
        return None
    known = notify.known(proxy_id)
    if known is None or _header(scope, b"if-none-match").strip().strip('"') != str(known):
        return None
    if notify.actions_seen(proxy_id):
        return None  # the view looks for actions not yet delivered
    return await notify.wait_newer(proxy_id, known, wait), known


def in_front_of(django_app: Any) -> Any:
    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == CONFIG_PATH and scope["method"] == "GET":
            seen: list[dict[str, Any]] = []  # what we read while watching for a disconnect, replayed to Django

            async def disconnected() -> None:
                while (msg := await receive())["type"] != "http.disconnect":
                    seen.append(msg)

            async def replay() -> dict[str, Any]:
                return seen.pop(0) if seen else await receive()

            parking = asyncio.ensure_future(park(scope))
            gone = asyncio.ensure_future(disconnected())
            await asyncio.wait({parking, gone}, return_when=asyncio.FIRST_COMPLETED)
            if gone.done():  # the proxy went away (or is shutting down): stop waiting for it
                parking.cancel()
                return
            gone.cancel()
            parked = parking.result()
            if parked is not None:
                woke, known = parked
                if not woke:
                    await send({"type": "http.response.start", "status": 304,
                                "headers": [(b"etag", f'"{known}"'.encode())]})
                    await send({"type": "http.response.body", "body": b""})
                    return
                scope = {**scope, "query_string": b""}
            await django_app(scope, replay, send)
            return
        await django_app(scope, receive, send)

    return application
