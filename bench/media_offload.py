"""bench_media's kernel-offload section (issue #23 §3): rtpengine userspace vs pforte userspace vs
pforte with the nftables offload, across a veth pair between two network namespaces this bench
makes (the generator's: phone 10.9.0.2 and PBX 10.9.0.3; the relay's: 10.9.0.1, forwarding on) —
the kernel cannot offload loopback.

CPU is the whole system's, softirq included: the delta of /proc/stat's busy fields (user, nice,
system, irq, softirq, steal) over all CPUs during a trial, less the generator's own utime+stime
(/proc/<pid>/stat) and less the machine's background load measured over an equal idle window
just before. On a shared machine that background is large and moves; the per-core figures are
only as good as it is steady, and the ratios are what to read.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

R_IP, PHONE_IP, PBX_IP = "10.9.0.1", "10.9.0.2", "10.9.0.3"


def busy_seconds() -> tuple[float, float]:
    """(busy, softirq) CPU seconds of the whole system so far."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    # user nice system idle iowait irq softirq steal
    hz = os.sysconf("SC_CLK_TCK")
    return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / hz, f[6] / hz


def proc_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def available() -> str:
    """'' if this section can run, else why not."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return ""


class Namespaces:
    def __init__(self) -> None:
        tag = f"pfb{os.getpid()}"
        self.gen, self.relay = f"{tag}g", f"{tag}r"

    def __enter__(self) -> Namespaces:
        script = f"""
        ip netns add {self.gen}; ip netns add {self.relay}
        ip link add v0 netns {self.gen} type veth peer name v1 netns {self.relay}
        ip -n {self.gen} addr add {PHONE_IP}/24 dev v0; ip -n {self.gen} addr add {PBX_IP}/24 dev v0
        ip -n {self.relay} addr add {R_IP}/24 dev v1
        for n in {self.gen} {self.relay}; do ip -n $n link set lo up; done
        ip -n {self.gen} link set v0 up; ip -n {self.relay} link set v1 up
        ip netns exec {self.relay} sysctl -qw net.ipv4.ip_forward=1
        ip netns exec {self.relay} sysctl -qw net.ipv4.conf.all.send_redirects=0
        ip netns exec {self.relay} sysctl -qw net.ipv4.conf.v1.send_redirects=0
        """
        try:
            subprocess.run(["sh", "-ec", script], check=True, capture_output=True)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for n in (self.gen, self.relay):
            subprocess.run(["ip", "netns", "del", n], capture_output=True)

    def run(self, ns: str, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *args]


def trial(ns: Namespaces, gen: Path, lines: str, rate: int, secs: float, pid: int | None,
          spawn: Any) -> dict[str, float]:
    """One generator run; the relay's share of the whole system's CPU (cores) and the loss."""
    b0 = busy_seconds()
    time.sleep(secs / 2)
    b1, t1 = busy_seconds(), time.monotonic()
    background, bg_soft = ((b1[k] - b0[k]) / (secs / 2) for k in (0, 1))
    p1 = proc_seconds(pid) if pid else 0.0
    proc = spawn(ns.run(ns.gen, [str(gen), str(rate), str(secs)]), stdin=subprocess.PIPE,
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, _ = proc.communicate(lines.encode(), timeout=secs + 30)
    wall = time.monotonic() - t1
    b2 = busy_seconds()
    total, soft = (b2[0] - b1[0]) / wall, (b2[1] - b1[1]) / wall
    relay = (proc_seconds(pid) - p1) / wall if pid else 0.0
    f = out.decode().split()
    r = {f[k]: float(f[k + 1]) for k in range(0, len(f), 2)}
    gen_cpu = r.get("cpu_s", 0.0) / wall
    r["loss"] = 1 - r["recv"] / r["sent"] if r.get("sent") else 1.0
    r["system_cores"] = max(total - background - gen_cpu, 0.0)
    r["background_cores"] = background
    r["relay_proc_cores"] = relay
    r["softirq_cores"] = max(soft - bg_soft, 0.0)  # the whole system's softirq, less its background
    return r


def pforte(ns: Namespaces, calls: list[tuple[int, int]], tmp: Path, kernel: bool, spawn: Any) -> tuple[Any, list[Any]]:
    root = Path(__file__).resolve().parents[1]
    proc = spawn(ns.run(ns.relay, [sys.executable, "-m", "bench.media_offload", "--serve"]), cwd=root,
                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(tmp / "pforte-ns.log", "wb"))  # noqa: SIM115
    assert proc.stdin and proc.stdout
    proc.stdin.write(json.dumps({"lo": 40000, "hi": 40000 + len(calls) * 4 + 15, "calls": calls, "kernel": kernel,
                                 "state": str(tmp / f"state-ns-{kernel}")}).encode() + b"\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError((tmp / "pforte-ns.log").read_text()[-2000:])
    return proc, json.loads(line)


def rtpengine(ns: Namespaces, calls: list[tuple[int, int]], tmp: Path, spawn: Any) -> tuple[Any, list[Any]]:
    proc = spawn(ns.run(ns.relay, ["rtpengine", "--config-file=none", "-f", "-E", "-L", "3", "-t", "-1", "-i", R_IP,
                                   "-n", "127.0.0.1:2223", "-m", "40000", "-M", str(40000 + len(calls) * 16 + 63),
                                   "--num-threads=1", "-o", "600"]),
                 stdout=subprocess.DEVNULL, stderr=open(tmp / "rtpengine-ns.log", "wb"))  # noqa: SIM115
    time.sleep(1.0)
    res = subprocess.run(ns.run(ns.relay, [sys.executable, "-m", "bench.media_offload", "--ng", json.dumps(calls)]),
                         cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
    if res.returncode:
        raise RuntimeError(res.stderr[-2000:])
    return proc, json.loads(res.stdout)


def section(gen: Path, tmp: Path, streams_list: list[int], rate_per_stream: int, secs: float,
            spawn: Any, stop: Any) -> list[tuple[str, int, dict[str, float]]]:
    why = available()
    if why:
        print(f"offload section skipped: {why}", flush=True)
        return []
    rows = []
    print("offload section (veth between namespaces; CPU: whole system from /proc/stat, softirq included, less "
          "the generator and the background):", flush=True)
    with Namespaces() as ns:
        for streams in streams_list:
            calls = [(20000 + 4 * i, 20002 + 4 * i) for i in range(streams // 2)]
            rate = streams * rate_per_stream
            for name in ("rtpengine", "pforte userspace", "pforte offload"):
                if name == "rtpengine" and shutil.which("rtpengine") is None:
                    continue
                proc = None
                try:
                    if name == "rtpengine":
                        proc, ports = rtpengine(ns, calls, tmp, spawn)
                    else:
                        proc, ports = pforte(ns, calls, tmp, name.endswith("offload"), spawn)
                    lines = "".join(f"{p} {rp} {PHONE_IP} {R_IP}\n{q} {rq} {PBX_IP} {R_IP}\n"
                                    for (p, q), (rp, rq) in zip(calls, ports, strict=True))
                    trial(ns, gen, lines, 2000, 1.0, None, spawn)  # latch every stream
                    time.sleep(2.5)  # pforte offloads at its next once-a-second check
                    r = trial(ns, gen, lines, rate, secs, proc.pid, spawn)
                except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
                    print(f"  {name}, {streams} streams: skipped ({exc})", flush=True)
                    continue
                finally:
                    if proc is not None:
                        stop(proc)
                cores = r["relay_proc_cores"] + r["softirq_cores"]
                r["per_core"] = rate / cores if r["loss"] < 0.001 and cores > 0 else 0.0
                print(f"  {name:17s} {streams:5d} streams {rate:6d} pps: loss {r['loss']:.3%}; relay process "
                      f"{r['relay_proc_cores']:.3f} + softirq {r['softirq_cores']:.3f} cores -> {r['per_core']:,.0f} "
                      f"pps/core (system {r['system_cores']:.2f}, background {r['background_cores']:.2f} cores)",
                      flush=True)
                rows.append((name, streams, r))
    return rows


async def serve() -> None:
    from bench.bench_media import m_port, sdp
    from proxyd.access import AccessList
    from proxyd.service import ServiceContext
    from proxyd.statedir import StateDir
    from proxyd.tls import CertStore
    from services.media.service import MediaService, MediaView
    from services.media_api import Side

    spec = json.loads(sys.stdin.readline())
    Path(spec["state"]).mkdir(parents=True, exist_ok=True)
    state = StateDir(Path(spec["state"])).ensure()
    svc = MediaService(ServiceContext(state=state, certs=CertStore(state.certs), access=AccessList()))
    n = len(spec["calls"])
    await svc.start(MediaView("srtp", spec["lo"], spec["hi"], 3600.0, R_IP, None, max_streams_per_source=n,
                              max_streams_per_instance=n, instance_hosts=frozenset({PBX_IP}),
                              kernel_offload=spec["kernel"]))
    out = []
    for i, (phone, pbx) in enumerate(spec["calls"]):
        to_pbx = svc.offer(f"b{i}", "f", sdp(phone, srtp=True).replace("127.0.0.1", PHONE_IP).encode(),
                           side=Side.PHONE, source_ip=PHONE_IP)
        to_phone = svc.answer(f"b{i}", "f", "t", sdp(pbx, srtp=True).replace("127.0.0.1", PBX_IP).encode(),
                              side=Side.INSTANCE, source_ip=PBX_IP)
        out.append((m_port(to_phone), m_port(to_pbx)))
    print(json.dumps(out), flush=True)
    import asyncio
    await asyncio.Event().wait()


def ng(calls: list[tuple[int, int]]) -> None:
    """In the relay's namespace: set rtpengine's calls up through its ng port; print its ports."""
    import socket

    from bench.bench_media import m_port, ng_call, sdp
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1)
        out = []
        for i, (p, q) in enumerate(calls):
            o = ng_call(s, 2223, {"command": "offer", "call-id": f"b{i}", "from-tag": "f",
                                  "sdp": sdp(p).replace("127.0.0.1", PHONE_IP)})
            a = ng_call(s, 2223, {"command": "answer", "call-id": f"b{i}", "from-tag": "f", "to-tag": "t",
                                  "sdp": sdp(q).replace("127.0.0.1", PBX_IP)})
            out.append((m_port(a["sdp"]), m_port(o["sdp"])))
    print(json.dumps(out))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    if sys.argv[1:2] == ["--ng"]:
        ng(json.loads(sys.argv[2]))
    elif sys.argv[1:] == ["--serve"]:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from proxyd.loop import run
        run(serve())
