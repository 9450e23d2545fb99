"""Per-source accounting at the border — sans-IO, time passed in, fixed memory, O(1) per message.

`RateLimiter`: pike-like message rate per source address and per prefix (IPv4 /24, IPv6 /64).
`AuthGuard`: failed authentications (401/403/407 from the PBX) per address-of-record and per
source, with a lock-out answered by the relay itself.

Every table is a bounded LRU (an insertion-ordered dict: a hit moves the key to the end, a new
key past the bound evicts the oldest in O(1)). A flood of spoofed sources only ever evicts the
least recently seen buckets: a source evicted that way starts again from zero, which is what a
new source gets anyway, and work per message does not grow with the number of sources (the
table of main was rebuilt on every new source once full: 10 s p99 for a phone under a flood).
Blocks and lock-outs live in their own bounded tables, so a flood of new sources cannot evict
a blocked one to set it free before its time (their entries end in the order they began: all
last as long, so expiry pops from the front).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from ipaddress import IPv6Address

#: User-Agent substrings (lower case) of SIP scanning and attack tools: their requests are
#: dropped without an answer (an answer confirms a live target) and counted per signature
#: (`scanner_<signature>`, "-" as "_"). Sources: SIPVicious (friendly-scanner, its default UA, and
#: sipvicious), sipcli, sip-scan, sundayddr, iWar, sipsak, SIVuS, smap, SIP Army Knife, and the
#: VaxSIPUserAgent/pplsip brute forcers seen in honeypot logs. Kept here, one list, documented
#: in docs/security.md.
SCANNERS = ("friendly-scanner", "sipvicious", "sipcli", "sip-scan", "sundayddr", "iwar", "sipsak",
            "sivus", "smap", "siparmyknife", "vaxsipuseragent", "pplsip")

#: Sources (and prefixes) whose message rate is tracked at once: 65,536 × ~150 bytes ≈ 10 MiB
#: per table; a source seen less recently than the 65,536 last starts again from zero.
MAX_SOURCES = 65_536
#: Blocks held at once (sources and prefixes): beyond it the oldest block ends early.
MAX_BLOCKED = 16_384
#: A /24 (IPv4) or /64 (IPv6) may send this many times a source's limit: one customer's office
#: behind one NAT is one source; many addresses of one prefix together past it are one attacker
#: spreading a flood (or spoofing within a prefix).
PREFIX_FACTOR = 4


def scanner(user_agent: str | None) -> str | None:
    """The signature in SCANNERS that `user_agent` carries, or None."""
    ua = (user_agent or "").lower()
    for s in SCANNERS:
        if s in ua:
            return s
    return None


def is_scanner(user_agent: str | None) -> bool:
    return scanner(user_agent) is not None


def prefix_of(ip: str) -> str:
    """The /24 of an IPv4 address, the /64 of an IPv6 one (as a short key)."""
    if ":" not in ip:
        return ip.rpartition(".")[0]
    try:
        return IPv6Address(ip.partition("%")[0]).packed[:8].hex()
    except ValueError:
        return ip


class _Window:
    """Counts per key in fixed windows, in a bounded LRU. A bucket is one int (window start in
    ms << 32 | count), not a list: ints are not tracked by the cyclic garbage collector, so a
    full table adds nothing to the pause of a full collection (lists in three full tables made
    gen-2 collections of 0.7 s under a spoofed-source flood: the phone's p99)."""

    def __init__(self, window: float, max_keys: int):
        self.window, self.max_keys = window, max_keys
        self._window_ms = int(window * 1000)
        self.t: OrderedDict[str, int] = OrderedDict()  # key -> window start (ms) << 32 | count

    def add(self, key: str, now: float) -> int:
        """Count one for `key`; its count in the current window."""
        t = self.t
        v = t.get(key)
        ms = int(now * 1000)
        if v is None:
            if len(t) >= self.max_keys:
                t.popitem(last=False)
            t[key] = ms << 32 | 1
            return 1
        t.move_to_end(key)
        if ms - (v >> 32) >= self._window_ms:
            v = ms << 32
        t[key] = v = v + 1
        return v & _COUNT

    def forget(self, key: str) -> None:
        self.t.pop(key, None)

    def expire(self, now: float) -> None:
        """Drop the least recently used buckets whose window is over (amortised O(1))."""
        t = self.t
        oldest = int(now * 1000) - self._window_ms
        while t:
            key, v = next(iter(t.items()))
            if v >> 32 > oldest:
                return
            del t[key]


_COUNT = (1 << 32) - 1


class _Blocks:
    """key -> blocked until, bounded; every block lasts as long, so insertion order is expiry order."""

    def __init__(self, seconds: float, max_keys: int):
        self.seconds, self.max_keys = seconds, max_keys
        self.t: OrderedDict[str, float] = OrderedDict()

    def blocked(self, key: str, now: float) -> bool:
        until = self.t.get(key)
        return until is not None and until > now

    def block(self, key: str, now: float) -> None:
        t = self.t
        t.pop(key, None)
        if len(t) >= self.max_keys:
            t.popitem(last=False)
        t[key] = now + self.seconds

    def count(self, now: float) -> int:
        self.expire(now)
        return len(self.t)

    def expire(self, now: float) -> None:
        t = self.t
        while t:
            key, until = next(iter(t.items()))
            if until > now:
                return
            del t[key]


class RateLimiter:
    """At most `limit` messages per `window` seconds per source IP (and PREFIX_FACTOR × `limit`
    per prefix), else that source (or prefix) is blocked for `block` seconds."""

    def __init__(self, limit: int = 200, window: float = 1.0, block: float = 30.0, max_sources: int = MAX_SOURCES,
                 prefix_factor: int = PREFIX_FACTOR):
        self.limit, self.window, self.block, self.max_sources = limit, window, block, max_sources
        self.prefix_limit = limit * prefix_factor
        self._src = _Window(window, max_sources)
        self._prefix = _Window(window, max_sources)
        self._blocks = _Blocks(block, MAX_BLOCKED)
        self.just_blocked = False  # the last refused allow() started a block
        self.blocked_by = ""  # "source" or "prefix": what the last refused allow() was blocked by

    def allow(self, ip: str, now: float) -> bool:
        self.just_blocked = False
        prefix = "/" + prefix_of(ip)
        blocks = self._blocks
        if blocks.t:
            if blocks.blocked(ip, now):
                self.blocked_by = "source"
                return False
            if blocks.blocked(prefix, now):
                self.blocked_by = "prefix"
                return False
        if self._src.add(ip, now) > self.limit:
            blocks.block(ip, now)
            self._src.forget(ip)
            self.just_blocked, self.blocked_by = True, "source"
            return False
        if self._prefix.add(prefix, now) > self.prefix_limit:
            blocks.block(prefix, now)
            self._prefix.forget(prefix)
            self.just_blocked, self.blocked_by = True, "prefix"
            return False
        return True

    def blocked(self, now: float) -> int:
        return self._blocks.count(now)

    def expire(self, now: float) -> None:
        self._src.expire(now)
        self._prefix.expire(now)
        self._blocks.expire(now)


#: Failed authentications (401, 403, 407 from the PBX) that lock an address-of-record out: a
#: phone with the right password is challenged once per request and then succeeds (a success
#: clears its count), so 10 without one is a wrong password being guessed.
AUTH_FAILURES_PER_AOR = 10
#: ... and a source address (higher: one NAT may carry many phones, each challenged).
AUTH_FAILURES_PER_SOURCE = 30
#: The window the failures are counted in, and how long a lock-out lasts (seconds).
AUTH_WINDOW = 300.0
AUTH_LOCKOUT = 600.0


class AuthGuard:
    """Failed authentications per AOR and per source; `locked` says whether a request is answered
    403 by the relay instead of reaching the PBX."""

    def __init__(self, per_aor: int = AUTH_FAILURES_PER_AOR, per_source: int = AUTH_FAILURES_PER_SOURCE,
                 window: float = AUTH_WINDOW, lockout: float = AUTH_LOCKOUT, max_keys: int = MAX_SOURCES):
        self.per_aor, self.per_source = per_aor, per_source
        self._aor = _Window(window, max_keys)
        self._src = _Window(window, max_keys)
        self._locked = _Blocks(lockout, MAX_BLOCKED)

    def locked(self, aor: str, ip: str, now: float) -> str | None:
        """"aor" or "source" if a lock-out holds for this request, else None."""
        t = self._locked
        if not t.t:
            return None
        if t.blocked("a" + aor, now):
            return "aor"
        if t.blocked("s" + ip, now):
            return "source"
        return None

    def failed(self, aor: str, ip: str, now: float) -> str | None:
        """Count a failure; "aor"/"source" if it starts a lock-out."""
        started = None
        if self._src.add(ip, now) >= self.per_source:
            self._locked.block("s" + ip, now)
            self._src.forget(ip)
            started = "source"
        if self._aor.add(aor, now) >= self.per_aor:
            self._locked.block("a" + aor, now)
            self._aor.forget(aor)
            started = "aor"
        return started

    def succeeded(self, aor: str, ip: str) -> None:
        self._aor.forget(aor)
        self._src.forget(ip)

    def locked_out(self, now: float) -> int:
        return self._locked.count(now)

    def expire(self, now: float) -> None:
        self._aor.expire(now)
        self._src.expire(now)
        self._locked.expire(now)


#: Towards a UDP source that has not shown it receives what is sent to it, the relay sends at
#: most this many times the bytes it received from that source (address and port), whatever
#: the PBX sends back: a spoofed source's victim gets at most 3× what the spoofer spent. QUIC
#: uses 3 for the same problem (RFC 9000 §8.1). 1× would cut real calls: a PBX without digest
#: answers an INVITE with 100, 180 and a 200 with SDP (≈ 1.7× the INVITE); 3× leaves room for
#: one lost final response retransmitted.
AMPLIFICATION_FACTOR = 3
#: ... of which provisional responses (100, 18x) may use only 1×: the rest is kept for the final
#: response. A minimal INVITE (≈ 450 bytes, sipp's) spiralling through the PBX gets a 180 and a
#: 200 each carrying four Record-Routes (≈ 600 and 900 bytes): both at 3× would not fit; without
#: its 180 the phone only misses the ringing, without its 200 the call.
PROVISIONAL_FACTOR = 1
#: Unverified sources tracked (≈ 270 bytes each, 9 MiB; the flood's RSS budget is 64 MiB in
#: all): beyond, the least recently seen is forgotten, which only makes it stricter (its next
#: response finds no budget). At 5,000 new sources a second an entry lives ≈ 6.5 s: a request's
#: answers come within that, a call's 200 after longer ringing may not (its phone sends again).
#: Verified sources have a table of their own, so a flood of spoofed sources (which cannot
#: verify) cannot evict a phone.
MAX_UNVERIFIED = 32_768
MAX_VERIFIED = 65_536
#: values sent to unverified sources that they may echo as their proof (To tags, our Via
#: branch, digest nonces), in one table for all (≈ 100 bytes each): a busy source has many
#: transactions in flight (sipp at 400 calls a second from one port had a call's 200 pushed out
#: of a per-source list of 4 before its ACK came, and never verified)
MAX_COOKIES = 65_536
#: bytes received from one unverified source are counted up to 1 GiB: 3× that still fits the
#: 32 bits of bytes sent in its int (`Amplification._new`)
_RECEIVED_MAX = 1 << 30
_SENT = (1 << 32) - 1


class Amplification:
    """Bytes in and out per UDP source until it proves it receives: it echoes a value it can
    only know from what the relay sent to its address (the To tag of a response in an ACK or
    in-dialog request, our Via branch in its response to a PBX's request, a digest nonce in its
    Authorization). Verified sources are no longer counted. A PBX's request to a phone answers
    nothing the phone's address sent: its first transmission is not counted (an incoming call
    reaches a phone that only registered), its retransmissions are dropped until the phone
    proves it receives (the relay: `remember` says which is which)."""

    def __init__(self, factor: int = AMPLIFICATION_FACTOR, max_unverified: int = MAX_UNVERIFIED,
                 max_verified: int = MAX_VERIFIED):
        self.factor, self.max_unverified, self.max_verified = factor, max_unverified, max_verified
        #: hash(source) -> bytes received << 32 | bytes sent: an int key keeps no source
        #: tuple alive (the relay's is its Flow); two sources sharing a 64-bit salted hash share
        #: a budget, which nobody outside can arrange. One int, no list: the garbage collector
        #: does not track it (`_Window`)
        self._new: OrderedDict[int, int] = OrderedDict()
        self._proven: OrderedDict[int, None] = OrderedDict()
        #: hash((source, value)) of values sent to unverified sources, oldest first
        self._cookies: OrderedDict[int, None] = OrderedDict()

    def received(self, source: Hashable, n: int) -> None:
        key = hash(source)
        if key in self._proven:
            self._proven.move_to_end(key)
            return
        new = self._new
        rec = new.get(key)
        if rec is None:
            if len(new) >= self.max_unverified:
                new.popitem(last=False)
            new[key] = min(n, _RECEIVED_MAX) << 32
        else:
            new.move_to_end(key)
            new[key] = min((rec >> 32) + n, _RECEIVED_MAX) << 32 | rec & _SENT

    def allow(self, source: Hashable, n: int, provisional: bool = False) -> bool:
        """Whether `n` more bytes (a provisional response: PROVISIONAL_FACTOR) may go to `source`
        (counted if so)."""
        key = hash(source)
        if key in self._proven:
            return True
        rec = self._new.get(key)
        if rec is None or (rec & _SENT) + n > (PROVISIONAL_FACTOR if provisional else self.factor) * (rec >> 32):
            return False
        self._new[key] = rec + n
        return True

    def verified(self, source: Hashable) -> bool:
        key = hash(source)
        return key in self._proven

    def remember(self, source: Hashable, value: str) -> bool:
        """`value` goes to unverified `source`: if it echoes it, it receives. False if it went
        there before (a retransmission; a call's provisional and final responses share a To tag)."""
        key = hash(source)
        if key not in self._new:
            if len(self._new) >= self.max_unverified:
                self._new.popitem(last=False)
            self._new[key] = 0
        h = hash((key, value))  # str hashes are salted per process: not guessable from outside
        cookies = self._cookies
        if h in cookies:
            return False
        if len(cookies) >= MAX_COOKIES:
            cookies.popitem(last=False)
        cookies[h] = None
        return True

    def prove(self, source: Hashable, value: str) -> bool:
        """Whether `value` echoes one sent to `source`; `source` is verified from then on."""
        key = hash(source)
        if key not in self._new or not value or hash((key, value)) not in self._cookies:
            return False
        del self._new[key]
        if len(self._proven) >= self.max_verified:
            self._proven.popitem(last=False)
        self._proven[key] = None
        return True

    def counts(self) -> tuple[int, int]:
        """(unverified, verified) sources tracked."""
        return len(self._new), len(self._proven)
