"""The stateless SIP relay core (RFC 3261 §16.11) — sans-IO: bytes and a source flow in,
actions out, time passed in.

Requests from phones are routed by Request-URI domain (then To domain) to an instance's `sip`
target; everything coming back (responses, requests from the PBX) follows authenticated flow
tokens we put into our own Via, Path and Record-Route, never addresses taken from a message.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass
from ipaddress import ip_address

from services.sip.dialogs import Dialogs
from services.sip.flow import Flow, FlowSigner
from services.sip.message import MAX_MESSAGE, Message, SipError, Via, parse, parse_via, response
from services.sip.protect import RateLimiter, is_scanner
from services.sip.uri import UriError, parse_name_addr, parse_uri

log = logging.getLogger("services.sip")
BRANCH = "z9hG4bKpf"
DIALOG_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})
SDP_METHODS = frozenset({"INVITE", "UPDATE", "ACK", "PRACK"})


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

    def hostport(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass
class Send:
    flow: Flow
    data: bytes
    call_id: str = ""  # set for relayed messages, so they can keep their order behind media steps


@dataclass
class MediaStep:
    """SDP to hand to the media relay before `msg` is serialised and sent to `flow`."""

    op: str  # offer | answer
    call_id: str
    from_tag: str
    to_tag: str
    side: str
    source_ip: str
    msg: Message
    flow: Flow
    request: Message | None  # answer MediaError with a response to this request
    src: Flow


Action = Send | MediaStep


class Relay:
    def __init__(self, domains: dict[str, Target], phone: Local, backend: dict[str, Local],
                 names: frozenset[str] = frozenset(), limiter: RateLimiter | None = None,
                 signer: FlowSigner | None = None):
        self.domains = domains
        self.phone, self.backend = phone, backend
        self.signer = signer or FlowSigner()
        self.limiter = limiter or RateLimiter()
        self.dialogs = Dialogs()
        self.counters: Counter[str] = Counter()
        self.released: list[str] = []  # call ids whose media must be deleted
        own = {phone.hostport()} | {b.hostport() for b in backend.values()}
        self.own = frozenset(own)
        self.names = frozenset(n.lower() for n in names) | {phone.host} | {b.host for b in backend.values()}

    # ---- entry point -------------------------------------------------------------------
    def receive(self, data: bytes, src: Flow, now: float) -> list[Action]:
        self.counters["received"] += 1
        if not data.strip(b"\r\n"):
            self.counters["keepalives"] += 1
            return [Send(src, b"\r\n")] if data.startswith(b"\r\n\r\n") else []
        if len(data) > MAX_MESSAGE:
            return self._drop("too_large", src)
        if src.side == "p" and not self.limiter.allow(src.ip, now):
            self.counters["dropped_rate_limited"] += 1
            if self.limiter.just_blocked:
                self.counters["sources_blocked"] += 1
                log.warning("event=sip_source_blocked src=%s seconds=%s", src.ip, self.limiter.block)
            return []
        try:
            msg = parse(data, datagram=src.transport == "udp")
        except SipError as exc:
            return self._bad(exc, src)
        if msg.is_request:
            if src.side == "p" and is_scanner(msg.get("User-Agent")):
                return self._drop("scanner", src)
            return self._request(msg, src, now)
        return self._response(msg, src, now)

    def _drop(self, why: str, src: Flow) -> list[Action]:
        self.counters[f"dropped_{why}"] += 1
        log.info("event=sip_drop reason=%s src=%s:%s", why, src.ip, src.port)
        return []

    def _bad(self, exc: SipError, src: Flow) -> list[Action]:
        self.counters["malformed"] += 1
        log.info("event=sip_malformed status=%s reason=%r src=%s:%s", exc.status, exc.reason, src.ip, src.port)
        req = exc.partial
        if req is None or not req.is_request or req.method == "ACK" or not req.get("Via"):
            return []
        return self._reply(req, src, exc.status, exc.reason)

    def _reply(self, req: Message, src: Flow, status: int, reason: str,
               extra: list[list[str]] | None = None) -> list[Action]:
        """A locally generated response: always to the source address (never to a Via address)."""
        if req.method == "ACK":
            return []
        self.counters[f"replied_{status}"] += 1
        resp = response(req, status, reason, to_tag="pf" + hashlib.blake2b(
            (req.get("Call-ID") or "").encode("latin-1"), digest_size=4).hexdigest())
        resp.headers += extra or []
        return [Send(src, resp.serialize())]

    # ---- requests ----------------------------------------------------------------------
    def _request(self, msg: Message, src: Flow, now: float) -> list[Action]:
        mf = msg.get("Max-Forwards")
        if mf is None:
            msg.set("Max-Forwards", "70")  # RFC 3261 §16.6 step 3 (RFC 2543 senders)
        elif int(mf) == 0:
            return self._reply(msg, src, 483, "Too Many Hops")
        if msg.get("Proxy-Require"):
            tags = ", ".join(msg.all("Proxy-Require"))
            return self._reply(msg, src, 420, "Bad Extension", [["Unsupported", tags]])
        vias = [parse_via(v) for v in msg.all("Via")]
        if any((v.params.get("branch") or "").startswith(BRANCH) and f"{v.host}:{v.port}" in self.own for v in vias):
            return self._reply(msg, src, 482, "Loop Detected")
        dest = self._destination(msg, src)
        if isinstance(dest, tuple):
            return self._reply(msg, src, *dest)
        msg.set("Max-Forwards", str(int(msg.get("Max-Forwards") or "70") - 1))
        self._stamp_client_via(msg, vias[0], src)
        self._add_via(msg, vias[0], src, dest)
        if src.side == "p" and msg.method == "REGISTER":
            self._add_path(msg, src, dest)
        if msg.method in DIALOG_METHODS and ";tag=" not in (msg.get("To") or "").replace(" ", ""):
            self._record_route(msg, src, dest)
        self.counters["forwarded_requests"] += 1
        return self._dialog_request(msg, src, dest, now)

    def _destination(self, msg: Message, src: Flow) -> Flow | tuple[int, str]:
        token_flow = self._pop_own_routes(msg, src)
        if token_flow is not None:
            return token_flow
        if msg.get("Route") and src.side == "b":
            return (403, "Forbidden")
        ruri = parse_uri(msg.uri)
        alias = ruri.params.get("pf-flow")
        if alias:  # Contact alias: a PBX that ignored Path sends to the Contact we rewrote
            flow = self.signer.open(alias)
            if flow is not None and flow.side != src.side:
                return flow
        if src.side == "b":
            return (404, "Not Found")
        target = self._route_domain(msg, ruri.host)
        if target is None:
            self.counters["unknown_domain"] += 1
            return (404, "Not Found")
        if target.transport not in self.backend:
            self.counters["unsupported_backend_transport"] += 1
            return (503, "Service Unavailable")
        return Flow("b", target.transport, target.host, target.port)

    def _route_domain(self, msg: Message, host: str) -> Target | None:
        target = self.domains.get(host)
        if target is None and msg.method != "REGISTER" and (_is_ip(host) or host in self.names):
            try:
                to_host = parse_name_addr(msg.get("To") or "").uri.host
            except UriError:
                return None
            target = self.domains.get(to_host)
        return target

    def _pop_own_routes(self, msg: Message, src: Flow) -> Flow | None:
        """Pop the Route values that name us; the flow of the other side if one carries it."""
        found: Flow | None = None
        while True:
            value = msg.get("Route")
            if value is None:
                return found
            try:
                uri = parse_name_addr(value).uri
            except UriError:
                return found
            flow = self.signer.open(uri.user) if uri.user else None
            if flow is None and uri.host not in self.names:
                return found
            msg.pop_first("Route")
            if flow is not None and flow.side != src.side:
                found = flow

    def _stamp_client_via(self, msg: Message, v: Via, src: Flow) -> None:
        v.params["received"] = src.ip
        v.params["rport"] = str(src.port)
        for h in msg.headers:
            if h[0] == "Via":
                h[1] = str(v)
                break

    def _add_via(self, msg: Message, top: Via, src: Flow, dest: Flow) -> None:
        local = self._local(dest)
        branch = self._branch(msg, top)
        token = self.signer.mint(src)
        msg.insert("Via", f"SIP/2.0/{local.transport.upper()} {local.hostport()};branch={branch};pf={token}")

    def _branch(self, msg: Message, top: Via) -> str:
        v = msg.all("Via")[0]  # the client's Via (stamped); ours is inserted after this
        inbound = top.params.get("branch") or ""
        if inbound.startswith("z9hG4bK") and len(inbound) > 7:
            key = inbound + v.split(";", 1)[0]
        else:  # RFC 3261 §16.11: no usable branch, hash what identifies the transaction
            key = "|".join([msg.uri, v, msg.get("From") or "", msg.get("To") or "", msg.get("Call-ID") or "",
                            (msg.get("CSeq") or "").split(" ")[0]])
        return BRANCH + hashlib.blake2b(key.encode("latin-1"), digest_size=10).hexdigest()

    def _local(self, flow: Flow) -> Local:
        return self.phone if flow.side == "p" else self.backend[flow.transport]

    def _rr_uri(self, flow: Flow) -> str:
        local = self._local(flow)
        return f"<sip:{self.signer.mint(flow)}@{local.hostport()};transport={local.transport};lr>"

    def _record_route(self, msg: Message, src: Flow, dest: Flow) -> None:
        # Double Record-Route (RFC 5658): the lower names the side the request came from,
        # the upper the side it goes to; each carries that side's flow token.
        msg.insert("Record-Route", self._rr_uri(src))
        msg.insert("Record-Route", self._rr_uri(dest))

    def _add_path(self, msg: Message, src: Flow, dest: Flow) -> None:
        local = self._local(dest)
        tok = self.signer.mint(src)
        msg.insert("Path", f"<sip:{tok}@{local.hostport()};transport={local.transport};lr;ob>")
        for h in msg.headers:  # Contact alias for PBXs that ignore Path
            if h[0] == "Contact" and h[1].strip() != "*" and "," not in h[1]:
                h[1] = _add_uri_param(h[1], f"pf-flow={tok}")

    def _dialog_request(self, msg: Message, src: Flow, dest: Flow, now: float) -> list[Action]:
        call_id = msg.get("Call-ID") or ""
        if msg.method in ("BYE", "CANCEL"):
            if self.dialogs.end(call_id):
                self.released.append(call_id)
        elif msg.method == "ACK":
            self.dialogs.touch(call_id, now, confirmed=True)
        if msg.body and msg.method in SDP_METHODS and _is_sdp(msg):
            from_tag, to_tag = _tag(msg.get("From")), _tag(msg.get("To"))
            op = self.dialogs.sdp_request(call_id, from_tag, msg.method or "", now)
            side = "phone" if src.side == "p" else "instance"
            return [MediaStep(op, call_id, from_tag, to_tag, side, src.ip, msg, dest, msg, src)]
        return [Send(dest, msg.serialize(), call_id)]

    # ---- responses ---------------------------------------------------------------------
    def _response(self, msg: Message, src: Flow, now: float) -> list[Action]:
        top = parse_via(msg.all("Via")[0])
        token = top.params.get("pf")
        flow = self.signer.open(token) if token and (top.params.get("branch") or "").startswith(BRANCH) else None
        if flow is None or flow.side == src.side:
            return self._drop("stray_response", src)
        msg.pop_first("Via")
        if not msg.get("Via"):
            return self._drop("stray_response", src)
        self.counters["forwarded_responses"] += 1
        num_method = (msg.get("CSeq") or "").split()
        call_id = msg.get("Call-ID") or ""
        if num_method[-1] == "INVITE" and msg.status >= 300:
            if self.dialogs.end(call_id):
                self.released.append(call_id)
        if msg.body and 100 < msg.status < 300 and num_method[-1] in SDP_METHODS and _is_sdp(msg):
            from_tag, to_tag = _tag(msg.get("From")), _tag(msg.get("To"))
            op = self.dialogs.sdp_response(call_id, from_tag, to_tag, now)
            side = "phone" if src.side == "p" else "instance"
            return [MediaStep(op, call_id, from_tag, to_tag, side, src.ip, msg, flow, None, src)]
        return [Send(flow, msg.serialize(), call_id)]

    def expire(self, now: float) -> list[str]:
        self.limiter.expire(now)
        return self.dialogs.expire(now)


def _is_ip(host: str) -> bool:
    try:
        ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def _is_sdp(msg: Message) -> bool:
    return (msg.get("Content-Type") or "").lower().startswith("application/sdp")


def _tag(value: str | None) -> str:
    for p in (value or "").split(";")[1:]:
        k, _, v = p.partition("=")
        if k.strip().lower() == "tag":
            return v.strip()
    return ""


def _add_uri_param(value: str, param: str) -> str:
    if "<" in value:
        end = value.rfind(">")
        return value[:end] + ";" + param + value[end:]
    uri, sep, rest = value.partition(";")
    return f"<{uri.strip()};{param}>" + (";" + rest if sep else "")
