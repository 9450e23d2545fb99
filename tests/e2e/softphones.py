"""Real SIP peers for the interop tests: kamailio as registrar + record-route PBX, and the
softphones baresip (driven over its `ctrl_tcp` module: netstring JSON commands and events) and
linphonec (driven over stdin, its state read from its stdout). Each runs in its own directory on
loopback, plays a generated tone file instead of a sound card, and is stopped by its PID."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import socket
import struct
import subprocess
import threading
import time
import wave
from pathlib import Path

from tests.support import free_port, free_udp_range, require_peer, stop_process

#: every wait in these helpers is bounded; a step that takes longer failed
STEP_TIMEOUT = 10.0
DOMAIN = "pbx.test"

KAMAILIO_CFG = """#!KAMAILIO
debug=2
log_stderror=yes
children=1
tcp_children=1
auto_aliases=no
listen=udp:{host}:{port}
listen=tcp:{host}:{port}
alias={domain}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "pv.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "xlog.so"
# phones behind pforte: reach them along the Path pforte put into their REGISTER
modparam("registrar", "use_path", 1)
modparam("registrar", "path_mode", 0)
request_route {{
    xlog("L_INFO", "kam: $rm $ru from $si:$sp\\n");
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        xlog("L_WARN", "kam: in-dialog $rm without my Route: 404\\n");
        sl_send_reply("404", "Not here"); exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    t_check_trans();
    remove_hf("Route");
    if (is_method("INVITE|SUBSCRIBE")) {{ record_route(); }}
    if (is_method("REGISTER")) {{ save("location"); exit; }}
    if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); exit; }}
    t_relay();
}}
"""


def tone(path: Path, seconds: float = 40.0, rate: int = 8000) -> Path:
    """A mono 16-bit sine WAV the phones send instead of a microphone (baresip hangs up when its
    source file ends: longer than any call here)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                               for i in range(int(seconds * rate))))
    return path


class Kamailio:
    """kamailio 5.x in the foreground (-DD -E), log in `workdir/kamailio.log`."""

    def __init__(self, workdir: Path, host: str, port: int):
        self.workdir, self.host, self.port = workdir, host, port
        self.log_path = workdir / "kamailio.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Kamailio:
        exe = require_peer("kamailio")
        cfg = self.workdir / "kamailio.cfg"
        cfg.write_text(KAMAILIO_CFG.format(host=self.host, port=self.port, domain=DOMAIN))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([exe, "-f", str(cfg), "-DD", "-E", "-m", "64", "-M", "8",
                                          "-Y", str(self.workdir)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:  # ready once its TCP listener (opened with the UDP one) takes a connection
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                if s.connect_ex((self.host, self.port)) == 0:
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"kamailio did not start:\n{self.log()}")
            time.sleep(0.1)
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        stop_process(self.proc)


class Baresip:
    """baresip 1.0 with its own config dir (`-f`), one account registered through pforte
    (`outbound=` pforte), driven over `ctrl_tcp`. `events` collects every event it reports."""

    def __init__(self, workdir: Path, user: str, proxy: tuple[str, int], transport: str = "udp",
                 audio: Path | None = None, mediaenc: str | None = None):
        self.mediaenc = mediaenc  # "srtp-mand": SDES-SRTP (RTP/SAVP + a=crypto) or no call
        self.dir = workdir / f"baresip-{user}"
        self.dir.mkdir()
        self.user, self.proxy, self.transport = user, proxy, transport
        self.aor = f"sip:{user}@{DOMAIN}"
        self.audio = audio
        self.ctrl_port = free_port()
        self.log_path = self.dir / "baresip.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.events: list[dict[str, object]] = []
        self.calls = 0  # calls made or taken so far (the tests count them)
        self.responses: dict[str, dict[str, object]] = {}
        self._cv = threading.Condition()
        self._reader: threading.Thread | None = None

    def _write_config(self) -> None:
        mods = "/usr/lib/baresip/modules"
        audio = self.audio or tone(self.dir / "tone.wav")
        (self.dir / "config").write_text("\n".join([
            "poll_method epoll",
            # port 0: each transport its own ephemeral port (baresip takes TLS at port + 1)
            "sip_listen 127.0.0.1:0",
            f"module_path {mods}",
            # srtp before account: an account naming mediaenc=srtp-mand needs it loaded
            "module g711.so", "module aufile.so", "module srtp.so", "module account.so", "module menu.so",
            "module ctrl_tcp.so",
            f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}",
            f"audio_source aufile,{audio}",
            "audio_player aufile,/dev/null",
            "audio_alert aufile,/dev/null",
            "rtp_stats yes",
            # no STUN/ICE: loopback only
            "", ""]))
        host, port = self.proxy
        tp = "" if self.transport == "udp" else f";transport={self.transport}"
        (self.dir / "accounts").write_text(
            f'<{self.aor}{tp}>;outbound="sip:{host}:{port}{tp};lr";regint=600;'
            f"audio_codecs=PCMU,PCMA;answermode=manual;auth_pass=x"
            + (f";mediaenc={self.mediaenc}" if self.mediaenc else "") + "\n")
        (self.dir / "contacts").write_text("")

    def start(self) -> Baresip:
        exe = require_peer("baresip")
        # the control port was free a moment ago; another process (even this phone's own SIP
        # sockets on ephemeral ports) may take it first: then baresip runs without ctrl_tcp
        # and we would talk to a stranger. Start again on another port.
        for _ in range(3):
            if self._start(exe):
                break
            stop_process(self.proc, timeout=5)
            self.ctrl_port = free_port()
        else:
            raise AssertionError(f"baresip {self.user}: ctrl_tcp did not listen:\n{self.log()}")
        self.sock = socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=STEP_TIMEOUT)
        self.sock.settimeout(None)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _start(self, exe: str) -> bool:
        """Start baresip; True once its ctrl_tcp listens on our port, False if it could not."""
        self._write_config()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([exe, "-4", "-n", "127.0.0.1", "-f", str(self.dir), "-v"],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        listening = f"ctrl_tcp: TCP socket listening on 127.0.0.1:{self.ctrl_port}"
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            text = self.full_log()
            if listening in text:
                return True
            if "ctrl_tcp: failed to listen" in text:
                return False
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"baresip {self.user} did not start:\n{self.log()}")
            time.sleep(0.05)

    def _read(self) -> None:
        assert self.sock is not None
        buf = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            while True:  # netstrings: <len>:<json>,
                colon = buf.find(b":")
                if colon < 0:
                    break
                n = int(buf[:colon])
                if len(buf) < colon + 1 + n + 1:
                    break
                msg = json.loads(buf[colon + 1:colon + 1 + n])
                buf = buf[colon + 2 + n:]
                with self._cv:
                    if msg.get("event"):
                        self.events.append(msg)
                    elif msg.get("response"):
                        self.responses[str(msg.get("token"))] = msg
                    self._cv.notify_all()

    def command(self, command: str, params: str = "", timeout: float = STEP_TIMEOUT) -> dict[str, object]:
        assert self.sock is not None
        token = f"t{len(self.responses)}-{time.monotonic_ns()}"
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self.sock.sendall(b"%d:%s," % (len(body), body))
        with self._cv:
            if not self._cv.wait_for(lambda: token in self.responses, timeout):
                raise AssertionError(f"baresip {self.user}: no response to {command} {params}\n{self.log()}")
            return self.responses[token]

    def wait_registered(self, timeout: float = STEP_TIMEOUT) -> None:
        """Registered (its REGISTER_OK may come before we are connected: ask `reginfo`)."""
        deadline = time.monotonic() + timeout
        while True:
            info = str(self.command("reginfo").get("data", ""))
            if re.search(r"\sOK\s", re.sub(r"\x1b\[[0-9;]*m", " ", info)):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"baresip {self.user} not registered: {info!r}\n{self.log()}")
            time.sleep(0.2)

    def wait_event(self, kind: str, timeout: float = STEP_TIMEOUT, after: int = 0) -> dict[str, object]:
        """The first event of type `kind` (REGISTER_OK, CALL_INCOMING, CALL_ESTABLISHED, CALL_CLOSED,
        ...) from index `after` of `events` on."""
        def found() -> dict[str, object] | None:
            return next((e for e in self.events[after:] if e.get("type") == kind), None)
        with self._cv:
            if not self._cv.wait_for(lambda: found() is not None, timeout):
                raise AssertionError(f"baresip {self.user}: no {kind} in {timeout}s; events="
                                     f"{[(e.get('type'), e.get('param')) for e in self.events]}\n{self.log()}")
            ev = found()
            assert ev is not None
            return ev

    def full_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log(self) -> str:
        text = self.full_log()
        # the SIP outcome first (what a user of the phone sees), then the tail
        outcome = [ln for ln in text.splitlines() if re.search(r"session closed|\d{3} [A-Z]|failed|error", ln)]
        return "\n".join(outcome[:20]) + "\n...\n" + text[-4000:]

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()
        stop_process(self.proc, timeout=5)


class Linphone:
    """linphonec 5.1 with its own rc file, driven over stdin; output lines collected from stdout.
    No sound card: the file player/recorder ("soundcard use files") sends `audio`."""

    def __init__(self, workdir: Path, user: str, proxy: tuple[str, int], transport: str = "udp",
                 audio: Path | None = None):
        self.dir = workdir / f"linphone-{user}"
        self.dir.mkdir()
        self.user, self.proxy, self.transport = user, proxy, transport
        self.aor = f"sip:{user}@{DOMAIN}"
        self.audio = audio
        self.log_path = self.dir / "linphonec.log"
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._cv = threading.Condition()
        self._reader: threading.Thread | None = None

    def _write_rc(self) -> Path:
        host, port = self.proxy
        rtp = free_udp_range(2)  # RTP and RTCP
        rc = self.dir / "linphonerc"
        # -1: belle-sip binds port 0 and the kernel picks. A port we picked as free a moment ago
        # can be taken before linphonec binds it (CI once saw "TCP bind() failed ... in use" and
        # a phone that never registered); the phone reports its port in Via/Contact anyway.
        rc.write_text(f"""[sip]
sip_port=-1
sip_tcp_port=-1
sip_tls_port=-1
default_proxy=0
register_only_when_network_is_up=0
ipv6_enabled=0
verify_server_certs=0
verify_server_cn=0

[net]
firewall_policy=0
nat_policy_ref=

[rtp]
audio_rtp_port={rtp}
audio_jitt_comp=60

[sound]
playback_dev_id=
capture_dev_id=
echocancellation=0

[video]
enabled=0
capture=0
display=0

[proxy_0]
reg_proxy=<sip:{host}:{port};transport={self.transport}>
reg_route=<sip:{host}:{port};transport={self.transport};lr>
reg_identity=<{self.aor}>
reg_expires=600
reg_sendregister=1
publish=0
dial_escape_plus=0

[misc]
version_check_url_root=
enable_basic_to_client_group_chat_room_migration=0
""")
        return rc

    def start(self) -> Linphone:
        exe = require_peer("linphonec")
        rc = self._write_rc()
        env = dict(os.environ, HOME=str(self.dir))
        (self.dir / ".local" / "share" / "linphone").mkdir(parents=True)  # its call-log database
        self.proc = subprocess.Popen([exe, "-c", str(rc), "-d", "6", "-l", str(self.log_path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1, cwd=self.dir, env=env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.send("soundcard use files")
        self.send(f"play {self.audio or tone(self.dir / 'tone.wav')}")
        return self

    def wait_registered(self, timeout: float = STEP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            mark = len(self.lines)
            self.send("status register")
            line = self.wait_line(r"\bregistered[,=]", after=mark)  # "registered, identity=..." or "=0"
            if "registered," in line:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"linphonec {self.user} not registered: {line}\n{self.log()}")
            time.sleep(0.2)

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cv:
                self.lines.append(line.rstrip("\n"))
                self._cv.notify_all()

    def send(self, line: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_line(self, pattern: str, timeout: float = STEP_TIMEOUT, after: int = 0) -> str:
        rx = re.compile(pattern)
        def found() -> str | None:
            return next((ln for ln in self.lines[after:] if rx.search(ln)), None)
        with self._cv:
            if not self._cv.wait_for(lambda: found() is not None, timeout):
                raise AssertionError(f"linphonec {self.user}: no line /{pattern}/ in {timeout}s:\n"
                                     + "\n".join(self.lines[-40:]))
            line = found()
            assert line is not None
            return line

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop_process(self.proc, timeout=5)
        if self._reader is not None:
            self._reader.join(5)  # stdout is at EOF once the process is gone
        if self.proc is not None:
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
