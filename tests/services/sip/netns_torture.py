"""Run inside a fresh network namespace (only `lo` up): every RFC 4475 message through a real
proxyd over UDP. The messages carry non-loopback addresses; the namespace makes sure nothing
leaves this host whatever the relay does. Prints one JSON object {name: outcome}."""

from __future__ import annotations

import json
import select
import socket
import tempfile
from pathlib import Path

from tests.services.sip.torture import TORTURE, cases
from tests.support import ProxydProcess, base_config, free_tcp_udp_port

DOMAINS = ["example.com", "example.net", "example.org", "chair-dnrc.example.com", "biloxi.com",
           "registrar.example.com", "example.edu", "example.test", "atlanta.com"]


def main() -> None:
    pbx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pbx.bind(("127.0.0.1", 0))
    port = free_tcp_udp_port()  # pforte in mode udp listens on UDP and TCP
    cfg = base_config(
        instances=[{"name": "t", "sip": f"udp:127.0.0.1:{pbx.getsockname()[1]}", "sip_domains": DOMAINS}],
        services={"sip": {"mode": "udp", "udp_port": port}},
    )
    results: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        proc = ProxydProcess(Path(tmp), cfg).start()
        try:
            for case in cases():
                results[case["name"]] = one(pbx, port, (TORTURE / case["file"]).read_bytes())
        finally:
            proc.stop()
    print(json.dumps(results))


def one(pbx: socket.socket, port: int, data: bytes) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
        phone.bind(("127.0.0.1", 0))
        phone.sendto(data, ("127.0.0.1", port))
        ready, _, _ = select.select([phone, pbx], [], [], 1.0)
        if not ready:
            return "drop"
        got = ready[0].recv(65535)
        if ready[0] is pbx:
            return "forward"
        return got.split(b" ")[1].decode()


if __name__ == "__main__":
    main()
