"""Helpers for the sipp tests: start sipp peers, a proxyd with SIP on, raw UDP SIP clients."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

from tests.support import base_config, free_port, free_tcp_udp_port, require_peer

SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def sip_config(mode: str, uas_port: int, transport: str = "udp") -> dict[str, Any]:
    return base_config(
        instances=[{"name": "pbx", "sip": f"{transport}:127.0.0.1:{uas_port}", "sip_domains": ["pbx.test"]}],
        services={"sip": {"mode": mode, "udp_port": free_tcp_udp_port(), "tls_port": free_port()}},
    )


def sipp(args: list[str], cwd: Path, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    exe = require_peer("sipp")
    return subprocess.run([exe, *args, "-nostdin", "-timeout", f"{int(timeout - 10)}s"], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def sipp_bg(args: list[str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    exe = require_peer("sipp")
    with open(log, "wb") as out:
        return subprocess.Popen([exe, *args, "-nostdin"], cwd=cwd, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def udp_request(port: int, text: str, timeout: float = 5.0, src: str = "127.0.0.1") -> bytes:
    """Send one request to 127.0.0.1:port from `src`, return the first reply."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((src, 0))
        s.settimeout(timeout)
        me = s.getsockname()
        s.sendto(text.replace("{me}", f"{me[0]}:{me[1]}").replace("\n", "\r\n").encode(), ("127.0.0.1", port))
        return s.recvfrom(65535)[0]


def request(method: str, ruri: str, *, max_forwards: int = 70, extra: str = "", call: str = "t1") -> str:
    return (f"{method} {ruri} SIP/2.0\nVia: SIP/2.0/UDP {{me}};branch=z9hG4bK{call}\n"
            f"From: <sip:a@pbx.test>;tag=1\nTo: <{ruri}>\nCall-ID: {call}\nCSeq: 1 {method}\n"
            f"Max-Forwards: {max_forwards}\n{extra}Content-Length: 0\n\n")
