"""SDP: read what the relay needs and point a description at relay ports. Sans-IO.

Only `c=` addresses, `m=` ports and `a=rtcp:` ports change; codecs, `a=crypto`,
`a=fingerprint`, ptime and direction pass unchanged, line for line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class SdpError(ValueError):
    pass


@dataclass(frozen=True)
class Media:
    kind: str
    port: int
    proto: str
    address: str  # the c= in force for this m= (media level, else session level)
    rtcp_mux: bool
    crypto: bool


def _lines(sdp: bytes) -> list[str]:
    try:
        text = sdp.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError("SDP is not UTF-8") from None
    return [ln for ln in text.replace("\r\n", "\n").split("\n") if ln]


def parse(sdp: bytes) -> list[Media]:
    session_addr = ""
    out: list[list[Any]] = []
    cur: list[Any] | None = None  # [kind, port, proto, addr, mux, crypto]
    for ln in _lines(sdp):
        if len(ln) < 2 or ln[1] != "=":
            raise SdpError(f"malformed SDP line {ln[:40]!r}")
        key, val = ln[0], ln[2:]
        if key == "m":
            if cur:
                out.append(cur)
            parts = val.split()
            if len(parts) < 3 or not parts[1].split("/")[0].isdigit():
                raise SdpError("malformed m= line")
            cur = [parts[0], int(parts[1].split("/")[0]), parts[2], session_addr, False, False]
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
                cur[5] = True
    if cur:
        out.append(cur)
    return [Media(k, p, pr, a, m, c) for k, p, pr, a, m, c in out]


def rewrite(sdp: bytes, address: str, ports: list[tuple[int, int | None]]) -> bytes:
    """Point every c= at `address` and the i-th m= at ports[i] = (rtp, rtcp or None)."""
    family = "IP6" if ":" in address else "IP4"
    out, idx = [], -1
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
            idx += 1
            parts = ln[2:].split()
            rtp = ports[idx][0] if idx < len(ports) else 0
            parts[1] = str(rtp) if parts[1] != "0" else "0"  # port 0 = stream rejected, keep it so
            ln = "m=" + " ".join(parts)
        elif ln.startswith("a=rtcp:") and 0 <= idx < len(ports):
            rtcp = ports[idx][1] or ports[idx][0]
            ln = f"a=rtcp:{rtcp} IN {family} {address}"
        out.append(ln)
    return ("\r\n".join(out) + "\r\n").encode()
