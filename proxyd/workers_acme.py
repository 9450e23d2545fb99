"""ACME with workers: the parent's one renewer, and what carries its work to every worker.

The parent (proxyd/workers.py) runs the only renewer: one account key, one order, one
`<state-dir>/acme/`. Each worker's `acme/` is a symlink to it, so a worker that applies a config
(or restarts) serves the issued pair kept there, as a single process does after a restart.

What must reach the workers while an order runs, and once it is issued, goes through one file,
`<state-dir>/workers/acme.json` (0600: it holds TLS-ALPN-01 challenge keys): a generation number,
the HTTP-01 tokens (answered by the router's plain-HTTP listeners, which every worker has) and the
TLS-ALPN-01 challenge certificates (answered by every worker's HTTPS listener). The parent writes
it, sends SIGUSR1 to each worker that answers on its control socket, and waits until each reports
that generation in its status (`acme_generation`); only then does the renewer tell the CA to
validate, so the CA's connection is answered whichever worker the kernel gives it to. A worker
that does not take it in time fails the order (it is retried on the usual backoff). On every
generation a worker also re-reads the kept pair: that is how an issued certificate goes live in
all of them (CertStore.use, the same hot swap as in one process).

An HTTP-01 listener of the renewer's own (no router listener on `acme_http_port`) is bound in the
parent only; nothing else binds that port, so no SO_REUSEPORT sharing can hand the CA's
connection to a process without the token. DNS-01 records are set by the parent's agent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from proxyd.acme_client import AcmeError
from proxyd.acme_task import acme_spec, kept_pair
from proxyd.tls import MAX_ALPN_CHALLENGES, write_private

if TYPE_CHECKING:
    from proxyd.daemon import Daemon

log = logging.getLogger("proxyd.acme")

#: how long every worker gets to take a generation (read one small file) before the order fails
TAKE_TIMEOUT = 15.0
#: a worker that answers but shows an older generation is signalled again this often (it may have
#: read the file just before it was replaced, or started between the write and the signal)
RESIGNAL_EVERY = 1.0


class WorkerLike(Protocol):
    id: int

    def alive(self) -> bool: ...

    def status(self) -> dict[str, Any] | None: ...

    def signal(self, sig: int) -> None: ...


class WorkerFanout:
    """The parent renewer's CertSink and Publisher: it keeps the challenges in flight and hands
    each change to every worker (see the module docstring)."""

    def __init__(self, path: Path, workers: Sequence[WorkerLike], loop: asyncio.AbstractEventLoop):
        self.path, self.workers, self.loop = path, workers, loop
        #: token -> key authorization (the renewer's Http01Tokens fills it; also what the parent's
        #: own HTTP-01 listener answers from)
        self.tokens: dict[str, str] = {}
        self.alpn: dict[str, tuple[str, str]] = {}
        self.generation = 0
        self._lock = asyncio.Lock()

    # -- CertSink -----------------------------------------------------------------------
    def add_alpn_challenge(self, name: str, cert_pem: str, key_pem: str) -> None:
        if len(self.alpn) >= MAX_ALPN_CHALLENGES and name.lower() not in self.alpn:
            raise ValueError("too many TLS-ALPN-01 challenges at once")
        self.alpn[name.lower()] = (cert_pem, key_pem)

    def drop_alpn_challenge(self, name: str) -> None:
        self.alpn.pop(name.lower(), None)

    def use(self, cert_pem: str | None, key_pem: str | None, fqdn: str, addresses: list[str]) -> None:
        """The parent serves nothing: the workers take the pair from acme/ on `issued()`."""

    # -- Publisher ----------------------------------------------------------------------
    def challenges_changed(self) -> None:
        error = asyncio.run_coroutine_threadsafe(self.publish(), self.loop).result(TAKE_TIMEOUT + 5)
        if error is not None:
            raise AcmeError(f"challenge not in every worker: {error}")

    async def issued(self) -> None:
        error = await self.publish()
        if error is not None:  # it is on disk: a worker that restarts, or takes a later generation, serves it
            log.warning("event=acme_fanout_incomplete error=%s", error)

    async def publish(self) -> str | None:
        """Write the next generation and wait for every worker; the first that failed, or None."""
        async with self._lock:
            self.generation += 1
            generation = self.generation
            tokens, alpn = dict(self.tokens), {name: list(pair) for name, pair in self.alpn.items()}
            tmp = self.path.with_suffix(".tmp")
            write_private(tmp, json.dumps({"generation": generation, "tokens": tokens, "alpn": alpn}))
            os.replace(tmp, self.path)
            results = await asyncio.gather(*(self._taken(w, generation) for w in self.workers))
        log.info("event=acme_fanout generation=%d tokens=%d alpn=%d workers=%d", generation, len(tokens),
                 len(alpn), len(self.workers))
        return next((r for r in results if r is not None), None)

    async def _taken(self, w: WorkerLike, generation: int) -> str | None:
        deadline, signalled = time.monotonic() + TAKE_TIMEOUT, 0.0
        while time.monotonic() < deadline:
            st = await asyncio.to_thread(w.status)
            # only a worker that answers has its SIGUSR1 handler: an earlier signal would end it
            if st is not None:
                if (st.get("acme_generation") or 0) >= generation:
                    return None
                if w.alive() and time.monotonic() - signalled >= RESIGNAL_EVERY:
                    w.signal(signal.SIGUSR1)
                    signalled = time.monotonic()
            await asyncio.sleep(0.05)
        return f"worker {w.id} did not take ACME generation {generation} within {TAKE_TIMEOUT:g} s"


class AcmeFollower:
    """In a worker: takes the parent's acme.json at start and on every SIGUSR1."""

    def __init__(self, path: Path, daemon: Daemon):
        self.path, self.daemon = path, daemon
        self.generation = 0
        self._alpn: dict[str, tuple[str, str]] = {}

    def start(self) -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self.take)
        self.take()

    def status(self) -> dict[str, Any]:
        return {"acme_generation": self.generation}

    def take(self) -> None:
        try:
            data = json.loads(self.path.read_text())
            generation, tokens, alpn = int(data["generation"]), dict(data["tokens"]), dict(data["alpn"])
        except FileNotFoundError:
            return  # nothing fanned out yet
        except (OSError, ValueError, KeyError, TypeError) as exc:  # written by our parent: a bug, not input
            log.error("event=acme_fanout_unreadable path=%s error=%r", self.path, exc)
            return
        ctx = self.daemon.ctx
        ctx.acme_tokens.clear()  # the dict the router's listeners hold: changed in place
        ctx.acme_tokens.update(tokens)
        for name in [n for n in self._alpn if n not in alpn]:
            ctx.certs.drop_alpn_challenge(name)
            del self._alpn[name]
        for name, (cert_pem, key_pem) in alpn.items():
            if self._alpn.get(name) != (cert_pem, key_pem):
                ctx.certs.add_alpn_challenge(name, cert_pem, key_pem)
                self._alpn[name] = (cert_pem, key_pem)
        self._serve_kept_pair()
        self.generation = generation

    def _serve_kept_pair(self) -> None:
        cfg = self.daemon.supervisor.config
        spec = acme_spec(cfg) if cfg is not None else None
        pair = kept_pair(self.daemon.state.root / "acme", spec) if spec is not None else None
        if spec is not None and pair is not None:
            self.daemon.ctx.certs.use(*pair, spec.names[0], [])
