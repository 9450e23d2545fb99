"""End-of-exchange events: one structured log line per HTTP request, XMPP session and media call.

A service calls one function where an exchange ends; the line's layout, the request id rule and
the flood limit live here, so the services' hot paths only pass values. Text logs get the
`key=value` line (values quoted when they need it); with `--log-format json` the same fields
become JSON keys (`proxyd.logs.JsonFormatter` reads `record.fields`).

Never in an event: a URL path or query (provisioning URLs carry tokens), a header value other
than a validated request id, a key or a token. What is logged about a client is its address.

Served requests are many: their lines are kept (at most `BATCH`) and written together as one log
record (`flush`, which the HTTP service's sweeper calls twice a second; each line keeps its own
time): a log record per request, through two handlers, cost more CPU than proxying the request.

Refusals are what an attacker controls the rate of, so their lines go through `Limiter`: at
most `REFUSALS_PER_SECOND` per service on average, bursts of `REFUSAL_BURST`; the rest are only
counted and reported as one `event=events_suppressed` line per service once the limit lets lines
through again (and at most every `SUMMARY_INTERVAL`). Ended exchanges that were served are not
limited: their rate is the service's real work, as with any access log.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from time import monotonic, time
from typing import Any

#: + ".http" / ".provisioning"; `proxyd run --request-log refusals` sets it to warning
HTTP_EVENTS_LOGGER = "pforte.events"
REQUEST_ID_HEADER = b"X-Request-ID"
#: an incoming X-Request-ID is kept when it is 1..64 of these characters (UUIDs, ULIDs, hex,
#: base64url, the `service-counter` ids load balancers make); anything else is replaced, so a
#: log line or a backend never gets what the proxy did not check
REQUEST_ID_RE = re.compile(rb"[A-Za-z0-9._:+=@-]{1,64}")
_REQUEST_ID_FIELD = re.compile(rb"(?im)^x-request-id:[ \t]*([^\r\n]*?)[ \t]*\r\n")

REFUSALS_PER_SECOND = 20.0
REFUSAL_BURST = 200
SUMMARY_INTERVAL = 10.0
BATCH = 256  # served-request lines written at once at most (flush() writes the rest)

_PLAIN = re.compile(r"[A-Za-z0-9._:/@+=,\[\]-]+")


def logfmt(value: object) -> str:
    """A value as it appears after `key=`: bare when it is a plain token, else double-quoted with
    quotes, backslashes and control characters escaped (a value can never end the line)."""
    s = value if isinstance(value, str) else ("-" if value is None else str(value))
    if s and _PLAIN.fullmatch(s):
        return s
    return '"' + s.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


def emit(log: logging.Logger, level: int, event: str, fields: dict[str, Any]) -> None:
    """One line `event=<event> k=v ...`; the fields also ride on the record for the JSON formatter."""
    if not log.isEnabledFor(level):
        return
    text = "event=" + event + "".join(f" {k}={logfmt(v)}" for k, v in fields.items())
    log.log(level, "%s", text, extra={"fields": {"event": event, **fields}})




class RequestIds:
    """Request ids for one process: `<8 random hex>-<counter in hex>` — unique without a system
    call per request (the prefix changes with every start)."""

    def __init__(self) -> None:
        self.prefix = os.urandom(4).hex().encode()
        self.n = 0

    def new(self) -> bytes:
        self.n += 1
        return b"%s-%x" % (self.prefix, self.n)

    def take(self, fields: bytes) -> tuple[bytes, bytes]:
        """(the request id, the header block to forward). A single valid X-Request-ID in `fields`
        (header lines, each ending in CRLF) is kept as it is; a missing, repeated or invalid one is
        replaced by a new id, added as the block's last line."""
        # every spelling of "x-request-id:" ends in one of these four: most blocks are passed over
        # by four substring searches, without a case-folded copy or a regex run per request
        maybe = b"-id:" in fields or b"-ID:" in fields or b"-Id:" in fields or b"-iD:" in fields
        found = _REQUEST_ID_FIELD.findall(fields) if maybe else []
        if len(found) == 1 and REQUEST_ID_RE.fullmatch(found[0]):
            return found[0], fields
        rid = self.new()
        if found:
            fields = _REQUEST_ID_FIELD.sub(b"", fields)
        return rid, b"%s%s: %s\r\n" % (fields, REQUEST_ID_HEADER, rid)


class Limiter:
    """A token bucket per service for refusal lines, and the count of those it held back."""

    def __init__(self, rate: float = REFUSALS_PER_SECOND, burst: int = REFUSAL_BURST,
                 clock: Callable[[], float] = monotonic) -> None:
        self.rate, self.burst, self.clock = rate, float(burst), clock
        self.tokens = float(burst)
        self.at = clock()
        self.suppressed = 0
        self.summary_at = self.at

    def allow(self, log: logging.Logger, service: str) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1.0:
            self.suppressed += 1
            if now - self.summary_at >= SUMMARY_INTERVAL:
                self._summary(log, service, now)
            return False
        self.tokens -= 1.0
        if self.suppressed:
            self._summary(log, service, now)
        return True

    def _summary(self, log: logging.Logger, service: str, now: float) -> None:
        emit(log, logging.WARNING, "events_suppressed",
             {"service": service, "kind": "refusal", "count": self.suppressed,
              "seconds": round(now - self.summary_at, 1)})
        self.suppressed = 0
        self.summary_at = now


# -- HTTP -------------------------------------------------------------------------------------

ROUTE_KINDS = ("instance", "application", "provisioning")
METHOD_CLASSES = ("read", "write", "other")
_METHOD_CLASS = {b"GET": "read", b"HEAD": "read", b"OPTIONS": "read",
                 b"POST": "write", b"PUT": "write", b"PATCH": "write", b"DELETE": "write"}
#: why a request was answered by the proxy itself — the edge's classes (docs/security.md)
REFUSAL_REASONS = ("non_canonical_path", "bad_authority", "framing", "limits", "timeout", "method", "not_found",
                   "rate_limited", "backend_busy", "other")
#: why a provisioning lookup was denied (every denial looks the same from outside)
PROVISIONING_DENIALS = ("malformed_path", "unknown_token", "unknown_instance", "bad_mac", "method",
                        "other_spelling", "backend_denied")


def refusal_reason(status: int, reason: str) -> str:
    """The bounded class of a refusal (`reason` is our own text, which may quote the client)."""
    at = reason.find("denied: ")  # provisioning's own denials, and its backend's ("backend answered 404: denied: ...")
    if at >= 0:
        why = reason[at + 8:].partition(" ")[0]
        return why if why in PROVISIONING_DENIALS else "other"
    if reason.startswith("non-canonical path"):
        return "non_canonical_path"
    if status == 421 or "authority" in reason or "Host" in reason or "userinfo" in reason:
        return "bad_authority"
    if status == 429:
        return "rate_limited"
    if status == 503:
        return "backend_busy"
    if status == 408:
        return "timeout"
    if status in (413, 414, 431):
        return "limits"
    if status == 405:
        return "method"
    if status == 404:
        return "not_found"
    if status in (400, 411, 417, 501, 505):
        return "framing"
    return "other"


def code_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "none"


def http_counter_keys(route: str) -> tuple[str, ...]:
    """The stats keys of one route kind that exist before any request (zero from the first scrape)."""
    out = [f"handled_{route}_{m}_{n}xx" for m in METHOD_CLASSES for n in range(1, 6)]
    reasons = PROVISIONING_DENIALS if route == "provisioning" else REFUSAL_REASONS
    out += [f"refusal_{route}_{r}" for r in reasons]
    return tuple(out)


class HttpEvents:
    """What one HTTP service counts and logs per ended request (`request_end`)."""

    def __init__(self, service: str, log: logging.Logger | None = None) -> None:
        self.service = service
        self.log = log or logging.getLogger(f"{HTTP_EVENTS_LOGGER}.{service}")
        self.ids = RequestIds()
        self.limiter = Limiter()
        self.counters: dict[str, int] = {}
        self._keys: dict[tuple[str, str, int], str] = {}  # (route, method class, status) -> counter key
        #: served-request lines not written yet: (time, text, the fields as (name, value) pairs)
        self.pending: list[tuple[float, str, tuple[tuple[str, Any], ...]]] = []

    def request_end(self, *, route: str, client: str, method: bytes | None, status: int, sent: int,
                    duration: float, request_id: bytes | None, instance: str | None = None,
                    reason: str | None = None, error: str | None = None, upstream: str | None = None) -> None:
        """Counts the request by route kind, method class and status class (and a refusal by its
        reason class), and logs it: refusals (`reason`) and backend failures (`error`) through the
        flood limit, the rest always."""
        mc = _METHOD_CLASS.get(method or b"", "other")
        key = self._keys.get((route, mc, status))
        if key is None:  # at most 3 routes x 3 classes x 500 statuses
            key = self._keys[(route, mc, status)] = f"handled_{route}_{mc}_{code_class(status)}"
        c = self.counters
        c[key] = c.get(key, 0) + 1
        refused = reason is not None
        why = None
        if reason is not None:
            why = refusal_reason(status, reason)
            rkey = f"refusal_{route}_{why}"
            c[rkey] = c.get(rkey, 0) + 1
        limited = refused or error is not None
        level = logging.WARNING if limited else logging.INFO
        if not self.log.isEnabledFor(level) or (limited and not self.limiter.allow(self.log, self.service)):
            return
        rid = (request_id or self.ids.new()).decode("ascii")  # its charset needs no quoting
        m = (method or b"-").decode("latin-1")
        inst = instance or "-"
        if not limited:  # the common case, kept short: one f-string; only names from config are quoted
            dur = f"{duration:.6f}"
            text = (f"event=http_request service={self.service} client={client} request_id={rid} route={route} "
                    f"instance={logfmt(inst)} method={logfmt(m)} status={status} bytes={sent} duration={dur}"
                    + (f" upstream={logfmt(upstream)}" if upstream else ""))
            pairs = (("event", "http_request"), ("service", self.service), ("client", client), ("request_id", rid),
                     ("route", route), ("instance", inst), ("method", m), ("status", status), ("bytes", sent),
                     ("duration", dur), *((("upstream", upstream),) if upstream else ()))
            self.pending.append((time(), text, pairs))
            if len(self.pending) >= BATCH:
                self.flush()
            return
        fields: dict[str, Any] = {
            "service": self.service, "client": client, "request_id": rid, "route": route, "instance": inst,
            "method": m, "status": status, "bytes": sent, "duration": f"{duration:.6f}"}
        if upstream:
            fields["upstream"] = upstream
        if refused:
            fields["refusal"] = why
            fields["reason"] = reason
        if error is not None:
            fields["error"] = error
        emit(self.log, level, "http_request", fields)

    def flush(self) -> None:
        """Write the served-request lines kept so far, as one record (one write per handler)."""
        if self.pending:
            batch, self.pending = self.pending, []
            self.log.info("%s", "\n".join(text for _, text, _ in batch), extra={"batch": batch})
