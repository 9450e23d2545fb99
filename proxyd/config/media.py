"""`services.media`: the RTP/SRTP relay's port range, timers and stream limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxyd.config.reader import _fields, _Reader


@dataclass(frozen=True)
class MediaService:
    #: `srtp` (phones' media is SRTP) or `rtp`
    mode: str = "srtp"
    #: the first UDP port of the relay's range (even: RTP even, RTCP the next odd)
    port_min: int = 30000
    #: the last UDP port of the relay's range
    port_max: int = 35000
    #: seconds without packets after which a relayed stream is released
    idle_timeout: float = 60.0
    #: seconds after the answer within which the phone must send one proven packet (RTP/RTCP of
    #: the session, SRTP authenticated), else the call's media is released: ports are not held
    #: by calls that never carry media
    setup_timeout: float = 20.0
    #: m= lines one SDP may have (and so streams one call holds; 2 port pairs each): audio, video
    #: and a few more fit; a body with more is refused with 488 before any port is taken
    max_streams: int = 8
    #: streams held at once by calls offered from one phone IP address (an office behind one
    #: NAT address has many phones); more are refused with 503 and Retry-After
    max_streams_per_source: int = 64
    #: streams held at once by calls to or from one instance's PBX (its SIP host:port): about half
    #: the default range (1,250 streams), so one tenant's flood or runaway PBX leaves the others
    #: room; more are refused with 503 and Retry-After
    max_streams_per_instance: int = 600
    #: forward latched, untransformed streams (RTP, SRTP passthrough) in the kernel with nftables
    #: (table `inet pforte_media`); needs CAP_NET_ADMIN and net.ipv4.ip_forward=1, else (or false)
    #: every packet stays in userspace and `proxyd status` says why
    kernel_offload: bool = True
    #: the address written into SDP towards peers; null: the bind address (or `proxy.fqdn`'s address)
    public_address: str | None = None


def _parse_media(r: _Reader, raw: Any, p: str) -> MediaService:
    m = r.obj(raw, p, _fields(MediaService))
    media = MediaService(
        mode=r.field(m, p, MediaService, "mode", lambda v, q: r.choice(v, q, ("srtp", "rtp"))),
        port_min=r.field(m, p, MediaService, "port_min", r.port),
        port_max=r.field(m, p, MediaService, "port_max", r.port),
        idle_timeout=r.field(m, p, MediaService, "idle_timeout", lambda v, q: r.number(v, q, 1, 86400)),
        setup_timeout=r.field(m, p, MediaService, "setup_timeout", lambda v, q: r.number(v, q, 1, 3600)),
        max_streams=r.field(m, p, MediaService, "max_streams", lambda v, q: r.integer(v, q, 1, 64)),
        max_streams_per_source=r.field(m, p, MediaService, "max_streams_per_source",
                                       lambda v, q: r.integer(v, q, 1, 100_000)),
        max_streams_per_instance=r.field(m, p, MediaService, "max_streams_per_instance",
                                         lambda v, q: r.integer(v, q, 1, 100_000)),
        kernel_offload=r.field(m, p, MediaService, "kernel_offload", r.boolean),
        public_address=r.field(m, p, MediaService, "public_address", lambda v, q: r.ip(v, q, nullable=True)),
    )
    if isinstance(media.port_min, int) and isinstance(media.port_max, int):
        if media.port_min % 2:
            r.fail(f"{p}.port_min", "expected an even port (RTP uses even ports, RTCP the next odd)")
        if media.port_max - media.port_min < 1:
            r.fail(f"{p}.port_max", "expected port_max > port_min (at least one RTP/RTCP pair)")
    return media
