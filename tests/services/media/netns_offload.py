"""Driver of test_offload_netns: run in the relay's namespace (`ip netns exec`), with the phone's
and the PBX's namespaces named on the command line; their sockets are made there (setns), so
every packet crosses a veth pair and the kernel's forwarding. Prints one JSON line of findings."""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from proxyd.access import AccessList
from proxyd.service import ServiceContext
from proxyd.statedir import StateDir
from proxyd.tls import CertStore
from services.media.kernel import Kernel
from services.media.service import MediaService, MediaView
from services.media_api import Side
from tests.services.media.test_media import offer_sdp, port_of, rtp

PHONE, PBX, ATTACKER, RELAY_PHONE, RELAY_PBX = "10.1.0.2", "10.2.0.2", "10.1.0.3", "10.1.0.1", "10.2.0.1"
BASE = 30000
_libc = ctypes.CDLL(None, use_errno=True)


@contextmanager
def netns(name: str) -> Any:
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        assert _libc.setns(fd, 0x40000000) == 0  # CLONE_NEWNET
        yield
    finally:
        _libc.setns(own, 0x40000000)
        os.close(fd)
        os.close(own)


def udp(ns: str, ip: str) -> socket.socket:
    with netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, 0))
    s.setblocking(False)
    return s


def drain(s: socket.socket) -> list[tuple[bytes, tuple[str, int]]]:
    got = []
    while True:
        try:
            got.append(s.recvfrom(2048))
        except BlockingIOError:
            return got


def service(state: Path, kernel: bool = True, idle: float = 60.0) -> tuple[MediaService, MediaView]:
    state.mkdir(parents=True, exist_ok=True)
    st = StateDir(state).ensure()
    svc = MediaService(ServiceContext(state=st, certs=CertStore(st.certs), access=AccessList()))
    return svc, MediaView("rtp", BASE, BASE + 99, idle, "0.0.0.0", None, instance_hosts=frozenset({PBX}),
                          kernel_offload=kernel)


def call(svc: MediaService, cid: str, phone: socket.socket, pbx: socket.socket) -> tuple[int, int]:
    to_pbx = svc.offer(cid, "f", offer_sdp(PHONE, phone.getsockname()[1]), side=Side.PHONE, source_ip=PHONE)
    to_phone = svc.answer(cid, "f", "t", offer_sdp(PBX, pbx.getsockname()[1]), side=Side.INSTANCE, source_ip=PBX)
    return port_of(to_phone), port_of(to_pbx)  # the relay's port facing the phone, and facing the PBX


async def exchange(phone: socket.socket, pbx: socket.socket, ports: tuple[int, int], n: int,
                   seq: int = 1) -> dict[str, Any]:
    drain(phone), drain(pbx)
    up: list[tuple[bytes, tuple[str, int]]] = []
    down: list[tuple[bytes, tuple[str, int]]] = []
    for k in range(n):
        phone.sendto(rtp(b"up", b"PHON", seq=seq + k), (RELAY_PHONE, ports[0]))
        pbx.sendto(rtp(b"down", b"PBX_", seq=seq + k), (RELAY_PBX, ports[1]))
        if k % 20 == 19:  # the receivers' buffers hold a few hundred packets
            await asyncio.sleep(0.005)
            up += drain(pbx)
            down += drain(phone)
    await asyncio.sleep(0.3)
    up, down = up + drain(pbx), down + drain(phone)
    return {"pbx_got": len(up), "phone_got": len(down), "pbx_from": sorted({f"{a[0]}:{a[1]}" for _, a in up}),
            "phone_from": sorted({f"{a[0]}:{a[1]}" for _, a in down})}


async def wait_for(pred: Any, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        await asyncio.sleep(0.1)
    return False


def elements() -> int:
    k = Kernel.__new__(Kernel)
    from services.media.kernel import Nft
    k.nft = Nft()
    try:
        return len(k.counters())
    except Exception:  # noqa: BLE001 - no table: nothing forwards
        return -1
    finally:
        k.nft.close()


async def main(phone_ns: str, pbx_ns: str, state: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    phone, pbx, attacker = udp(phone_ns, PHONE), udp(pbx_ns, PBX), udp(phone_ns, ATTACKER)

    svc, view = service(state / "a")
    await svc.start(view)
    out["mode"] = svc.stats()["offload"]
    ports = call(svc, "c1", phone, pbx)
    out["first"] = await exchange(phone, pbx, ports, 5)  # userspace latches both sides
    out["offloaded"] = await wait_for(lambda: svc.stats()["offload"]["directions"] == 2)
    user_before = sum(svc.eps[p].packets for p in ports)
    out["kernel_run"] = await exchange(phone, pbx, ports, 400, seq=10)
    svc.expire_idle(time.monotonic())
    after = svc.stats()["counters"]
    out["kernel_packets"] = after.get("kernel_packets", 0)
    out["userspace_forwarded_during"] = sum(svc.eps[p].packets for p in ports) - user_before
    out["relay_ports"] = [f"{RELAY_PHONE}:{ports[0]}", f"{RELAY_PBX}:{ports[1]}"]
    # a third party (another address) sending to the relay's port: neither the kernel nor userspace forwards it
    drain(pbx)
    for k in range(20):
        attacker.sendto(rtp(b"junk", b"PHON", seq=500 + k), (RELAY_PHONE, ports[0]))
    await asyncio.sleep(0.3)
    out["attacker_reached_pbx"] = len(drain(pbx))
    svc.delete("c1")
    out["elements_after_delete"] = elements()
    out["after_delete"] = await exchange(phone, pbx, ports, 20, seq=600)

    # the idle timeout, with the kernel's counters as the only sign of life for as long as media flows
    await svc.stop(1)
    svc, view = service(state / "b", idle=2.0)
    await svc.start(view)
    ports = call(svc, "c2", phone, pbx)
    await exchange(phone, pbx, ports, 5, seq=700)
    out["timeout_offloaded"] = await wait_for(lambda: svc.stats()["offload"]["directions"] == 2)
    for k in range(3):  # 3 s of kernel-only media: the call must live on
        await exchange(phone, pbx, ports, 50, seq=800 + 50 * k)
        await asyncio.sleep(0.7)
    out["alive_on_kernel_counts"] = "c2" in svc.calls
    out["timed_out"] = await wait_for(lambda: "c2" not in svc.calls, 6.0)
    out["elements_after_timeout"] = elements()
    await svc.stop(1)
    out["table_after_stop"] = elements()

    # a daemon killed mid-call leaves its rules; the next start flushes them
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        asyncio.run(daemon(w, phone, pbx, state / "c"))
        os._exit(0)
    os.close(w)
    ports = tuple(json.loads(os.read(r, 100)))
    for _ in range(30):
        await exchange(phone, pbx, ports, 2, seq=1000)
        if os.read(r, 10) if _ready(r) else b"":
            break
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)  # noqa: ASYNC222 - SIGKILLed: it is gone at once
    out["orphan_after_kill"] = await exchange(phone, pbx, ports, 20, seq=1100)  # the kernel still forwards
    svc, view = service(state / "d")
    await svc.start(view)
    out["elements_after_restart"] = elements()
    out["after_restart"] = await exchange(phone, pbx, ports, 20, seq=1200)
    await svc.stop(1)

    svc, view = service(state / "e", kernel=False)
    await svc.start(view)
    out["configured_off"] = svc.stats()["offload"]
    await svc.stop(1)
    return out


def _ready(fd: int) -> bool:
    import select
    return bool(select.select([fd], [], [], 0.2)[0])


async def daemon(w: int, phone: socket.socket, pbx: socket.socket, state: Path) -> None:
    svc, view = service(state)
    await svc.start(view)
    ports = call(svc, "k", phone, pbx)
    os.write(w, json.dumps(ports).encode())
    await wait_for(lambda: svc.stats()["offload"]["directions"] == 2, 10)
    os.write(w, b"ok")
    await asyncio.sleep(60)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3])))))
