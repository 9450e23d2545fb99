"""SDP: read what the relay needs and point a description at relay ports. Sans-IO.

Only `c=` addresses, `m=` ports and `a=rtcp:` ports change; codecs, `a=crypto`,
`a=fingerprint`, ptime and direction pass unchanged, line for line — unless an `Edit` asks for a
stream's transport and keys to change (the SRTP<->RTP bridge). ICE attributes are removed
(`ICE_ATTRIBUTES`): the relay is the only address each side may learn, and without candidates
both sides use `c=`/`m=`/`a=rtcp`, which point at the relay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class SdpError(ValueError):
    pass


#: Attributes of ICE (RFC 8839) and its predecessor: a candidate names an address other than the
#: relay's (a third party, an internal host) that the other side would send to, around the relay.
ICE_ATTRIBUTES = ("a=candidate:", "a=remote-candidates:", "a=ice-ufrag:", "a=ice-pwd:", "a=ice-options:",
                  "a=ice-lite", "a=ice-mismatch", "a=end-of-candidates", "a=ice-pacing:")


@dataclass(frozen=True)
class Media:
    kind: str
    port: int
    proto: str
    address: str  # the c= in force for this m= (media level, else session level)
    rtcp_mux: bool
    cryptos: tuple[str, ...] = ()  # the values of this stream's a=crypto: lines (SDES keys)
    pts: frozenset[int] = frozenset()  # the m= line's payload types (RTP/AVP formats)

    @property
    def crypto(self) -> bool:
        return bool(self.cryptos)


@dataclass(frozen=True)
class Edit:
    """Change one stream's transport: `proto` replaces the m= protocol, `cryptos` every a=crypto."""

    proto: str
    cryptos: tuple[str, ...]


def _lines(sdp: bytes) -> list[str]:
    try:
        text = sdp.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError("SDP is not UTF-8") from None
    return [ln for ln in text.replace("\r\n", "\n").split("\n") if ln]


def parse(sdp: bytes, max_media: int | None = None) -> list[Media]:
    """The streams of an SDP; SdpError when malformed or with more than `max_media` m= lines
    (counted while reading: a body of a thousand m= lines costs no more than `max_media` + 1)."""
    session_addr = ""
    out: list[list[Any]] = []
    cur: list[Any] | None = None  # [kind, port, proto, addr, mux, cryptos, pts]
    for ln in _lines(sdp):
        if len(ln) < 2 or ln[1] != "=":
            raise SdpError(f"malformed SDP line {ln[:40]!r}")
        key, val = ln[0], ln[2:]
        if key == "m":
            if cur:
                out.append(cur)
            if max_media is not None and len(out) >= max_media:
                raise SdpError(f"more than {max_media} m= lines")
            parts = val.split()
            if len(parts) < 3 or not parts[1].split("/")[0].isdigit():
                raise SdpError("malformed m= line")
            pts = frozenset(int(f) for f in parts[3:] if f.isdigit() and int(f) < 128)
            cur = [parts[0], int(parts[1].split("/")[0]), parts[2], session_addr, False, [], pts]
        elif key == "c":
            parts = val.split()
            if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
                raise SdpError("malformed c= line")
            if cur:
                cur[3] = parts[2]
            else:
                session_addr = parts[2]
        elif key == "a" and cur:
            if val == "rtcp-mux":
                cur[4] = True
            elif val.startswith("crypto:"):
                cur[5].append(val[7:])
    if cur:
        out.append(cur)
    return [Media(k, p, pr, a, m, tuple(c), pts) for k, p, pr, a, m, c, pts in out]


def rewrite(sdp: bytes, address: str, ports: list[tuple[int, int | None]],
            edits: list[Edit | None] | None = None) -> bytes:
    """Point every c= at `address` and the i-th m= at ports[i] = (rtp, rtcp or None); apply edits[i]."""
    family = "IP6" if ":" in address else "IP4"
    out: list[str] = []
    idx = -1
    edit: Edit | None = None
    for ln in _lines(sdp):
        key = ln[0]
        if key == "c":
            ln = f"c=IN {family} {address}"
        elif key == "o":
            parts = ln[2:].split()
            if len(parts) == 6:
                parts[4], parts[5] = family, address
                ln = "o=" + " ".join(parts)
        elif key == "m":
            _add_cryptos(out, edit)
            idx += 1
            edit = edits[idx] if edits and idx < len(edits) else None
            parts = ln[2:].split()
            rtp = ports[idx][0] if idx < len(ports) else 0
            parts[1] = str(rtp) if parts[1] != "0" else "0"  # port 0 = stream rejected, keep it so
            if edit is not None:
                parts[2] = edit.proto
            ln = "m=" + " ".join(parts)
        elif ln.startswith("a=rtcp:") and 0 <= idx < len(ports):
            rtcp = ports[idx][1] or ports[idx][0]
            ln = f"a=rtcp:{rtcp} IN {family} {address}"
        elif ln.startswith("a=crypto:") and edit is not None:
            continue  # replaced by the edit's keys at the end of the stream
        elif key == "a" and ln.startswith(ICE_ATTRIBUTES):
            continue
        out.append(ln)
    _add_cryptos(out, edit)
    return ("\r\n".join(out) + "\r\n").encode()


def _add_cryptos(out: list[str], edit: Edit | None) -> None:
    if edit is not None:
        out.extend(f"a=crypto:{c}" for c in edit.cryptos)
