"""Media relay benchmark: 172-byte G.711 packets (12-byte RTP header + 160 payload) over 100 and
1,000 streams through the relay — pforte's MediaService (mode srtp: latching, counters and SRTP
passthrough on, uvloop), rtpengine (Debian rtpengine-daemon, userspace, one worker thread, driven
through its ng control protocol) and a small C relay (epoll + recvmmsg/sendmmsg, compiled here) in
the same run.

A C generator (compiled here too) sends every stream round robin at a total packet rate, paced, and
counts what comes back; one trial is TRIAL seconds. Per relay and stream count: the highest rate
forwarded with < 0.1 % loss, the relay's CPU share at that rate (utime + stime from
/proc/<pid>/stat), pps per relay-core, the same at one fixed load for all (FIXED_RATE), and the
p99 latency the relay adds at half its highest rate (the generator's own loopback p99 at that rate
subtracted). Each relay is pinned to core 1, the generator to core 0, both at nice -10. The generator saturates
near 100 kpps through a relay on one core; a rate marked ">=" is its limit, not the relay's, so
the per-core figures are the comparison that counts. Figures on a shared 2-core machine are noisy.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from tests.support import free_udp_range, stop_process  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")
STREAM_COUNTS = tuple(int(n) for n in os.environ.get("BENCH_MEDIA_STREAMS", "100,1000").split(","))
TRIAL = float(os.environ.get("BENCH_MEDIA_TRIAL", "3"))  # `make bench` sets both (bench/plans.py)
MAX_LOSS = 0.001
START_RATE = 20_000
FIXED_RATE = 30_000  # every relay's CPU share is also taken at this one load, for a like-for-like per-core figure


#: every relay process this bench started and has not stopped yet (`spawn`, `Relay.stop`)
LIVE: set[subprocess.Popen[bytes]] = set()


def _die_with_parent() -> None:
    """In the child before exec: the kernel kills it when the bench goes, even by SIGKILL (a relay
    left behind holds its ports and a core, and fails later runs and tests)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def spawn(args: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(args, preexec_fn=_die_with_parent, **kw)  # noqa: PLW1509 - no threads started here
    LIVE.add(proc)
    return proc


def pin(core: int) -> list[str]:
    """Run on one core, ahead of the other work on this shared machine (negative nice needs root)."""
    return ["nice", "-n", "-10", "taskset", "-c", str(core)]
Calls = list[tuple[int, int]]  # per call: (phone port, PBX port) on the generator / relay ports

GEN_C = r"""/* RTP load generator and sink for bench_media: stdin lines "local_port dst_port [local_ip dst_ip]"
   (default 127.0.0.1), one
   socket per line sending one stream of 172-byte G.711 packets (12-byte RTP header + 160 payload)
   round robin at RATE pps in total for SECONDS, and counting what comes back on any socket. The
   payload carries the send time, so the receive side measures one-way latency.
   Output: "sent S recv R sendfail F p50_us X p99_us Y" */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXS 8192
#define BATCH 64
#define CAP (4u << 20)

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    double rate = atof(argv[1]), secs = atof(argv[2]);
    static int lp[MAXS], dp[MAXS], fd[MAXS];
    static struct sockaddr_in dst[MAXS];
    static uint16_t seq[MAXS];
    int n = 0;
    static char lip[MAXS][16], dip[MAXS][16];
    char line[128];
    while (n < MAXS && fgets(line, sizeof line, stdin)) {
        strcpy(lip[n], "127.0.0.1"); strcpy(dip[n], "127.0.0.1");  /* or "lport dport lip dip" */
        if (sscanf(line, "%d %d %15s %15s", &lp[n], &dp[n], lip[n], dip[n]) >= 2) n++;
    }
    int ep = epoll_create1(0);
    prctl(PR_SET_TIMERSLACK, 1000UL);
    for (int i = 0; i < n; i++) {
        fd[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        int buf = 1 << 20;
        setsockopt(fd[i], SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
        setsockopt(fd[i], SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(lp[i])};
        inet_pton(AF_INET, lip[i], &a.sin_addr);
        if (bind(fd[i], (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); return 1; }
        dst[i] = a;
        inet_pton(AF_INET, dip[i], &dst[i].sin_addr);
        dst[i].sin_port = htons(dp[i]);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd[i], &ev);
    }
    uint32_t *lat = malloc(CAP * sizeof *lat);
    static char rbuf[BATCH][2048];
    static struct iovec riov[BATCH];
    static struct mmsghdr rmsg[BATCH];
    for (int j = 0; j < BATCH; j++) {
        riov[j].iov_base = rbuf[j];
        riov[j].iov_len = sizeof rbuf[j];
        rmsg[j].msg_hdr.msg_iov = &riov[j];
        rmsg[j].msg_hdr.msg_iovlen = 1;
    }
    unsigned char pkt[172] = {0x80, 0};
    memset(pkt + 12, 0xd5, 160);
    uint64_t sent = 0, recv = 0, fail = 0, nlat = 0;
    uint64_t t0 = now_ns(), end = t0 + (uint64_t)(secs * 1e9), stop = end + 500000000u;
    int k = 0;
    struct epoll_event evs[1024];
    for (;;) {
        uint64_t now = now_ns();
        if (now >= stop) break;
        long timeout;
        if (now < end) {
            uint64_t due = (uint64_t)((double)(now - t0) * rate / 1e9);
            while (sent + fail < due) {
                uint16_t s = ++seq[k];
                uint32_t ts = (uint32_t)s * 160, ssrc = (uint32_t)k;
                pkt[2] = s >> 8; pkt[3] = s & 0xff;
                uint32_t nts = htonl(ts), nss = htonl(ssrc);
                memcpy(pkt + 4, &nts, 4);
                memcpy(pkt + 8, &nss, 4);
                uint64_t t = now_ns();
                memcpy(pkt + 12, &t, 8);
                if (sendto(fd[k], pkt, sizeof pkt, 0, (struct sockaddr *)&dst[k], sizeof dst[k]) == sizeof pkt)
                    sent++;
                else
                    fail++;
                if (++k == n) k = 0;
            }
            /* sleep until the next packet is due (nanosecond timeout, tight timer slack) */
            double next_ns = (double)(sent + fail + 1) * 1e9 / rate - (double)(now_ns() - t0);
            timeout = next_ns > 0 ? (long)next_ns : 0;
        } else {
            timeout = 10000000;
        }
        struct timespec ts = {.tv_sec = timeout / 1000000000, .tv_nsec = timeout % 1000000000};
        int nev = epoll_pwait2(ep, evs, 1024, &ts, NULL);
        for (int e = 0; e < nev; e++) {
            int f = fd[evs[e].data.u32];
            for (;;) {
                int got = recvmmsg(f, rmsg, BATCH, MSG_DONTWAIT, NULL);
                if (got <= 0) break;
                uint64_t t = now_ns();
                for (int j = 0; j < got; j++) {
                    recv++;
                    if (rmsg[j].msg_len >= 20 && nlat < CAP) {
                        uint64_t s;
                        memcpy(&s, rbuf[j] + 12, 8);
                        if (t >= s && t - s < 4000000000u) lat[nlat++] = (uint32_t)(t - s);
                    }
                }
                if (got < BATCH) break;
            }
        }
    }
    double p50 = 0, p99 = 0;
    if (nlat) {
        qsort(lat, nlat, sizeof *lat, cmp);
        p50 = lat[nlat / 2] / 1e3;
        p99 = lat[(uint64_t)(nlat * 0.99)] / 1e3;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    printf("sent %llu recv %llu sendfail %llu p50_us %.1f p99_us %.1f cpu_s %.3f\n", (unsigned long long)sent,
           (unsigned long long)recv, (unsigned long long)fail, p50, p99, cpu);
    return 0;
}
"""

RELAY_C = r"""/* Reference relay for bench_media: stdin lines "portA portB dstA dstB" (127.0.0.1). Packets on A go
   out of B to B's destination and back; each side's destination is latched from the source of the
   packets arriving on it. One thread, epoll, recvmmsg/sendmmsg batches, a packet counter per side.
   Prints "ready" once bound; runs until killed. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXS 16384
#define BATCH 64

struct side { int fd, peer; struct sockaddr_in dst; unsigned long packets; };
static struct side sides[MAXS];

static int open_side(int i, int port, int dport, int ep) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    sides[i].fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (bind(sides[i].fd, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); return -1; }
    sides[i].dst = a;
    sides[i].dst.sin_port = htons(dport);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
    return epoll_ctl(ep, EPOLL_CTL_ADD, sides[i].fd, &ev);
}

int main(void) {
    int ep = epoll_create1(0), n = 0, pa, pb, da, db;
    while (n + 2 <= MAXS && scanf("%d %d %d %d", &pa, &pb, &da, &db) == 4) {
        if (open_side(n, pa, da, ep) < 0 || open_side(n + 1, pb, db, ep) < 0) return 1;
        sides[n].peer = n + 1;
        sides[n + 1].peer = n;
        n += 2;
    }
    printf("ready\n");
    fflush(stdout);
    static char buf[BATCH][2048];
    static struct iovec iov[BATCH];
    static struct sockaddr_in src[BATCH];
    static struct mmsghdr in[BATCH], out[BATCH];
    for (int j = 0; j < BATCH; j++) {
        iov[j].iov_base = buf[j];
        in[j].msg_hdr.msg_iov = &iov[j];
        in[j].msg_hdr.msg_iovlen = 1;
        out[j].msg_hdr.msg_iov = &iov[j];
        out[j].msg_hdr.msg_iovlen = 1;
    }
    struct epoll_event evs[1024];
    for (;;) {
        int nev = epoll_wait(ep, evs, 1024, -1);
        for (int e = 0; e < nev; e++) {
            struct side *s = &sides[evs[e].data.u32], *p = &sides[s->peer];
            for (;;) {
                for (int j = 0; j < BATCH; j++) {
                    iov[j].iov_len = sizeof buf[j];
                    in[j].msg_hdr.msg_name = &src[j];
                    in[j].msg_hdr.msg_namelen = sizeof src[j];
                }
                int got = recvmmsg(s->fd, in, BATCH, MSG_DONTWAIT, NULL);
                if (got <= 0) break;
                s->dst = src[got - 1];  /* latch */
                for (int j = 0; j < got; j++) {
                    iov[j].iov_len = in[j].msg_len;
                    out[j].msg_hdr.msg_name = &p->dst;
                    out[j].msg_hdr.msg_namelen = sizeof p->dst;
                }
                sendmmsg(p->fd, out, got, 0);
                s->packets += got;
                if (got < BATCH) break;
            }
        }
    }
}
"""


# -- helpers ---------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def compile_c(tmp: Path, name: str, src: str) -> Path:
    (tmp / f"{name}.c").write_text(src)
    subprocess.run(["cc", "-O2", "-o", str(tmp / name), str(tmp / f"{name}.c")], check=True)
    return tmp / name


# -- the relays --------------------------------------------------------------------------------------
class Relay:
    name = ""
    proc: subprocess.Popen[bytes]

    def start(self, calls: Calls, tmp: Path) -> Calls:
        """Set up every call; the relay's (port for the phone, port for the PBX) per call."""
        raise NotImplementedError

    def stop(self) -> None:
        proc = getattr(self, "proc", None)  # None: it failed before it started one
        stop_process(proc)
        LIVE.discard(proc)


class Pforte(Relay):
    name = "pforte"

    def start(self, calls: Calls, tmp: Path) -> Calls:
        lo = free_udp_range(len(calls) * 4 + 16, after=14_000)
        self.proc = spawn(
            [*pin(1), sys.executable, "-m", "bench.bench_media", "--serve"], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(tmp / "pforte.log", "wb"))  # noqa: SIM115
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"lo": lo, "hi": lo + len(calls) * 4 + 15, "calls": calls,
                                          "state": str(tmp / "state")}).encode() + b"\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError((tmp / "pforte.log").read_text()[-2000:])
        return [(a, b) for a, b in json.loads(line)]


class Rtpengine(Relay):
    name = "rtpengine"

    def start(self, calls: Calls, tmp: Path) -> Calls:
        ng = free_udp_range(1, after=31_000)
        lo = free_udp_range(len(calls) * 16 + 64, after=18_000)
        self.proc = spawn(
            [*pin(1), "rtpengine", "--config-file=none", "-f", "-E", "-L", "3", "-t", "-1",
             "-i", "127.0.0.1", "-n", f"127.0.0.1:{ng}", "-m", str(lo), "-M", str(lo + len(calls) * 16 + 63),
             "--num-threads=1", "-o", "600"], stdout=subprocess.DEVNULL,
            stderr=open(tmp / "rtpengine.log", "wb"))  # noqa: SIM115
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(1)
            out = []
            for i, (phone, pbx) in enumerate(calls):
                offer = ng_call(s, ng, {"command": "offer", "call-id": f"b{i}", "from-tag": "f", "sdp": sdp(phone)})
                answer = ng_call(s, ng, {"command": "answer", "call-id": f"b{i}", "from-tag": "f", "to-tag": "t",
                                         "sdp": sdp(pbx)})
                out.append((m_port(answer["sdp"]), m_port(offer["sdp"])))
        return out


class CRelay(Relay):
    name = "C relay"

    def __init__(self, binary: Path) -> None:
        self.binary = binary

    def start(self, calls: Calls, tmp: Path) -> Calls:
        lo = free_udp_range(len(calls) * 4, after=24_000)
        relay = [(lo + 4 * i, lo + 4 * i + 2) for i in range(len(calls))]
        self.proc = spawn([*pin(1), str(self.binary)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write("".join(f"{a} {b} {p} {q}\n" for (a, b), (p, q) in zip(relay, calls, strict=True))
                              .encode())
        self.proc.stdin.close()
        assert self.proc.stdout.readline() == b"ready\n"
        return relay


def sdp(port: int, srtp: bool = False) -> str:
    proto = "RTP/SAVP" if srtp else "RTP/AVP"
    key = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVzcyAoc2VuZA\r\n"
    return (f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} {proto} 0\r\na=rtpmap:0 PCMU/8000\r\n{key if srtp else ''}")


def m_port(body: bytes) -> int:
    for ln in body.decode().splitlines():
        if ln.startswith("m=audio "):
            return int(ln.split()[1])
    raise ValueError(body)


# -- ng protocol (bencode over UDP) ----------------------------------------------------------------
def bencode(o: Any) -> bytes:
    if isinstance(o, int):
        return b"i%de" % o
    if isinstance(o, str):
        o = o.encode()
    if isinstance(o, bytes):
        return b"%d:%s" % (len(o), o)
    if isinstance(o, list):
        return b"l" + b"".join(bencode(x) for x in o) + b"e"
    return b"d" + b"".join(bencode(k) + bencode(v) for k, v in sorted(o.items())) + b"e"


def bdecode(b: bytes, i: int = 0) -> tuple[Any, int]:
    c = b[i:i + 1]
    if c == b"i":
        j = b.index(b"e", i)
        return int(b[i + 1:j]), j + 1
    if c in (b"l", b"d"):
        i += 1
        items = []
        while b[i:i + 1] != b"e":
            v, i = bdecode(b, i)
            items.append(v)
        if c == b"l":
            return items, i + 1
        return {items[k].decode(): items[k + 1] for k in range(0, len(items), 2)}, i + 1
    j = b.index(b":", i)
    n = int(b[i:j])
    return b[j + 1:j + 1 + n], j + 1 + n


def ng_call(s: socket.socket, port: int, cmd: dict[str, Any]) -> dict[str, Any]:
    cookie = os.urandom(6).hex().encode()
    for _ in range(50):  # rtpengine takes a moment to listen
        s.sendto(cookie + b" " + bencode(cmd), ("127.0.0.1", port))
        try:
            data = s.recv(65535)
        except OSError:
            time.sleep(0.1)
            continue
        reply, _ = bdecode(data.split(b" ", 1)[1])
        if reply.get("result") != b"ok":
            raise RuntimeError(f"rtpengine: {reply}")
        return reply
    raise RuntimeError("rtpengine ng: no answer")


# -- trials ------------------------------------------------------------------------------------------
def trial(gen: Path, lines: str, rate: int, pid: int | None, secs: float = TRIAL) -> dict[str, float]:
    before, t0 = (cpu_seconds(pid) if pid else 0.0), time.monotonic()
    res = subprocess.run([*pin(0), str(gen), str(rate), str(secs)], input=lines, text=True,  # noqa: PLW1509
                         capture_output=True, timeout=secs + 30, preexec_fn=_die_with_parent)
    if res.returncode:  # its ports taken meanwhile by the machine's other work: this row is skipped, not the bench
        raise RuntimeError(f"generator exited {res.returncode}: {res.stderr.strip()[-200:]}")
    wall = time.monotonic() - t0
    f = res.stdout.split()
    out = {f[k]: float(f[k + 1]) for k in range(0, len(f), 2)}
    out["cpu"] = (cpu_seconds(pid) - before) / wall if pid else 0.0
    out["loss"] = 1 - out["recv"] / out["sent"] if out["sent"] else 1.0
    out["ok"] = float(out["loss"] < MAX_LOSS)
    out["pace"] = (out["sent"] + 1) / (rate * secs)  # < 1: the generator could not keep up
    return out


class Session:
    """One relay with every stream set up and latched; restarted after an overload (rtpengine stops
    forwarding for good once its receive queues overflowed)."""

    def __init__(self, relay: Relay, gen: Path, streams: int, tmp: Path) -> None:
        self.relay, self.gen, self.tmp = relay, gen, tmp
        g = free_udp_range(streams * 2, after=10_000)
        self.calls = [(g + 4 * i, g + 4 * i + 2) for i in range(streams // 2)]
        self.lines = ""
        self.start()

    def start(self) -> None:
        ports = self.relay.start(self.calls, self.tmp)
        # phone -> relay port for the phone -> PBX; PBX -> relay port for the PBX -> phone
        self.lines = "".join(f"{p} {rp}\n{q} {rq}\n" for (p, q), (rp, rq) in zip(self.calls, ports, strict=True))
        trial(self.gen, self.lines, 2000, None, 1.0)  # warm up: latch every stream

    def run(self, rate: int) -> dict[str, float]:
        """A trial at `rate`; a failed one (loss, or the generator falling behind) is repeated once,
        because other work on this machine preempts the generator or the relay now and then."""
        for attempt in (1, 2):
            r = trial(self.gen, self.lines, rate, self.relay.proc.pid)
            print(f"    {rate:7d} pps: loss {r['loss']:.3%} cpu {r['cpu']:.0%} p50 {r['p50_us']:.0f} us "
                  f"p99 {r['p99_us']:.0f} us{'' if r['ok'] else '  FAILED'}{' (behind)' if r['pace'] < 0.97 else ''}",
                  flush=True)
            if not r["ok"]:
                self.relay.stop()
                self.start()
            elif r["pace"] >= 0.97 or attempt == 2:
                break
        return r


def search(s: Session) -> tuple[int, dict[str, float], bool]:
    """Raise the rate by 1.5x until a trial loses >= 0.1 %, then bisect twice. When the generator
    cannot send at the asked rate any more, its achieved rate is the (lower-bound) answer."""
    good, good_res, bad, rate = 0, {"cpu": 0.0}, 0, START_RATE
    while True:
        r = s.run(rate)
        if r["ok"] and r["pace"] < 0.97:
            return int(r["sent"] / TRIAL), r, True
        if not r["ok"]:
            bad = rate
            break
        good, good_res, rate = rate, r, int(rate * 1.5)
    for _ in range(2):
        rate = (good + bad) // 2
        r = s.run(rate)
        if r["ok"]:
            good, good_res = int(min(rate, r["sent"] / TRIAL)), r
        else:
            bad = rate
    return good, good_res, False


def measure(relay: Relay, gen: Path, streams: int, tmp: Path, base_p99: Callable[[int], float]) -> dict[str, Any]:
    print(f"  {relay.name}, {streams} streams:", flush=True)
    try:  # a relay that fails while starting is stopped too
        s = Session(relay, gen, streams, tmp)
        fixed = s.run(FIXED_RATE)
        best, at_best, gen_limited = search(s)
        half = s.run(max(best // 2, 1000))
    finally:
        relay.stop()
    return {"pps": best, "gen_limited": gen_limited, "cpu": at_best["cpu"],
            "per_core": best / at_best["cpu"] if at_best["cpu"] > 0 else 0.0,
            "fixed_per_core": FIXED_RATE / fixed["cpu"] if fixed["ok"] and fixed["cpu"] > 0 else 0.0,
            "p99_added_us": max(0.0, half["p99_us"] - base_p99(best // 2))}


def direct_p99(gen: Path, streams: int) -> Callable[[int], float]:
    """The generator's own loopback p99 (streams sent socket to socket, no relay) at a rate."""
    cache: dict[int, float] = {}

    def at(rate: int) -> float:
        if rate not in cache:
            g = free_udp_range(streams * 2, after=10_000)
            lines = "".join(f"{g + 4 * i} {g + 4 * i + 2}\n{g + 4 * i + 2} {g + 4 * i}\n" for i in range(streams // 2))
            cache[rate] = trial(gen, lines, max(rate, 1000), None)["p99_us"]
        return cache[rate]

    return at


def header() -> None:
    print(f"\n{'relay':10} {'streams':>7} {'max pps':>8} {'cpu':>5} {'pps/core':>9} {'calls/core':>10} "
          f"{'pps/core@' + str(FIXED_RATE // 1000) + 'k':>13} {'p99 added':>10}", flush=True)


def row(name: str, streams: int, r: dict[str, Any]) -> None:
    pps = (">=" if r["gen_limited"] else "") + str(r["pps"])
    print(f"{name:10} {streams:7d} {pps:>8} {r['cpu']:5.0%} {r['per_core']:9.0f} {r['per_core'] / 100:10.0f} "
          f"{r['fixed_per_core']:13.0f} {r['p99_added_us']:8.0f}us", flush=True)


def fitting(counts: tuple[int, ...]) -> list[int]:
    """The stream counts this machine has file descriptors and port room for (the soft fd limit is
    raised to the hard one first); a count that does not fit is skipped, and said so."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    fds = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    out = []
    for streams in counts:
        # the largest range checked at once: rtpengine's 16 ports per call + 64 (free_udp_range binds them all)
        need = (streams // 2) * 16 + 64 + 256
        room = 32_000 - 18_000  # rtpengine's search window (see Rtpengine.start)
        if need > fds or need > room:
            print(f"{streams} streams skipped: needs {need} UDP sockets at once, the fd limit is {fds} "
                  f"and the port window {room}", flush=True)
            continue
        out.append(streams)
    return out


def main() -> None:
    common.guard()
    if not (shutil.which("cc") and shutil.which("taskset")):
        print("media bench skipped: cc/taskset missing")
        return
    # SIGTERM (a timeout, the harness) unwinds like Ctrl-C, so the finally below stops the relays
    previous = signal.signal(signal.SIGTERM, _exit_on_term)
    try:
        _main()
    finally:
        signal.signal(signal.SIGTERM, previous)
        for proc in list(LIVE):
            stop_process(proc)
            LIVE.discard(proc)


def _exit_on_term(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _main() -> None:
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        gen, crelay = compile_c(tmp, "rtpgen", GEN_C), compile_c(tmp, "crelay", RELAY_C)
        relays: list[Relay] = [Pforte()]
        if shutil.which("rtpengine"):
            relays.append(Rtpengine())
        relays.append(CRelay(crelay))
        rows = []
        header()
        for streams in fitting(STREAM_COUNTS):
            base = direct_p99(gen, streams)
            for relay in relays:
                try:
                    r = measure(relay, gen, streams, tmp, base)
                except RuntimeError as exc:  # free_udp_range: the machine's other work holds the ports
                    print(f"  {relay.name}, {streams} streams: skipped ({exc})", flush=True)
                    continue
                rows.append((relay.name, streams, r))
                row(relay.name, streams, r)
    print()
    header()
    for name, streams, r in rows:
        row(name, streams, r)
    for streams in sorted({s for _, s, _ in rows}):
        by = {name: r for name, s, r in rows if s == streams}
        for ref in ("rtpengine", "C relay"):
            if by.get(ref, {}).get("per_core") and "pforte" in by:
                ratio = by["pforte"]["per_core"] / by[ref]["per_core"]
                fixed = by["pforte"]["fixed_per_core"] / by[ref]["fixed_per_core"] if by[ref]["fixed_per_core"] else 0
                print(f"{streams} streams: pforte/{ref} per core at max {ratio:.2f}x, "
                      f"at {FIXED_RATE} pps {fixed:.2f}x, absolute {by['pforte']['pps'] / max(by[ref]['pps'], 1):.2f}x")
                common.record(f"media {streams} streams pps per core", ref, ratio, at_fixed_rate=fixed,
                              pforte_pps=by["pforte"]["pps"], anchor_pps=by[ref]["pps"])
    print("(a call = 2 streams x 50 pps; generator on core 0, relay on core 1; >= the generator's limit, not the "
          "relay's; shared, noisy 2-core machine)")
    _offload_section()


def _offload_section() -> None:
    """rtpengine userspace vs pforte userspace vs pforte offload across a veth pair (bench.media_offload)."""
    from bench import media_offload
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        rows = media_offload.section(compile_c(tmp, "rtpgen", GEN_C), tmp, fitting(STREAM_COUNTS), 50, TRIAL,
                                     spawn, _stop)
    by = {(name, n): r for name, n, r in rows}
    for n in sorted({n for _, n, _ in rows}):
        ref = by.get(("rtpengine", n), {}).get("per_core", 0.0)
        for name in ("pforte userspace", "pforte offload"):
            mine = by.get((name, n), {}).get("per_core", 0.0)
            if ref and mine:
                print(f"{n} streams x 50 pps: {name}/rtpengine userspace per core {mine / ref:.2f}x")
                common.record(f"media {n} streams x 50 pps per core ({name}, veth)", "rtpengine", mine / ref)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc)
    LIVE.discard(proc)


# -- pforte under test: the MediaService as proxyd runs it ---------------------------------------
async def serve() -> None:
    from proxyd.access import AccessList
    from proxyd.service import ServiceContext
    from proxyd.statedir import StateDir
    from proxyd.tls import CertStore
    from services.media.service import MediaService, MediaView
    from services.media_api import Side

    spec = json.loads(sys.stdin.readline())
    state = StateDir(Path(spec["state"])).ensure()
    svc = MediaService(ServiceContext(state=state, certs=CertStore(state.certs), access=AccessList()))
    n = len(spec["calls"])  # every stream comes from one address, to one "PBX": the limits must not refuse them
    await svc.start(MediaView("srtp", spec["lo"], spec["hi"], 3600.0, "127.0.0.1", None,
                              max_streams_per_source=n, max_streams_per_instance=n))
    out = []
    for i, (phone, pbx) in enumerate(spec["calls"]):
        to_pbx = svc.offer(f"b{i}", "f", sdp(phone, srtp=True).encode(), side=Side.PHONE, source_ip="127.0.0.1")
        to_phone = svc.answer(f"b{i}", "f", "t", sdp(pbx, srtp=True).encode(), side=Side.INSTANCE,
                                    source_ip="127.0.0.1")
        out.append((m_port(to_phone), m_port(to_pbx)))
    print(json.dumps(out), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        from proxyd.loop import run
        run(serve())
    else:
        main()
