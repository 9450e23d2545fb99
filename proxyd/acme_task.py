"""The asyncio side of ACME: sleep as proxyd/acme_schedule.py says, issue in a worker thread, swap.

State in the state dir (`<state>/acme/`): `account.key` (0600), `cert.pem` + `key.pem` (0600) of the
certificate in use, `state.json` (the schedule). A restart reads them and carries on: a kept,
unexpired certificate is used at once and renewed when its 2/3 point comes.
The new certificate goes live through CertStore.use(), the same swap as a config change: handshakes
after it get the new one, established connections keep theirs; the old pair stays current until
the new one is installed.

TLS-ALPN-01 is answered by the HTTPS listener (CertStore.alpn_challenges, proxyd/tls_accept.py).
HTTP-01 is answered by the router when one of its plain-HTTP listeners has `http_port`
(ServiceContext.acme_tokens), else by a tiny listener on `http_port` that exists only while an order is in
flight and answers nothing but /.well-known/acme-challenge/<token> (404 otherwise, 4 KiB and 5 s
per request at most).

With workers (`proxyd run --workers N`) the one renewer runs in the parent, which serves no
traffic: its challenges and the issued pair reach every worker through a `Publisher`
(proxyd/workers_acme.py), so the CA's connection is answered whichever worker it lands on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from proxyd import acme_client
from proxyd.acme_schedule import AcmeState, after_failure, after_success, degraded, next_step
from proxyd.config import ProxyConfig, acme_http_listener
from proxyd.tls import check_pair, covers, key_type, write_private

log = logging.getLogger("proxyd.acme")

REQUEST_LIMIT = 4096  # a challenge GET is one short line and a few headers
REQUEST_TIMEOUT = 5.0
DEGRADED = "certificate: ACME renewal keeps failing and the certificate expires within 14 days"


@dataclass(frozen=True)
class AcmeSpec:
    directory: str
    email: str | None
    names: tuple[str, ...]
    key_type: str
    http_host: str
    http_port: int
    #: the CA bundle that verifies the directory's HTTPS (True: the system's)
    ca_bundle: str | bool = True
    challenge: str = "http-01"
    #: HTTP-01 only: False when a plain-HTTP listener of the router has http_port and answers
    own_http_listener: bool = True


def acme_spec(cfg: ProxyConfig) -> AcmeSpec | None:
    """What the renewer of cfg asks the CA for; None when cfg is not in mode acme."""
    t = cfg.tls
    if t.mode != "acme" or t.acme_directory is None:
        return None
    names = tuple(dict.fromkeys((cfg.proxy.fqdn, *t.acme_names)))
    return AcmeSpec(t.acme_directory, t.acme_email, names, t.key_type, cfg.bind_address, t.acme_http_port,
                    t.acme_ca_bundle or True, t.acme_challenge, acme_http_listener(cfg))


def _load_state(directory: Path) -> AcmeState:
    try:
        return AcmeState.from_json((directory / "state.json").read_text())
    except (OSError, ValueError, TypeError):
        return AcmeState()


def kept_pair(directory: Path, spec: AcmeSpec) -> tuple[str, str] | None:
    """The issued pair kept in directory when it is intact, unexpired and fits spec (names, key type)."""
    try:
        cert, key = (directory / "cert.pem").read_text(), (directory / "key.pem").read_text()
    except OSError:
        return None
    if check_pair(cert, key) or (_load_state(directory).not_after or 0) <= time.time():
        return None
    if key_type(cert) != spec.key_type or not all(covers(cert, n) for n in spec.names):
        return None
    return cert, key


class CertSink(acme_client.ChallengeCerts, Protocol):
    """Where TLS-ALPN-01 challenge certificates and the issued pair go: a CertStore (one process),
    or the parent's record of what it fans out to its workers (proxyd/workers_acme.py)."""

    def use(self, cert_pem: str | None, key_pem: str | None, fqdn: str, addresses: list[str]) -> Any: ...


class Publisher(Protocol):
    """Makes what the renewer changed live in the processes that serve traffic (the workers)."""

    def challenges_changed(self) -> None:
        """Blocking, from the issuance thread: returns once every worker answers the challenges now
        held (and no longer the removed ones); raises AcmeError when one does not."""

    async def issued(self) -> None:
        """The new pair is in the renewer's directory: every worker swaps to it."""


class _Published:
    """A responder whose every change is published before the CA is told to validate."""

    def __init__(self, inner: acme_client.Responder, publisher: Publisher):
        self.inner, self.publisher, self.kind = inner, publisher, inner.kind

    def put(self, name: str, chall: Any, account: Any) -> None:
        self.inner.put(name, chall, account)
        self.publisher.challenges_changed()

    def remove(self, name: str, chall: Any) -> None:
        self.inner.remove(name, chall)
        self.publisher.challenges_changed()


def _unmanaged(name: str, value: str, present: bool) -> None:
    raise acme_client.AcmeError("DNS-01 needs the manager (it holds the DNS account): this proxyd runs unmanaged")


class AcmeRenewer:
    def __init__(self, state_dir: Path, certs: CertSink, spec: AcmeSpec, tokens: dict[str, str] | None = None,
                 dns: Callable[[str, str, bool], None] | None = None, publisher: Publisher | None = None,
                 process: str = "single"):
        """tokens: the dict the router's plain-HTTP listeners answer HTTP-01 from (ServiceContext.acme_tokens);
        dns: sets/removes a DNS-01 TXT record (ServiceContext.acme_dns), None when no manager can;
        publisher: with workers, what carries challenges and the issued pair to them; process: which
        process this renewer runs in, for status and metrics ("single" or "parent")."""
        self.dir = state_dir
        self.publisher, self.process = publisher, process
        self.dns = dns
        self.certs = certs
        self.spec = spec
        self.tokens = acme_client.Http01Tokens(tokens)
        self.state = self._load_state()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False

    # -- kept state -----------------------------------------------------------------
    def _load_state(self) -> AcmeState:
        return _load_state(self.dir)

    def _save_state(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(self.state.to_json())
        tmp.replace(self.dir / "state.json")

    def kept_pair(self) -> tuple[str, str] | None:
        return kept_pair(self.dir, self.spec)

    # -- status ---------------------------------------------------------------------
    def status(self) -> dict[str, object]:
        s = self.state
        return {"names": list(self.spec.names), "issuer": s.issuer, "not_after": s.not_after,
                "last_attempt": s.last_attempt, "last_error": s.last_error, "failures": s.failures,
                "retry_at": s.retry_at, "degraded": degraded(s, time.time()),
                "process": self.process, "pid": os.getpid()}

    # -- the loop -------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def update(self, spec: AcmeSpec) -> None:
        """A new config: other names or key type need a new certificate now."""
        if (spec.names, spec.key_type, spec.directory) != (self.spec.names, self.spec.key_type, self.spec.directory):
            self.state = AcmeState(last_attempt=self.state.last_attempt)
        self.spec = spec
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            wait = next_step(self.state, time.time())
            if wait > 0:
                self._wake.clear()
                # asyncio.timeout, not wait_for: 3.11's wait_for loses a cancel that meets a wake-up
                try:
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                continue
            await self.attempt()

    async def attempt(self) -> None:
        """One issuance; the outcome lands in the state (and the certificate store on success)."""
        spec, now = self.spec, time.time()
        responder: acme_client.Responder = self.tokens
        if spec.challenge == "tls-alpn-01":
            responder = acme_client.AlpnCerts(self.certs)
        if spec.challenge == "dns-01":
            responder = acme_client.Dns01Records(self.dns or _unmanaged)
        elif self.publisher is not None:  # a DNS record is the DNS's: no worker answers it
            responder = _Published(responder, self.publisher)
        try:
            own = spec.challenge == "http-01" and spec.own_http_listener
            async with self._http01() if own else contextlib.nullcontext():
                issued = await asyncio.to_thread(
                    acme_client.issue, spec.directory, self.dir / "account.key", spec.email,
                    list(spec.names), spec.key_type, responder, spec.ca_bundle)
        except (acme_client.AcmeError, OSError) as exc:
            retry_after = getattr(exc, "retry_after", None)
            self.state = after_failure(self.state, now, str(exc)[:300], random.random(), retry_after)
            self._save_state()
            log.warning("event=acme_failed names=%s error=%r failures=%d retry_in=%.0f",
                        ",".join(spec.names), self.state.last_error, self.state.failures,
                        (self.state.retry_at or now) - now)
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        write_private(self.dir / "key.pem", issued.key_pem)
        (self.dir / "cert.pem").write_text(issued.fullchain_pem)
        self.certs.use(issued.fullchain_pem, issued.key_pem, spec.names[0], [])
        self.state = after_success(self.state, now, issued.not_before, issued.not_after, issued.issuer)
        self._save_state()
        log.info("event=acme_issued names=%s issuer=%r not_after=%.0f seconds=%.1f", ",".join(spec.names),
                 issued.issuer, issued.not_after, time.time() - now)
        if self.publisher is not None:  # after the state: a worker's kept_pair() reads not_after from it
            await self.publisher.issued()

    # -- HTTP-01 --------------------------------------------------------------------
    def _http01(self) -> _Http01Listener:
        return _Http01Listener(self.tokens, self.spec.http_host, self.spec.http_port)


class _Http01Listener:
    def __init__(self, tokens: acme_client.Http01Tokens, host: str, port: int):
        self.tokens, self.host, self.port = tokens, host, port
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> _Http01Listener:
        self.server = await asyncio.start_server(self._serve, self.host, self.port, limit=REQUEST_LIMIT)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            method, _, rest = head.partition(b" ")
            path = rest.partition(b" ")[0].decode("ascii", "replace")
            body = self.tokens.answer(path) if method == b"GET" else None
            if body is None:
                writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            else:
                data = body.encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
                             b"connection: close\r\n\r\n%s" % (len(data), data))
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
