"""HTTP client for the manager API: registration (sync, for the CLI) and config/heartbeat (async)."""

from __future__ import annotations

import logging
import re
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from proxyd.agent.state import AgentState

# httpx logs every request at INFO; a long-poll every minute plus heartbeats would flood the log.
logging.getLogger("httpx").setLevel(logging.WARNING)

# The registration URL carries its one-time token in the fragment (`…/api/v1/register/#TOKEN`),
# which is never sent in a request line and so never lands in an access log; the token travels in
# the POST body. The older form with the token in the path is still read, and sent the same way.
REGISTER_PATH = re.compile(r"^(?P<prefix>.*)/api/v1/register(?:/(?P<token>[A-Za-z0-9_\-]+))?/?$")
TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")
CONNECT_TIMEOUT = 10.0


GOODBYE_TIMEOUT = 2.0  # a shutdown waits no longer than this for a manager that does not answer


class ManagerError(Exception):
    """The manager could not be reached or answered something unusable (retry later)."""


class Unauthorized(Exception):
    """The API key is unknown or revoked (HTTP 401): asking again will not help."""


class RegistrationError(Exception):
    """Registration failed; the message is meant for the operator."""


def parse_registration_url(url: str) -> tuple[str, str]:
    """(manager base URL, token) from a registration URL; RegistrationError if it is not one."""
    parts = urlsplit(url.strip())
    match = REGISTER_PATH.match(parts.path)
    token = (match["token"] if match else None) or parts.fragment
    if parts.scheme not in ("http", "https") or not parts.netloc or match is None or not TOKEN.match(token or ""):
        raise RegistrationError(
            "this is not a registration URL (expected https://MANAGER/api/v1/register/#TOKEN as shown by the manager)"
        )
    return f"{parts.scheme}://{parts.netloc}{match['prefix']}", token


def split_registration_url(url: str) -> str:
    """The manager base URL from a registration URL; RegistrationError if it is not one."""
    return parse_registration_url(url)[0]


def register(url: str, hostname: str, version: str, timeout: float = 15.0, ca_file: str | None = None) -> AgentState:
    """Use a one-time registration URL; returns what has to be stored in the state dir."""
    base, token = parse_registration_url(url)
    try:
        resp = httpx.post(f"{base}/api/v1/register/", json={"token": token, "hostname": hostname, "version": version},
                          timeout=timeout, verify=tls_verify(ca_file))
    except httpx.HTTPError as exc:
        raise RegistrationError(f"cannot reach the manager at {base}: {_reason(exc)}") from exc
    detail = _detail(resp)
    if resp.status_code == 404:
        raise RegistrationError("unknown registration URL: the manager does not know this token (check for typos)")
    if resp.status_code == 410:
        if "used" in detail:
            raise RegistrationError("this registration URL was already used; create a new registration in the manager")
        raise RegistrationError("this registration URL has expired; create a new registration in the manager")
    if resp.status_code == 409:
        raise RegistrationError(f"the manager refused: {detail or 'the proxy already has a registered agent'}")
    if resp.status_code != 201:
        reason = detail or resp.reason_phrase
        raise RegistrationError(f"the manager at {base} answered HTTP {resp.status_code}: {reason}")
    try:
        data = resp.json()
        return AgentState(
            manager_url=str(data.get("manager_url") or base).rstrip("/"),
            proxy_id=int(data["proxy"]["id"]),
            proxy_name=str(data["proxy"].get("name", "")),
            api_key=str(data["api_key"]),
            ca_file=ca_file,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise RegistrationError(f"the manager at {base} sent an unexpected answer: {exc!r}") from exc


def tls_verify(ca_file: str | None) -> ssl.SSLContext | bool:
    """Verify the manager against a private CA when one was given, else the system store."""
    return ssl.create_default_context(cafile=ca_file) if ca_file else True


def _detail(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return ""
    return str(data.get("detail", "")) if isinstance(data, dict) else ""


def _json_object(resp: httpx.Response, what: str) -> dict[str, Any]:
    """A 200 answer's JSON object ({} for any other JSON value); ManagerError otherwise."""
    if resp.status_code != 200:
        detail = _detail(resp)
        raise ManagerError(f"{what} answered HTTP {resp.status_code}" + (f": {detail}" if detail else ""))
    try:
        data = resp.json()
    except ValueError as exc:
        raise ManagerError(f"{what} answer is not JSON") from exc
    return data if isinstance(data, dict) else {}


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


@dataclass(frozen=True)
class ConfigAnswer:
    """A new revision (`body` set) or None body for 'unchanged' (304), and the pending actions."""

    body: bytes | None
    etag: str | None
    actions: tuple[tuple[str, int], ...] = ()


def parse_actions(header: str | None) -> tuple[tuple[str, int], ...]:
    """`backup/12, restore/13` -> (("backup", 12), ("restore", 13)); unknown items are skipped."""
    out = []
    for item in (header or "").split(","):
        kind, _, pk = item.strip().partition("/")
        if kind and pk.isdigit():
            out.append((kind, int(pk)))
    return tuple(out)


class ManagerClient:
    """Long-poll for config and send heartbeats with the proxy's API key."""

    def __init__(self, agent: AgentState):
        self.base = agent.manager_url.rstrip("/")
        self._http = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {agent.api_key}"},
            timeout=httpx.Timeout(CONNECT_TIMEOUT),
            verify=tls_verify(agent.ca_file),
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def fetch_config(self, etag: str | None, wait: float) -> ConfigAnswer:
        headers = {"If-None-Match": etag} if etag else {}
        resp = await self._request(
            "GET", "/api/v1/proxy/config", params={"wait": str(int(wait))}, headers=headers,
            timeout=httpx.Timeout(CONNECT_TIMEOUT, read=wait + CONNECT_TIMEOUT),
        )
        actions = parse_actions(resp.headers.get("x-pforte-actions"))
        if resp.status_code == 304:
            return ConfigAnswer(None, etag, actions)
        if resp.status_code != 200:
            raise ManagerError(f"config request answered HTTP {resp.status_code}")
        return ConfigAnswer(resp.content, resp.headers.get("etag"), actions)

    async def heartbeat(self, body: dict[str, Any]) -> dict[str, Any]:
        resp = await self._request("POST", "/api/v1/proxy/heartbeat", json=body)
        return _json_object(resp, "heartbeat")

    async def goodbye(self) -> None:
        """Tell the manager this agent is stopping, so it shows the proxy Offline at once."""
        await self._request("POST", "/api/v1/proxy/goodbye", timeout=httpx.Timeout(GOODBYE_TIMEOUT))

    async def upload_backup(self, action: int, files: dict[str, str]) -> None:
        resp = await self._request("POST", f"/api/v1/proxy/actions/{action}/backup", json={"files": files})
        if resp.status_code != 201:
            raise ManagerError(f"backup upload answered HTTP {resp.status_code}: {_detail(resp)}")

    async def fetch_restore(self, action: int) -> dict[str, Any]:
        resp = await self._request("GET", f"/api/v1/proxy/actions/{action}/restore")
        return _json_object(resp, "restore request")

    async def finish_action(self, action: int, error: str | None = None) -> None:
        resp = await self._request("POST", f"/api/v1/proxy/actions/{action}/done", json={"error": error})
        if resp.status_code not in (200, 404):  # 404: already finished (the other loop was first)
            raise ManagerError(f"action answer HTTP {resp.status_code}: {_detail(resp)}")

    async def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            resp = await self._http.request(method, self.base + path, **kw)
        except httpx.HTTPError as exc:
            raise ManagerError(_reason(exc)) from exc
        if resp.status_code == 401:
            raise Unauthorized(_detail(resp) or "API key rejected")
        return resp


def revision_from_etag(etag: str | None) -> int | None:
    if not etag:
        return None
    value = etag.strip().removeprefix("W/").strip('"')
    return int(value) if value.isdigit() else None
