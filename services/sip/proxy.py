"""The stateless SIP relay core (RFC 3261 §16.11) — sans-IO: bytes and a source flow in,
actions out, time passed in.

Requests from phones are routed by Request-URI domain (then To domain) to an instance's `sip`
target; everything coming back (responses, requests from the PBX) follows authenticated flow
tokens we put into our own Via, Path and Record-Route, never addresses taken from a message.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import ip_address
from zlib import crc32

from services.sip.calls import IN_CALL, Calls
from services.sip.dialogs import Dialogs
from services.sip.flow import Flow, FlowSigner
from services.sip.lru import Lru
from services.sip.message import MAX_MESSAGE, SipError, parse, response, split_commas
from services.sip.protect import Amplification, AuthGuard, RateLimiter, scanner
from services.sip.reasonlog import ReasonLog
from services.sip.scan import Sip, Via, scan, tag
from services.sip.uri import Uri, UriError, add_uri_param, parse_name_addr, parse_uri

log = logging.getLogger("services.sip")
BRANCH = "z9hG4bKpf"
DIALOG_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})
#: requests counted by method (pforte_sip_requests_forwarded_total{method}); any other is "other",
#: so a method name from the wire never becomes a label value of its own
COUNTED_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "SUBSCRIBE", "NOTIFY", "REFER", "INFO",
                   "MESSAGE", "UPDATE", "PRACK", "PUBLISH")
_METHOD_KEY = {m: f"forwarded_method_{m}" for m in COUNTED_METHODS}
_CLASS_KEY = {(side, n): f"forwarded_from_{'phone' if side == 'p' else 'instance'}_{n}xx"
              for side in "pb" for n in range(1, 7)}
SDP_METHODS = frozenset({"INVITE", "UPDATE", "ACK", "PRACK"})
#: requests whose SDP (or whose response's SDP) starts a dialog pass (`Dialogs.room`); an ACK
#: only ends an offer of its INVITE's pass
_PASS_METHODS = frozenset({"INVITE", "UPDATE", "PRACK"})
#: How the params of our own Via start as we write them (`;branch=<BRANCH...>;pf=<token>`)
_OWN_START = ";branch=" + BRANCH
_BLAKE2B = hashlib.blake2b(digest_size=10)
_MAX_FORWARDS = [f"Max-Forwards: {n}" for n in range(256)]
#: seconds a phone is told to wait (Retry-After) when its PBX cannot be reached; the service
#: rests an unreachable TCP/TLS target as long
RETRY_AFTER = 5
#: Limits on a phone's request, each answered 400 with its reason (a log line says which):
#: Call-IDs of real UAs are 20-80 bytes, tags 8-40 (RFC 4475 has longer); a request crosses a
#: few proxies, has a Route set of one or two, registers a few Contacts. These bounds are well
#: above what real traffic (and RFC 4475's well-formed torture messages) carries and cap the
#: state (Call-ID, tags kept per call) and the work one message makes (each Via, Route, Contact
#: is read, and forwarded).
MAX_CALL_ID = 256
MAX_TAG = 256  # RFC 4475 longreq, well-formed, carries a 155-byte tag
MAX_VIA = 64  # RFC 4475 longreq, well-formed, carries 34
MAX_ROUTE = 16
MAX_CONTACT = 16
#: a phone's request carries Record-Route only from proxies in front of it (none, or one or two)
MAX_RECORD_ROUTE = 16
#: header lines in one message
MAX_HEADERS = 128
#: RFC 3261 §18.1.1: a request larger than 1,300 bytes (the path MTU unknown) goes over TCP when
#: the PBX offers it (`Relay.tcp_too`): its IP fragments would be lost by NATs and firewalls.
#: Measured as the relay builds it, before the media relay rewrites SDP (its c=/m= lines keep
#: about their length).
UDP_MAX = 1300
#: RFC 3325: phones are no trust domain: identity they assert is removed, in every spelling of
#: the name (case, whitespace before the colon; neither header has a compact form).
_IDENTITY = re.compile(rb"^[Pp]-(?:[Aa][Ss][Ss][Ee][Rr][Tt][Ee][Dd]|[Pp][Rr][Ee][Ff][Ee][Rr][Rr][Ee][Dd])-"
                       rb"[Ii][Dd][Ee][Nn][Tt][Ii][Tt][Yy][ \t]*:", re.M)
_IDENTITY_NAMES = frozenset({"p-asserted-identity", "p-preferred-identity"})
#: an Authorization or Proxy-Authorization header line, in any case
_CREDENTIALS = re.compile(rb"^(?:proxy-)?authorization[ \t]*:", re.M | re.I)
#: a digest nonce (not a cnonce) in a challenge or in credentials: the proof that a UDP source
#: received the challenge sent to its address (`Amplification`)
_NONCE = re.compile(r'(?<![a-z])nonce[ \t]*=[ \t]*"([^"]{1,256})"', re.I)
_CHALLENGES = ("www-authenticate", "proxy-authenticate")
#: refused initial INVITEs logged as call ends per second; beyond, counted
#: (`call_end_lines_suppressed`): a flood must not turn into a log flood
MAX_REFUSED_CALL_LINES = 50
#: phone requests remembered for challenge accounting (a request's challenge comes within
#: seconds; 4,096 covers every request in flight at the relay's full rate)
MAX_REMEMBERED = 4096
_FIELD = 0xFFFF  # a count in `Relay._challenges`' ints
#: Record-Route URIs per flow and Route set outcomes kept (`Lru`): the phones and PBXs calling
#: now; what a flood pushes out is computed again on its next call
MAX_CACHED = 4096


@dataclass(frozen=True)
class Target:
    transport: str
    host: str
    port: int


@dataclass(frozen=True)
class Local:
    """Our own address on one side, as written into Via/Record-Route/Path."""

    transport: str
    host: str
    port: int
    #: the start of our Via on this side, up to the branch value (built once, used per request)
    via: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "via", f"Via: SIP/2.0/{self.transport.upper()} {self.hostport()};branch=")

    def hostport(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(slots=True)
class Send:
    flow: Flow
    data: bytes
    call_id: str = ""  # set for relayed messages, so they can keep their order behind media steps
    #: counted against the byte budget of an unverified UDP phone (`Amplification`): all but the
    #: first transmission of a PBX's request, which answers nothing the phone's address sent
    counted: bool = True


@dataclass(slots=True)
class MediaStep:
    """SDP to hand to the media relay before `msg` is serialised and sent to `flow`."""

    op: str  # offer | answer
    call_id: str  # the dialog's key: the Call-ID, or another pass's of a spiral (`Dialogs.pass_key`)
    from_tag: str
    to_tag: str
    side: str
    source_ip: str
    msg: Sip
    flow: Flow
    request: bytes | None  # the request as received, answered by `Relay.refuse` on a MediaError
    src: Flow
    #: a phone's offer to an instance whose PBX refuses SRTP offers (`Relay.rtp_only`)
    instance_rtp_only: bool = False
    counted: bool = True  # as `Send.counted`


Action = Send | MediaStep


class Relay:
    def __init__(self, domains: dict[str, Target], phone: dict[str, Local], backend: dict[str, Local],
                 names: frozenset[str] = frozenset(), limiter: RateLimiter | None = None,
                 signer: FlowSigner | None = None):
        """`phone` and `backend`: our address on each side per transport (phones: udp and tcp on
        one port, or tls; PBXs: udp, tcp, tls), as Via, Record-Route and Path name it."""
        self.domains = domains
        self.phone, self.backend = phone, backend
        #: Record-Route URI per flow, and the outcome of a Route set per (Route lines, source side):
        #: both depend only on flows and our key, and repeat for every call of a phone/PBX pair
        self._rr_uris: Lru[Flow, str] = Lru(MAX_CACHED)
        self._routes: Lru[tuple[str, str], tuple[int, Flow | None, list[str]]] = Lru(MAX_CACHED)
        self.signer = signer or FlowSigner()
        self.limiter = limiter  # None: no per-source limit
        self.auth = AuthGuard()
        #: bytes to and from each UDP phone source until it proves it receives (`service` checks
        #: every datagram it sends to a phone against it)
        self.amp = Amplification()
        self._popped = 0  # Route values `_pop_own_routes` popped from the request at hand
        #: (Call-ID, CSeq) of a phone's request -> requests received | challenges sent << 16 |
        #: carried credentials << 32: a PBX's retransmitted 401/407 beyond one per request is
        #: absorbed towards a UDP phone (no amplification towards an unverified source), and only
        #: a request with credentials counts as a failed (or a successful) authentication; the
        #: first seen evicted first. One int, not a list: the cycle collector does not track it
        self._challenges: OrderedDict[tuple[str, str], int] = OrderedDict()
        self.dialogs = Dialogs()
        self.calls = Calls()
        #: whether a PBX flow over TCP/TLS cannot take messages now (its connect failed a moment
        #: ago): the service knows, requests to it get a 503 instead of silence
        self.unavailable: Callable[[Flow], bool] = _never
        #: PBX targets (transport, host, port) of instances with `rtp_only`
        self.rtp_only: frozenset[tuple[str, str, int]] = frozenset()
        #: (host, port) of udp PBX targets that take TCP too (`sip_offers_tcp`): requests over UDP_MAX go there
        self.tcp_too: frozenset[tuple[str, int]] = frozenset()
        #: PBX target (transport, host, port) -> instance name, for the call-end log line
        self.instances: dict[tuple[str, str, int], str] = {}
        #: refused initial INVITEs logged as call ends in the current second (`MAX_REFUSED_CALL_LINES`)
        self._refused_lines = [0.0, 0]
        self.counters: Counter[str] = Counter()
        self.reasons = ReasonLog(log)
        self.now = 0.0
        self.released: list[str] = []  # call ids whose media must be deleted
        locals_ = [*phone.values(), *backend.values()]
        self.own = frozenset(x.hostport() for x in locals_)
        self.names = frozenset(n.lower() for n in names) | {x.host for x in locals_}
        #: (transport, host, port) a Route URI names when it names us: a PBX may share our
        #: address on another port (the all-in-one layout), and its Route is not ours (RFC 3261 §16.4)
        self.own_routes = frozenset((x.transport, h, x.port) for x in locals_ for h in self.names)

    @property
    def domains(self) -> dict[str, Target]:
        return self._domains

    @domains.setter
    def domains(self, value: dict[str, Target]) -> None:  # swapped on reconfigure
        self._domains = value
        self._targets = {d: Flow("b", t.transport, t.host, t.port) for d, t in value.items()}
        self._target_hosts = frozenset(t.host for t in value.values())
        self._target_ports = frozenset((t.host, t.port) for t in value.values())

    # ---- entry point -------------------------------------------------------------------
    def receive(self, data: bytes, src: Flow, now: float) -> list[Action]:
        self.counters["received"] += 1
        self.now = now  # the clock of the log lines that say why a message goes nowhere
        if src.side == "p" and src.transport == "udp":
            self.amp.received(src, len(data))
        if data[:1] in (b"\r", b"\n") and not data.strip(b"\r\n"):
            self.counters["keepalives"] += 1
            return [Send(src, b"\r\n")] if data.startswith(b"\r\n\r\n") else []
        if len(data) > MAX_MESSAGE:
            return self._drop("too_large", src)
        if src.side == "p" and self.limiter is not None and not self.limiter.allow(src.ip, now):
            self.counters["dropped_rate_limited"] += 1
            if self.limiter.just_blocked:
                self.counters[f"{self.limiter.blocked_by}s_blocked"] += 1
                self.reasons.note(f"blocked_{self.limiter.blocked_by}", now, "event=sip_source_blocked by=%s "
                                  "src=%s seconds=%s", self.limiter.blocked_by, src.ip, self.limiter.block)
            else:
                self.reasons.note("rate_limited", now, "event=sip_drop reason=rate_limited by=%s src=%s:%s",
                                  self.limiter.blocked_by, src.ip, src.port)
            return []
        datagram = src.transport == "udp"
        msg = scan(data, datagram)
        if msg is None:  # unusual or broken: the full parser decides, its normal form is scanned
            try:
                full = parse(data, datagram=datagram)
            except SipError as exc:
                return self._bad(exc, src)
            self.counters["normalised"] += 1
            msg = scan(full.serialize(), False)
            if msg is None:  # parse accepted what scan cannot read: never forwarded
                return self._drop("unscannable", src)
        if msg.method is not None:
            if src.side == "p" and msg.ua is not None:
                sig = scanner(msg.ua)
                if sig is not None:
                    self.counters["scanner_" + sig.replace("-", "_")] += 1
                    return self._drop("scanner", src)
            return self._request(msg, src, now, data)
        return self._response(msg, src, now)

    def _drop(self, why: str, src: Flow) -> list[Action]:
        self.counters[f"dropped_{why}"] += 1
        self.reasons.note(why, self.now, "event=sip_drop reason=%s src=%s:%s", why, src.ip, src.port)
        return []

    def bad(self, exc: SipError, src: Flow) -> list[Action]:
        """The answer to a message the stream framer refused (413/513/400; its head parsed into
        `exc.partial` when it could): logged and counted like any malformed message."""
        return self._bad(exc, src)

    def _bad(self, exc: SipError, src: Flow) -> list[Action]:
        self.counters["malformed"] += 1
        self.reasons.note(f"malformed {exc.status} {exc.reason}", self.now,
                          "event=sip_malformed status=%s reason=%r src=%s:%s", exc.status, exc.reason, src.ip, src.port)
        req = exc.partial
        if req is None or not req.is_request or req.method == "ACK" or not req.get("Via"):
            return []
        self.counters[f"replied_{exc.status}"] += 1
        return [Send(src, response(req, exc.status, exc.reason, _to_tag(req.get("Call-ID") or "")).serialize())]

    def _reply(self, msg: Sip, src: Flow, why: str, status: int, reason: str,
               extra: tuple[str, ...] = ()) -> list[Action]:
        """A locally generated response (RFC 3261 §8.2.6): always to the source, never to a Via
        address; an ACK gets none. Logged with `why` either way."""
        self.reasons.note(why, self.now, "event=sip_refused reason=%s status=%s method=%s uri=%s call_id=%s "
                          "src=%s:%s%s", why, status, msg.method, msg.uri, msg.call_id, src.ip, src.port,
                          " (an ACK: dropped without a response)" if msg.method == "ACK" else "")
        if msg.method == "ACK":
            return []
        self.counters[f"replied_{status}"] += 1
        to = msg.to
        if msg.method == "INVITE" and ";tag=" not in to.replace(" ", ""):
            self._refused_call(msg, src, why, status)
        if ";tag=" not in to.replace(" ", ""):
            to += ";tag=" + _to_tag(msg.call_id)
        lines = [f"SIP/2.0 {status} {reason}"]
        lines += ["Via: " + msg.lines[i].partition(":")[2].strip() for i in dict.fromkeys(msg.via_idx)]
        lines += [f"From: {msg.from_}", f"To: {to}", f"Call-ID: {msg.call_id}", f"CSeq: {msg.cseq}", *extra]
        lines.append("Content-Length: 0\r\n\r\n")
        return [Send(src, "\r\n".join(lines).encode("latin-1"))]

    def _refused_call(self, msg: Sip, src: Flow, why: str, status: int) -> None:
        """The call-end line of an initial INVITE refused here: one per call, at most
        MAX_REFUSED_CALL_LINES a second (a flood of INVITEs is summed up by the ReasonLog)."""
        window = self._refused_lines
        if self.now - window[0] >= 1.0:
            window[0], window[1] = self.now, 0
        window[1] += 1
        if window[1] > MAX_REFUSED_CALL_LINES:
            self.counters["call_end_lines_suppressed"] += 1
            return
        target = self._targets.get(_host_of(msg.uri))
        instance = self.instances.get((target.transport, target.ip, target.port), "") if target else ""
        log.info("event=sip_call_end service=sip client=%s:%s instance=%s outcome=refused status=%s duration=0.000 "
                 "reason=%s call_id=%s", src.ip, src.port, instance or "-", status, why, msg.call_id)

    def log_call_ends(self) -> None:
        """One line per call that ended (BYE, failure, timer C, session timeout) since the last call."""
        for end in self.calls.ended:
            log.info("event=sip_call_end service=sip client=%s instance=%s outcome=%s status=%s duration=%.3f "
                     "reason=%s call_id=%s", end.client, end.instance or "-", end.outcome, end.status, end.duration,
                     "-" if end.outcome == "completed" else end.outcome, end.call_id)
        self.calls.ended.clear()

    def refuse(self, step: MediaStep, status: int, reason: str, extra: tuple[str, ...] = ()) -> list[Send]:
        """The response to a request whose media the media relay refused; `extra`: header lines
        ("Retry-After: 10")."""
        if step.request is None:
            return []
        self.counters[f"replied_{status}"] += 1
        req = parse(step.request)  # it passed once: the strict parser accepts it
        self.reasons.note(f"media_{status}", self.now, "event=sip_refused reason=media status=%s method=%s "
                          "call_id=%s src=%s:%s", status, req.method, step.call_id, step.src.ip, step.src.port)
        resp = response(req, status, reason, _to_tag(req.get("Call-ID") or ""))
        for line in extra:
            name, _, value = line.partition(":")
            resp.headers.append([name, value.strip()])
        return [Send(step.src, resp.serialize())]

    def unsent(self, data: bytes, phone: tuple[str, int] | None = None) -> list[str]:
        """A message the transport could not send (the PBX down, a phone's connection gone):
        when it is the INVITE that sets up a dialog nobody answered yet, that dialog is over, and
        its key is returned for its media to go back now, not at Timer C. `phone`: the phone it
        was sent to (else it went to a PBX, from the pass's first phone)."""
        if not data.startswith(b"INVITE "):
            return []
        try:
            call_id = parse(data).get("Call-ID") or ""
        except SipError:
            return []
        key = self.dialogs.pass_key(call_id, phone) if phone is not None else call_id
        d = self.dialogs.calls.get(key)
        if d is None or d.confirmed or d.to_tag or not self.dialogs.end(key):
            return []
        self.counters["unsent_invites_released"] += 1
        return [key]

    # ---- requests ----------------------------------------------------------------------
    def _request(self, msg: Sip, src: Flow, now: float, data: bytes) -> list[Action]:
        if msg.mf == 0:
            return self._reply(msg, src, "too_many_hops", 483, "Too Many Hops")
        if msg.proxy_require:
            return self._reply(msg, src, "proxy_require", 420, "Bad Extension",
                               ("Unsupported: " + ", ".join(msg.proxy_require),))
        if src.side == "p":
            if src.transport == "udp" and not self.amp.verified(src):
                self._prove_request(msg, src, data)
            refusal = self._limits(msg, src)
            if refusal is not None:
                return refusal
        if src.side == "p" and _IDENTITY.search(data) is not None:
            self._strip_identity(msg, src)
        if src.side == "p" and msg.method not in ("ACK", "CANCEL"):
            locked = self.auth.locked(_aor(msg.to if msg.method == "REGISTER" else msg.from_), src.ip, now)
            if locked is not None:
                self.counters["auth_locked_out"] += 1
                return self._reply(msg, src, f"auth_locked_out_{locked}", 403, "Forbidden")
        dest = self._destination(msg, src)  # pops the Route values naming us
        mark = self._loop_mark(msg)
        own, spiral = self.own, False
        for v in msg.vias:
            if BRANCH in v.params and v.hostport in own:  # we sent it on before: a loop or a spiral
                branch = v.param_dict().get("branch") or ""
                if branch.startswith(BRANCH) and branch.rpartition(".")[2] == mark:
                    self.counters["loops"] += 1
                    return self._reply(msg, src, "loop", 482, "Loop Detected")
                spiral = True  # changed on its way since (Request-URI, Route): forwarded
        if spiral:
            self.counters["spirals"] += 1
        if dest.__class__ is not Flow:  # (why, status, reason)
            return self._reply(msg, src, *dest)
        if msg.method == "INVITE" and not self.calls.known(msg.call_id) and not self.calls.room(self._unproven(src)):
            why = "calls_full" if len(self.calls) >= self.calls.max_calls else "calls_full_unproven"
            self.counters[why] += 1
            return self._reply(msg, src, why, 503, "Service Unavailable", (f"Retry-After: {RETRY_AFTER}",))
        if msg.method in _PASS_METHODS and not self.dialogs.room(self.dialogs.pass_key(
                msg.call_id, (src.ip, src.port) if src.side == "p" else (dest.ip, dest.port))):
            self.counters["dialogs_full"] += 1
            return self._reply(msg, src, "dialogs_full", 503, "Service Unavailable", (f"Retry-After: {RETRY_AFTER}",))
        if dest.transport != "udp" and dest.side == "b" and self.unavailable(dest):
            self.counters["unavailable_backend"] += 1
            return self._reply(msg, src, "backend_resting", 503, "Service Unavailable",
                               (f"Retry-After: {RETRY_AFTER}",))
        # edits in place first, insertions above existing lines last (they share the line slots)
        lines = msg.lines
        if msg.mf is None:
            lines.append("Max-Forwards: 69")  # RFC 3261 §16.6 step 3: 70 for RFC 2543 senders, less us
        else:
            lines[msg.mf_idx] = _MAX_FORWARDS[msg.mf - 1]
        top, top_idx = msg.vias[0], msg.via_idx[0]
        sent_by = top.sent_by
        inbound, client_via = _client_via(top, sent_by, src)
        msg.set_top_via(client_via)
        register = src.side == "p" and msg.method == "REGISTER"
        if src.side == "p" and msg.method != "ACK":
            self._count_request(msg, data)
        token = self.signer.mint(src)
        if register:
            self._contact_alias(msg, token)
        local = self._local(dest)
        branch = self._branch(msg, inbound, sent_by, client_via)
        msg.insert_before(top_idx, f"{local.via}{branch}.{mark};pf={token}")
        first = False  # a PBX's request to an unverified UDP phone, not retransmitted
        if dest.side == "p" and dest.transport == "udp" and not self.amp.verified(dest):
            # its response echoes our branch (with the method: a CANCEL shares the INVITE's)
            first = self.amp.remember(dest, f"b{msg.method}{branch}.{mark}")
            if not first:
                self.counters["absorbed_request_retransmissions"] += 1
                self.reasons.note("retransmitted_request", now, "event=sip_drop reason=retransmitted_request "
                                  "method=%s call_id=%s dst=%s:%s (once towards an unverified UDP phone)",
                                  msg.method, msg.call_id, dest.ip, dest.port)
                return []
        if register:  # Path (RFC 3327) with the phone's flow: requests to the phone come back over it
            msg.insert_before(msg.path_idx, f"Path: <sip:{token}@{local.hostport()};transport={local.transport};lr;ob>")
        if msg.method in DIALOG_METHODS and ";tag=" not in msg.to.replace(" ", ""):
            # Double Record-Route (RFC 5658): the lower names the side the request came from,
            # the upper the side it goes to; each carries that side's flow token.
            msg.insert_before(msg.rr_idx, "Record-Route: " + self._rr_uri(src))
            msg.insert_before(msg.rr_idx, "Record-Route: " + self._rr_uri(dest))
        if dest.side == "b" and dest.transport == "udp" and self.tcp_too and len(data) > UDP_MAX // 2 and \
                (dest.ip, dest.port) in self.tcp_too and len(msg.serialize()) > UDP_MAX:
            dest = self._over_tcp(msg, dest, top_idx, local)
        self.counters["forwarded_requests"] += 1
        self.counters[_METHOD_KEY.get(msg.method or "", "forwarded_method_other")] += 1
        actions = self._dialog_request(msg, src, dest, now, data)
        if first:
            for a in actions:
                a.counted = False
        return actions

    def _unproven(self, src: Flow) -> bool:
        """A UDP phone source that has not shown it receives what is sent to its address."""
        return src.side == "p" and src.transport == "udp" and not self.amp.verified(src)

    def _over_tcp(self, msg: Sip, dest: Flow, top_idx: int, local: Local) -> Flow:
        """The TCP flow to a PBX for a request too large for UDP, our Via naming our TCP side;
        `dest` itself while TCP to it rests after a failed connect (fragments beat a 503)."""
        tcp = self.backend.get("tcp")
        flow = Flow("b", "tcp", dest.ip, dest.port)
        if tcp is None or self.unavailable(flow):
            return dest
        msg.lines[top_idx] = msg.lines[top_idx].replace(local.via, tcp.via, 1)  # ours: inserted first on the line
        self.counters["udp_to_tcp"] += 1
        return flow

    def _prove_request(self, msg: Sip, src: Flow, data: bytes) -> None:
        """A UDP phone's request that echoes the To tag of a response sent to it (an ACK, an
        in-dialog request) or the nonce of a challenge sent to it proves that it receives."""
        key = src
        to_tag = tag(msg.to)
        if to_tag and self.amp.prove(key, "t" + to_tag):
            self.counters["udp_verifications"] += 1
        elif _CREDENTIALS.search(data) is not None:
            m = _NONCE.search(data.decode("latin-1"))
            if m is not None and self.amp.prove(key, "n" + m.group(1)):
                self.counters["udp_verifications"] += 1

    def _remember_response(self, msg: Sip, flow: Flow) -> None:
        """What a response to an unverified UDP phone carries that the phone echoes later."""
        key = flow
        to_tag = tag(msg.to)
        if to_tag:
            self.amp.remember(key, "t" + to_tag)
        if msg.status in (401, 407):
            for line in msg.lines:
                if line and line.partition(":")[0].rstrip(" \t").lower() in _CHALLENGES:
                    m = _NONCE.search(line)
                    if m is not None:
                        self.amp.remember(key, "n" + m.group(1))

    def _strip_identity(self, msg: Sip, src: Flow) -> None:
        lines = msg.lines
        for i, line in enumerate(lines):
            if line and line.partition(":")[0].strip(" \t").lower() in _IDENTITY_NAMES:
                lines[i] = ""
                self.counters["identity_removed"] += 1
                self.reasons.note("identity_removed", self.now, "event=sip_header_removed reason=identity_from_phone "
                                  "header=%r call_id=%s src=%s:%s", line.partition(":")[0], msg.call_id, src.ip,
                                  src.port)

    def _limits(self, msg: Sip, src: Flow) -> list[Action] | None:
        """A phone's request past a limit (400), or a stray one (481; an ACK dropped): the
        answer, else None."""
        why = None
        if len(msg.call_id) > MAX_CALL_ID:
            why = "call_id_too_long"
        elif " " in msg.call_id or "\t" in msg.call_id:  # RFC 3261 §25.1 word; and `Dialogs.pass_key` splits there
            why = "call_id_malformed"
        elif len(msg.vias) > MAX_VIA:
            why = "too_many_via"
        elif len(msg.lines) > MAX_HEADERS:
            why = "too_many_headers"
        elif msg.route_idx and _values(msg, msg.route_idx) > MAX_ROUTE:
            why = "too_many_route"
        elif msg.contact_idx and _values(msg, msg.contact_idx) > MAX_CONTACT:
            why = "too_many_contact"
        elif msg.rr_idx >= 0 and _record_routes(msg) > MAX_RECORD_ROUTE:
            why = "too_many_record_route"
        elif len(tag(msg.from_)) > MAX_TAG or len(tag(msg.to)) > MAX_TAG:
            why = "tag_too_long"
        if why is not None:
            self.counters[f"refused_{why}"] += 1
            return self._reply(msg, src, why, 400, "Bad Request (" + why.replace("_", " ") + ")")
        method = msg.method
        if (method in IN_CALL or method == "INVITE" and ";tag=" in msg.to.replace(" ", "")) and \
                not self.calls.known(msg.call_id):
            self.counters["refused_stray"] += 1
            return self._reply(msg, src, f"stray_{(method or '').lower()}", 481, "Call/Transaction Does Not Exist")
        return None

    def _destination(self, msg: Sip, src: Flow) -> Flow | tuple[str, int, str]:
        token_flow = self._pop_own_routes(msg, src)
        ruri = parse_uri(msg.uri)
        if src.side == "p":
            refusal = self._phone_uris(msg, src, ruri)
            if refusal is not None:
                return refusal
        if token_flow is not None:
            if ruri.scheme == "sips" and token_flow.transport != "tls":
                return ("sips_over_non_tls", 480, "Temporarily Unavailable")  # RFC 5630 §3.1.3
            return token_flow
        if msg.route_idx and src.side == "b":
            return ("route_not_ours", 403, "Forbidden")  # a PBX's request must come back over our Route
        if src.side == "p" and not self._host_allowed(ruri):  # an in-dialog one names the PBX's Contact
            return ("request_uri_not_allowed", 403, "Forbidden")
        alias = ruri.params.get("pf-flow")
        if alias:  # Contact alias: a PBX that ignored Path sends to the Contact we rewrote
            flow = self.signer.open(alias)
            if flow is not None and flow.side != src.side:
                return flow
        if src.side == "b":
            return ("no_flow", 404, "Not Found")  # neither our Route nor a Contact alias names a phone
        target = self._route_domain(msg, ruri.host)
        if target is None:
            self.counters["unknown_domain"] += 1
            return ("unknown_domain", 404, "Not Found")
        if target.transport not in self.backend:
            self.counters["unsupported_backend_transport"] += 1
            return ("unsupported_backend_transport", 503, "Service Unavailable")
        if ruri.scheme == "sips" and target.transport != "tls":
            return ("sips_over_non_tls", 480, "Temporarily Unavailable")  # never over a non-TLS hop
        for name, value in (("to", msg.to), ("from", msg.from_)):
            if not self._of_instance(value, target):
                self.counters["foreign_domain"] += 1
                return (f"{name}_domain_not_of_instance", 403, "Forbidden")
        return target

    def _of_instance(self, name_addr: str, target: Flow) -> bool:
        """Whether a To/From value names a domain of the instance at `target` (or one of our
        own names: it names no other instance)."""
        try:
            host = parse_name_addr(name_addr).uri.host.lower()
        except UriError:
            return False
        return self._targets.get(host) == target or host in self.names

    def _phone_uris(self, msg: Sip, src: Flow, ruri: Uri) -> tuple[str, int, str] | None:
        """Routing a phone may not choose: sips over a non-TLS hop (RFC 5630: 416), Route
        values left after ours on an initial request or without ours first (preloaded: 403).
        `maddr` is removed from the Request-URI (RFC 3261 §16.5: only the proxy chooses where a
        request goes)."""
        if ruri.scheme == "sips" and src.transport != "tls":
            return ("sips_over_non_tls", 416, "Unsupported URI Scheme")
        if msg.route_idx and (not self._popped or ";tag=" not in msg.to.replace(" ", "")):
            self.counters["preloaded_route"] += 1
            return ("preloaded_route", 403, "Forbidden")
        if any(k.lower() == "maddr" for k in ruri.params):
            ruri.params = {k: v for k, v in ruri.params.items() if k.lower() != "maddr"}
            msg.uri = str(ruri)
            msg.start = f"{msg.method} {msg.uri} SIP/2.0"
            self.counters["maddr_removed"] += 1
        return None

    def _host_allowed(self, uri: Uri) -> bool:
        """Whether an initial request's Request-URI host may be routed by domain: a name, our
        own address on our own ports, or an instance's PBX address; never loopback, internal
        hosts or third parties."""
        host = uri.host[1:-1] if uri.host.startswith("[") else uri.host
        if not is_ip(host.partition("%")[0]):
            return True  # a name: routed by the domain table, or refused as unknown
        if host in self._target_hosts and (uri.port is None or (host, uri.port) in self._target_ports):
            return True  # an instance's PBX by its address (loopback too: the all-in-one layout)
        if host in self.names:  # our own address: only on our own ports
            return uri.port is None or any(x.endswith(f":{uri.port}") for x in self.own)
        return False  # any other address (loopback, internal, a third party's) is not the instance's

    def _route_domain(self, msg: Sip, host: str) -> Flow | None:
        target = self._targets.get(host)
        if target is None and msg.method != "REGISTER" and (is_ip(host) or host in self.names):
            try:
                to_host = parse_name_addr(msg.to).uri.host
            except UriError:
                return None
            target = self._targets.get(to_host)
        return target

    def _pop_own_routes(self, msg: Sip, src: Flow) -> Flow | None:
        """Pop the leading Route values that name us; the flow of the other side if one carries it.
        `self._popped`: how many were popped."""
        self._popped = 0
        if not msg.route_idx:
            return None
        idx = msg.route_idx
        key = (msg.lines[idx[0]] if len(idx) == 1 else "\r\n".join([msg.lines[i] for i in idx]), src.side)
        known = self._routes.hit(key)
        if known is None:
            known = self._route_set(msg, src)
            self._routes.put(key, known)
        popped, found, rest = known
        self._popped = popped
        if popped:
            first = msg.route_idx[0]
            for i in msg.route_idx:
                msg.lines[i] = ""
            if rest:
                msg.lines[first] = "Route: " + ", ".join(rest)
            msg.route_idx = [first] if rest else []
        return found

    def _route_set(self, msg: Sip, src: Flow) -> tuple[int, Flow | None, list[str]]:
        """(how many leading Route values name us, the other side's flow if one carries it, the rest)."""
        values = [v for i in msg.route_idx for v in split_commas(msg.lines[i].partition(":")[2].strip(" \t"))]
        found: Flow | None = None
        popped = 0
        for value in values:
            try:
                uri = parse_name_addr(value).uri
            except UriError:
                break
            flow = self.signer.open(uri.user) if uri.user else None
            if flow is None and not self._names_us(uri):
                break
            popped += 1
            if flow is not None and flow.side != src.side:
                found = flow
        return popped, found, values[popped:]

    def _names_us(self, uri: Uri) -> bool:
        """Whether a Route URI without our token names one of our addresses: host, port and
        transport, with the defaults RFC 3263 gives an absent port or transport."""
        if uri.scheme == "sips":
            transports: tuple[str, ...] = ("tls",)
        else:
            t = (uri.params.get("transport") or "").lower()
            transports = (t,) if t else ("udp", "tcp")
        port = uri.port or (5061 if transports == ("tls",) else 5060)
        host = uri.host[1:-1] if uri.host.startswith("[") else uri.host
        own = self.own_routes
        return any((t, host, port) in own for t in transports)

    def _loop_mark(self, msg: Sip) -> str:
        """What our branch ends with (after a "."): a checksum of the request as we send it on,
        so one that comes back to us unchanged has looped and one changed on its way (a PBX
        that put a phone's Contact into the Request-URI and its Path into Route) is spiralling
        (RFC 3261 §16.3 step 4, §16.6 step 8). Its Request-URI and the Route values left once
        ours are popped, and what names the request: Call-ID, CSeq number (no method: a CANCEL
        and the ACK of a failure share the INVITE's branch) and From (no proxy changes it).
        Proxy-Require, the RFC's other input, is refused before (420). Max-Forwards and Via
        change on every hop. A CRC is enough: a forged mark only makes its sender's own request
        fail, and a spiral taken for a loop by chance is one in four billion."""
        idx = msg.route_idx
        routes = ", ".join([msg.lines[i].partition(":")[2].strip(" \t") for i in idx]) if idx else ""
        key = f"{msg.uri}|{routes}|{msg.call_id}|{msg.cseq.partition(' ')[0]}|{msg.from_}"
        return f"{crc32(key.encode('latin-1')):08x}"

    def _branch(self, msg: Sip, inbound: str, sent_by: str, client_via: str) -> str:
        if inbound.startswith("z9hG4bK") and len(inbound) > 7:
            key = inbound + sent_by
        else:  # RFC 3261 §16.11: no usable branch, hash what identifies the transaction
            key = "|".join([msg.uri, client_via, msg.from_, msg.to, msg.call_id, msg.cseq.split(" ")[0]])
        h = _BLAKE2B.copy()  # cheaper than a new hash object with its parameters
        h.update(key.encode("latin-1"))
        return BRANCH + h.hexdigest()

    def _local(self, flow: Flow) -> Local:
        side = self.phone if flow.side == "p" else self.backend
        local = side.get(flow.transport)
        # a token minted under another mode (the flow key outlives restarts): any of ours; the
        # service finds no socket for such a flow and counts it unreachable
        return local if local is not None else next(iter(side.values()))

    def _rr_uri(self, flow: Flow) -> str:
        uri = self._rr_uris.hit(flow)
        if uri is None:
            local = self._local(flow)
            uri = f"<sip:{self.signer.mint(flow)}@{local.hostport()};transport={local.transport};lr>"
            self._rr_uris.put(flow, uri)
        return uri

    def _contact_alias(self, msg: Sip, token: str) -> None:
        """Contact alias for PBXs that ignore Path: the phone's flow rides in each Contact URI.
        The parameter goes into the URI as the parser finds it: the header parameters after it
        (RFC 5626 `+sip.instance="<urn:uuid:...>"`) hold "<", ">" and "," of their own."""
        param = f"pf-flow={token}"
        for i in msg.contact_idx:
            values = split_commas(msg.lines[i].partition(":")[2].strip(" \t"))
            if values != ["*"]:  # the scanner checked each value with the same parser
                msg.lines[i] = "Contact: " + ", ".join([v if v == "*" else add_uri_param(v, param) for v in values])

    def _dialog_request(self, msg: Sip, src: Flow, dest: Flow, now: float, data: bytes) -> list[Action]:
        call_id, method = msg.call_id, msg.method
        if method == "INVITE":  # room was checked before: see `_request`
            caller, pbx = (src, dest) if src.side == "p" else (dest, src)
            self.calls.invite(call_id, now, f"{caller.ip}:{caller.port}",
                              self.instances.get((pbx.transport, pbx.ip, pbx.port), ""), self._unproven(src))
        elif method == "BYE":
            self.calls.end(call_id, now)
        else:
            self.calls.touch(call_id, now, src.side == "p" and not self._unproven(src))
        phone = (src.ip, src.port) if src.side == "p" else (dest.ip, dest.port)
        key = self.dialogs.pass_key(call_id, phone)  # a spiral's passes are dialogs of their own
        if method in ("BYE", "CANCEL"):
            if self.dialogs.end(key):
                self.released.append(key)
        elif method == "ACK":
            self.dialogs.touch(key, now, confirmed=True)
        if msg.body and method in SDP_METHODS and _is_sdp(msg):
            from_tag, to_tag = tag(msg.from_), tag(msg.to)
            op = self.dialogs.sdp_request(key, from_tag, method or "", now, phone)
            side = "phone" if src.side == "p" else "instance"
            request = None if method == "ACK" else data
            return [MediaStep(op, key, from_tag, to_tag, side, src.ip, msg, dest, request, src,
                              self._rtp_only(src, dest))]
        return [Send(dest, msg.serialize(), call_id)]

    # ---- responses ---------------------------------------------------------------------
    def _response(self, msg: Sip, src: Flow, now: float) -> list[Action]:
        token = _own_token(msg.vias[0])
        flow = self.signer.open(token) if token else None
        if flow is None or flow.side == src.side or len(msg.vias) < 2:
            return self._drop("stray_response", src)
        if src.side == "p" and src.transport == "udp" and not self.amp.verified(src):
            branch = msg.vias[0].param_dict().get("branch") or ""  # ours, as we sent it to this phone
            if self.amp.prove(src, f"b{msg.cseq_method}{branch}"):
                self.counters["udp_verifications"] += 1
        msg.set_top_via(None)  # our Via: the response goes to the flow it names
        if flow.side == "p" and flow.transport == "udp" and not self.amp.verified(flow):
            self._remember_response(msg, flow)
        self.counters["forwarded_responses"] += 1
        self.counters[_CLASS_KEY.get((src.side, msg.status // 100), "forwarded_from_other")] += 1
        call_id, method = msg.call_id, msg.cseq_method
        if flow.side == "p" and flow.transport == "udp" and msg.status in (401, 407) and not self._challenge_due(msg):
            self.counters["absorbed_retransmissions"] += 1
            self.reasons.note("retransmitted_challenge", now, "event=sip_drop reason=retransmitted_challenge "
                              "status=%s call_id=%s dst=%s:%s (one per request towards a UDP phone)", msg.status,
                              call_id, flow.ip, flow.port)
            return []
        if flow.side == "p" and method not in ("ACK", "CANCEL") and (msg.status in (401, 403, 407) or
                                                                     200 <= msg.status < 300):
            self._auth_outcome(msg, flow, now)
        if method == "INVITE" and msg.status >= 200:
            self.calls.final(call_id, msg.status, now)
        phone = (src.ip, src.port) if src.side == "p" else (flow.ip, flow.port)
        key = self.dialogs.pass_key(call_id, phone)
        if method == "INVITE" and msg.status >= 300:
            if self.dialogs.end(key):
                self.released.append(key)
        if msg.body and 100 < msg.status < 300 and method in SDP_METHODS and _is_sdp(msg):
            from_tag, to_tag = tag(msg.from_), tag(msg.to)
            op = self.dialogs.sdp_response(key, from_tag, to_tag, now, phone)
            side = "phone" if src.side == "p" else "instance"
            return [MediaStep(op, key, from_tag, to_tag, side, src.ip, msg, flow, None, src,
                              self._rtp_only(src, flow))]
        return [Send(flow, msg.serialize(), call_id)]

    def _count_request(self, msg: Sip, data: bytes) -> None:
        key = (msg.call_id, msg.cseq)
        t = self._challenges
        seen = t.get(key)
        if seen is None:
            if len(t) >= MAX_REMEMBERED:
                t.popitem(last=False)
            t[key] = (_CREDENTIALS.search(data) is not None) << 32 | 1
        elif seen & _FIELD < _FIELD:
            t[key] = seen + 1

    def _challenge_due(self, msg: Sip) -> bool:
        """Whether a 401/407 towards a UDP phone answers a request not answered yet."""
        key = (msg.call_id, msg.cseq)
        seen = self._challenges.get(key)
        if seen is None:
            return True  # its request is older than what we remember: let it through
        if seen >> 16 & _FIELD >= seen & _FIELD:
            return False
        self._challenges[key] = seen + (1 << 16)
        return True

    def _auth_outcome(self, msg: Sip, phone: Flow, now: float) -> None:
        """Count the PBX's 401/403/407 to a phone's request that carried credentials per AOR and
        per source (the challenge to a request without any is how digest starts, not a failure);
        a 2xx to one with credentials clears both (one without, an OPTIONS, proves nothing)."""
        seen = self._challenges.get((msg.call_id, msg.cseq))
        if seen is not None and not seen >> 32 and msg.status != 403:
            return
        aor = _aor(msg.to if msg.cseq_method == "REGISTER" else msg.from_)
        if msg.status >= 300:
            self.counters["auth_failures"] += 1
            started = self.auth.failed(aor, phone.ip, now)
            if started is not None:
                self.counters["auth_lockouts"] += 1
                log.warning("event=sip_auth_lockout by=%s aor=%s src=%s failures=%d seconds=%g", started, aor,
                            phone.ip, self.auth.per_aor if started == "aor" else self.auth.per_source,
                            self.auth._locked.seconds)
        else:
            self.auth.succeeded(aor, phone.ip)

    def _rtp_only(self, src: Flow, dest: Flow) -> bool:
        return src.side == "p" and bool(self.rtp_only) and (dest.transport, dest.ip, dest.port) in self.rtp_only

    def expire(self, now: float) -> list[str]:
        self.reasons.flush(now)
        if self.limiter is not None:
            self.limiter.expire(now)
        self.auth.expire(now)
        gone = self.calls.expire(now)
        if gone:
            self.counters["calls_expired"] += len(gone)
        return self.dialogs.expire(now)


def _never(flow: Flow) -> bool:
    return False


def _client_via(top: Via, sent_by: str, src: Flow) -> tuple[str, str]:
    """(the branch, the client's top Via with received and rport set: RFC 3581)."""
    p = top.params  # the common shape, `;branch=x` or `;branch=x;rport`: the text the general case gives
    n = p.count(";")
    if p.startswith(";branch="):
        if n == 1 and len(p) > 8:
            return p[8:], f"{sent_by}{p};received={src.ip};rport={src.port}"
        if n == 2 and p.endswith(";rport") and len(p) > 14:
            return p[8:-6], f"{sent_by}{p}={src.port};received={src.ip}"
    return _client_via_general(top, sent_by, src)


def _client_via_general(top: Via, sent_by: str, src: Flow) -> tuple[str, str]:
    params = dict(top.param_dict())
    inbound = params.get("branch") or ""
    params["received"], params["rport"] = src.ip, str(src.port)
    return inbound, sent_by + "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def _own_token(top: Via) -> str | None:
    """The flow token in our own Via (on top of a response), None if it is not ours."""
    p = top.params
    if p.startswith(_OWN_START) and p.count(";") == 2:  # as we wrote it: ;branch=...;pf=...
        i = p.find(";pf=")
        if i > 0:
            return p[i + 4:]
    return _own_token_general(top)


def _own_token_general(top: Via) -> str | None:
    params = top.param_dict()
    return params.get("pf") if (params.get("branch") or "").startswith(BRANCH) else None


def _to_tag(call_id: str) -> str:
    """The To tag of our own responses: stable per call so retransmissions get the same one."""
    return "pf" + hashlib.blake2b(call_id.encode("latin-1"), digest_size=4).hexdigest()


def _values(msg: Sip, idx: list[int]) -> int:
    """How many comma-separated values the lines `idx` carry (a comma in a quoted display name
    counts too: an over-count only matters near the limit, far above real traffic)."""
    lines = msg.lines
    return sum(lines[i].count(",") + 1 for i in idx)


def _record_routes(msg: Sip) -> int:
    """How many Record-Route values the message carries (the scanner keeps only the first line's
    index; the name has no compact form)."""
    lines = msg.lines
    return sum(lines[i].count(",") + 1 for i in range(msg.rr_idx, len(lines))
               if lines[i].partition(":")[0].rstrip(" \t").lower() == "record-route")


def _host_of(uri: str) -> str:
    try:
        return parse_uri(uri).host.lower()
    except UriError:
        return ""


def _aor(name_addr: str) -> str:
    """user@host of a From/To value (lower case host), the value itself if it does not parse."""
    try:
        uri = parse_name_addr(name_addr).uri
    except UriError:
        return name_addr
    return f"{uri.user}@{uri.host.lower()}"


def is_ip(host: str) -> bool:
    """An IP literal (brackets allowed), not a DNS name."""
    if host[-1:].isalpha() and ":" not in host:  # a name (an IPv4 address ends in a digit): no exception to pay
        return False
    try:
        ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def _is_sdp(msg: Sip) -> bool:
    return msg.ctype.lower().startswith("application/sdp")

