"""HTTP client for the manager API: registration (sync, for the CLI) and config/heartbeat (async)."""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from proxyd import wirejson
from proxyd.agent.state import AgentState
from proxyd.wirejson import MAX_CONFIG_BYTES

# httpx logs every request at INFO; a long-poll every minute plus heartbeats would flood the log.
logging.getLogger("httpx").setLevel(logging.WARNING)

# The registration URL carries its one-time token in the fragment (`…/api/v1/register/#TOKEN`),
# which is never sent in a request line and so never lands in an access log; the token travels in
# the POST body. The older form with the token in the path is still read, and sent the same way.
REGISTER_PATH = re.compile(r"^(?P<prefix>.*)/api/v1/register(?:/(?P<token>[A-Za-z0-9_\-]+))?/?$")
TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")
CONNECT_TIMEOUT = 10.0
REQUEST_DEADLINE = 30.0  # seconds for a whole short request, answer included
#: heartbeat, registration, action and error answers are a few hundred bytes
SMALL_ANSWER_BYTES = 64 * 1024
#: a restore hands back a proxy's certs/ files (at most 32, each a PEM or a small key file), base64
MAX_RESTORE_BYTES = 2 * 1024 * 1024
MAX_ACTIONS = 32  # items read from one X-Pforte-Actions header
# Raw bytes are what the bounds count: ask for no content coding (a gzip bomb expands after them).
_HEADERS = {"Accept-Encoding": "identity"}


GOODBYE_TIMEOUT = 2.0  # a shutdown waits no longer than this for a manager that does not answer


class ManagerError(Exception):
    """The manager could not be reached or answered something unusable (retry later)."""


class Unauthorized(Exception):
    """The API key is unknown or revoked (HTTP 401): asking again will not help."""


class BadAnswer(ManagerError):
    """The manager (or whoever answered in its place) sent something we do not take: too large,
    too deep, not JSON, not the expected shape. Retried with backoff like an unreachable manager."""


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
        with httpx.Client(timeout=timeout, verify=tls_verify(ca_file), headers=_HEADERS) as http:
            request = http.build_request("POST", f"{base}/api/v1/register/",
                                         json={"token": token, "hostname": hostname, "version": version})
            raw = http.send(request, stream=True)
            try:
                resp = Answer.read_sync(raw, SMALL_ANSWER_BYTES)
            finally:
                raw.close()
    except httpx.HTTPError as exc:
        raise RegistrationError(f"cannot reach the manager at {base}: {_reason(exc)}") from exc
    except BadAnswer as exc:
        raise RegistrationError(f"the manager at {base} sent an unusable answer: {exc}") from exc
    detail = resp.detail()
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
        data = resp.json_object("registration")
        return AgentState(
            manager_url=str(data.get("manager_url") or base).rstrip("/"),
            proxy_id=int(data["proxy"]["id"]),
            proxy_name=str(data["proxy"].get("name", "")),
            api_key=str(data["api_key"]),
            ca_file=ca_file,
        )
    except (BadAnswer, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RegistrationError(f"the manager at {base} sent an unexpected answer: {exc!r}") from exc


def tls_verify(ca_file: str | None) -> ssl.SSLContext | bool:
    """Verify the manager against a private CA when one was given, else the system store."""
    return ssl.create_default_context(cafile=ca_file) if ca_file else True


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


@dataclass(frozen=True)
class Answer:
    """A manager's answer read to the end within its size bound (never more bytes than that)."""

    status_code: int
    reason_phrase: str
    headers: httpx.Headers
    content: bytes

    @classmethod
    def _check_head(cls, raw: httpx.Response, limit: int) -> None:
        # raw bytes are counted, so a compressed body could not expand past the bound: refuse any coding
        coding = raw.headers.get("content-encoding", "identity").strip().lower()
        if coding not in ("", "identity"):
            raise BadAnswer(f"HTTP {raw.status_code} answer has Content-Encoding {coding[:40]!r}")
        length = raw.headers.get("content-length")
        if length is not None and (not length.strip().isdigit() or int(length) > limit):
            raise BadAnswer(f"HTTP {raw.status_code} answer is larger than {limit} bytes")

    @classmethod
    def _done(cls, raw: httpx.Response, chunks: list[bytes]) -> Answer:
        return cls(raw.status_code, raw.reason_phrase, raw.headers, b"".join(chunks))

    @classmethod
    async def read(cls, raw: httpx.Response, limit: int) -> Answer:
        cls._check_head(raw, limit)
        chunks, size = [], 0
        async for chunk in raw.aiter_raw():
            size += len(chunk)
            if size > limit:
                raise BadAnswer(f"HTTP {raw.status_code} answer is larger than {limit} bytes")
            chunks.append(chunk)
        return cls._done(raw, chunks)

    @classmethod
    def read_sync(cls, raw: httpx.Response, limit: int) -> Answer:
        cls._check_head(raw, limit)
        chunks, size = [], 0
        for chunk in raw.iter_raw():
            size += len(chunk)
            if size > limit:
                raise BadAnswer(f"HTTP {raw.status_code} answer is larger than {limit} bytes")
            chunks.append(chunk)
        return cls._done(raw, chunks)

    def json(self, limit: int = SMALL_ANSWER_BYTES) -> Any:
        try:
            return wirejson.decode(self.content, max_bytes=limit)
        except wirejson.WireJsonError as exc:
            raise BadAnswer(f"HTTP {self.status_code} answer is {exc}") from exc

    def detail(self) -> str:
        """The `detail` of an error answer, shortened for a log line ("" when there is none)."""
        try:
            data = self.json()
        except BadAnswer:
            return ""
        return str(data.get("detail", ""))[:300] if isinstance(data, dict) else ""

    def json_object(self, what: str, limit: int = SMALL_ANSWER_BYTES) -> dict[str, Any]:
        """A 200/201 answer's JSON object; ManagerError for another status, BadAnswer for another body."""
        if self.status_code not in (200, 201):
            detail = self.detail()
            raise ManagerError(f"{what} answered HTTP {self.status_code}" + (f": {detail}" if detail else ""))
        data = self.json(limit)
        if not isinstance(data, dict):
            raise BadAnswer(f"{what} answer is not a JSON object")
        return data


@dataclass(frozen=True)
class ConfigAnswer:
    """A new revision (`body` set) or None body for 'unchanged' (304), and the pending actions."""

    body: bytes | None
    etag: str | None
    actions: tuple[tuple[str, int], ...] = ()


def parse_actions(header: str | None) -> tuple[tuple[str, int], ...]:
    """`backup/12, restore/13` -> (("backup", 12), ("restore", 13)); unknown items are skipped."""
    out = []
    for item in (header or "").split(",")[:MAX_ACTIONS]:
        kind, _, pk = item.strip().partition("/")
        if kind and pk.isdigit() and len(pk) <= 18:
            out.append((kind, int(pk)))
    return tuple(out)


class ManagerClient:
    """Long-poll for config and send heartbeats with the proxy's API key."""

    def __init__(self, agent: AgentState):
        self.base = agent.manager_url.rstrip("/")
        self._http = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {agent.api_key}", **_HEADERS},
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
            limit=MAX_CONFIG_BYTES, deadline=wait + 3 * CONNECT_TIMEOUT,
        )
        actions = parse_actions(resp.headers.get("x-pforte-actions"))
        if resp.status_code == 304:
            return ConfigAnswer(None, etag, actions)
        if resp.status_code != 200:
            raise ManagerError(f"config request answered HTTP {resp.status_code}")
        return ConfigAnswer(resp.content, resp.headers.get("etag"), actions)

    async def heartbeat(self, body: dict[str, Any]) -> dict[str, Any]:
        resp = await self._request("POST", "/api/v1/proxy/heartbeat", json=body)
        return resp.json_object("heartbeat")

    async def goodbye(self) -> None:
        """Tell the manager this agent is stopping, so it shows the proxy Offline at once."""
        await self._request("POST", "/api/v1/proxy/goodbye", timeout=httpx.Timeout(GOODBYE_TIMEOUT))

    async def upload_backup(self, action: int, files: dict[str, str]) -> None:
        resp = await self._request("POST", f"/api/v1/proxy/actions/{action}/backup", json={"files": files})
        if resp.status_code != 201:
            raise ManagerError(f"backup upload answered HTTP {resp.status_code}: {resp.detail()}")

    async def fetch_restore(self, action: int) -> dict[str, Any]:
        resp = await self._request("GET", f"/api/v1/proxy/actions/{action}/restore", limit=MAX_RESTORE_BYTES)
        return resp.json_object("restore request", MAX_RESTORE_BYTES)

    async def finish_action(self, action: int, error: str | None = None) -> None:
        resp = await self._request("POST", f"/api/v1/proxy/actions/{action}/done", json={"error": error})
        if resp.status_code not in (200, 404):  # 404: already finished (the other loop was first)
            raise ManagerError(f"action answer HTTP {resp.status_code}: {resp.detail()}")

    async def post_json(self, path: str, body: dict[str, Any]) -> tuple[int, str]:
        """(status, detail) of a small POST (proxyd/agent/acme_dns.py)."""
        resp = await self._request("POST", path, json=body)
        return resp.status_code, resp.detail()

    async def _request(self, method: str, path: str, *, limit: int = SMALL_ANSWER_BYTES,
                       deadline: float = REQUEST_DEADLINE, **kw: Any) -> Answer:
        """One request, its answer read incrementally up to `limit` bytes and within `deadline` seconds
        in all (httpx's timeouts are per read: a server dripping a byte now and then would hold us)."""
        request = self._http.build_request(method, self.base + path, **kw)
        try:
            async with asyncio.timeout(deadline):
                raw = await self._http.send(request, stream=True)
                try:
                    resp = await Answer.read(raw, limit)
                finally:
                    await raw.aclose()
        except httpx.HTTPError as exc:
            raise ManagerError(_reason(exc)) from exc
        except TimeoutError as exc:
            raise ManagerError(f"no complete answer within {deadline:.0f} s") from exc
        except AttributeError as exc:
            # httpcore asks anyio for the peer address of a connection uvloop has just closed (the
            # manager going away) and gets None for its socket: a lost connection, not our bug --
            # as an uncaught error it ended the agent and with it the whole proxy
            raise ManagerError(f"connection lost while it was opened ({exc})") from exc
        if resp.status_code == 401:
            raise Unauthorized(resp.detail() or "API key rejected")
        return resp


def revision_from_etag(etag: str | None) -> int | None:
    if not etag:
        return None
    value = etag.strip().removeprefix("W/").strip('"')
    return int(value) if value.isdigit() else None
