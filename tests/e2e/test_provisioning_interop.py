"""Interop matrix, provisioning row: curl with phone User-Agents through a real proxyd.

What a phone does at boot, done by the real curl binary: fetch its common and its per-MAC file
over HTTPS from the URL it was given (an encrypted token URL, or a trusted `/p/<instance>/<mac>`
one), with the base URL and an appended file name, sometimes a HEAD first (Polycom checks a file's
size before it downloads it). The certificate is the self-signed one proxyd makes, RSA or ECDSA
(`tls.key_type`), and the oldest firmwares speak TLS 1.2 only, so one run is forced to TLS 1.2
with an RSA suite. curl checks the certificate against the proxy's own file and its name, as a
phone that was given the proxy's certificate does. The backend is a small real HTTP server that
serves files from a directory per MAC, named the way the vendors name them.
"""

from __future__ import annotations

import base64
import re
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.provisioning.token import encode_token
from tests.support import ProxydProcess, base_config, free_port, require_peer

KEY = base64.b64encode(secrets.token_bytes(32)).decode()
FQDN = "proxy.test"

# (User-Agent as the firmware sends it, MAC, file the phone appends, what the backend keys files by)
YEALINK = ("Yealink SIP-T46S 66.86.0.15 80:5e:c0:1a:2b:3c", "805ec01a2b3c", "805ec01a2b3c.cfg")
POLYCOM = ("FileTransport PolycomVVX-VVX_450-UA/6.4.3.5018 Type/Application", "0004f2a1b2c3",
           "0004f2a1b2c3-phone.cfg")
SNOM = ("Mozilla/4.0 (compatible; snom D785 10.1.73.16 000413A1B2C3)", "000413A1B2C3", "snomD785-000413A1B2C3.htm")


@dataclass
class Seen:
    method: str
    path: str
    user_agent: str


class Files(BaseHTTPRequestHandler):
    """Serves `root/<path>`; records each request. HEAD answers like GET, without the body."""

    protocol_version = "HTTP/1.1"
    root: Path
    seen: list[Seen]

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        self.seen.append(Seen(self.command, self.path, self.headers.get("User-Agent", "")))
        target = (self.root / self.path.lstrip("/")).resolve()
        if not target.is_relative_to(self.root) or not target.is_file():
            self.send_error(404)
            return
        data = target.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def files(tmp_path: Path) -> Iterator[tuple[str, list[Seen]]]:
    """A provisioning backend: lowercase per-MAC dirs for yealink/polycom, uppercase with '-' for snom."""
    root = (tmp_path / "files").resolve()
    for top, mac, names in [("prov", "805ec01a2b3c", ["805ec01a2b3c.cfg", "y000000000000.cfg"]),
                            ("prov", "0004f2a1b2c3", ["0004f2a1b2c3-phone.cfg", "000000000000.cfg"]),
                            ("snom", "00-04-13-A1-B2-C3", ["snomD785-000413A1B2C3.htm"])]:
        (root / top / mac).mkdir(parents=True)
        for name in names:
            (root / top / mac / name).write_text(f"# {name} for {mac}\n" + "account.1.enable = 1\n" * 50)
    seen: list[Seen] = []
    handler = type("Handler", (Files,), {"root": root, "seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


@dataclass
class Fetch:
    status: int
    body: bytes
    headers: str
    protocol: str
    cipher: str
    key: str  # "rsa-2048", "ecdsa-p256", ... of the certificate the proxy showed


def curl(url: str, cafile: Path, user_agent: str, *extra: str) -> Fetch:
    """The real curl, verifying the proxy's certificate by file and name, as a phone would."""
    port = re.match(r"https://[^:/]+:(\d+)", url).group(1)  # type: ignore[union-attr]
    headers = [] if "-I" in extra else ["-D", "-"]  # -I writes the head to the output itself
    res = subprocess.run(
        [require_peer("curl"), "-sS", "-v", "--cacert", str(cafile), "--resolve", f"{FQDN}:{port}:127.0.0.1",
         "-A", user_agent, *headers, "-o", "-", "-w", "\n@@certs@@%{certs}", "--max-time", "20", *extra, url],
        capture_output=True, timeout=30,
    )
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    out, _, certs = res.stdout.partition(b"\n@@certs@@")
    head, _, body = out.partition(b"\r\n\r\n")
    negotiated = re.search(rb"SSL connection using (\S+) / (\S+)", res.stderr)
    assert negotiated, res.stderr.decode(errors="replace")
    leaf = x509.load_pem_x509_certificate(certs[certs.index(b"-----BEGIN"):]).public_key()
    key = (f"rsa-{leaf.key_size}" if isinstance(leaf, rsa.RSAPublicKey)
           else f"ecdsa-{leaf.curve.name}" if isinstance(leaf, ec.EllipticCurvePublicKey) else "other")
    return Fetch(int(head.split()[1]), body, head.decode(), negotiated.group(1).decode(),
                 negotiated.group(2).decode(), key.replace("secp256r1", "p256"))


def curl_fails(url: str, cafile: Path, *extra: str) -> str:
    port = re.match(r"https://[^:/]+:(\d+)", url).group(1)  # type: ignore[union-attr]
    res = subprocess.run([require_peer("curl"), "-sS", "--cacert", str(cafile), "--resolve",
                          f"{FQDN}:{port}:127.0.0.1", "--max-time", "20", *extra, url],
                         capture_output=True, timeout=30)
    assert res.returncode != 0, res.stdout
    return res.stderr.decode(errors="replace")


def config(backend: str, mode: str, key_type: str, port: int, revision: int = 1) -> dict:
    return base_config(
        revision=revision,
        tls={"certificate_pem": None, "key_pem": None, "key_type": key_type},
        instances=[{"name": "acme", "provisioning": backend + "/prov/{mac}"},
                   {"name": "snomco", "provisioning": backend + "/snom/{MAC-}"}],
        services={"provisioning": {"mode": mode, "https_port": port, "http_port": free_port(), "key": KEY}},
    )


@pytest.mark.e2e
def test_rsa_certificate_tls12_and_encrypted_urls(
    proxyd: Callable[..., ProxydProcess], files: tuple[str, list[Seen]]
) -> None:
    backend, seen = files
    port = free_port()
    p = proxyd(config(backend, "encrypted", "rsa-2048", port))
    ca = p.state_dir / "certs" / "current.pem"
    base = f"https://{FQDN}:{port}/p/{encode_token(KEY, 'acme', '80:5E:C0:1A:2B:3C')}"
    ua, mac, own = YEALINK

    # a TLS 1.2-only firmware with an RSA-only suite list: the common file, then its own
    common = curl(f"{base}/y000000000000.cfg", ca, ua, "--tlsv1.2", "--tls-max", "1.2",
                  "--ciphers", "ECDHE-RSA-AES128-GCM-SHA256")
    assert (common.status, common.protocol, common.cipher, common.key) == (
        200, "TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256", "rsa-2048")
    assert common.body.startswith(b"# y000000000000.cfg for 805ec01a2b3c\n")
    mine = curl(f"{base}/{own}", ca, ua, "--tls-max", "1.2", "--ciphers", "ECDHE-RSA-AES256-GCM-SHA384")
    assert (mine.status, mine.cipher) == (200, "ECDHE-RSA-AES256-GCM-SHA384")
    assert mine.body.startswith(f"# {own} for {mac}\n".encode())
    assert curl(f"{base}/{own}", ca, ua).protocol == "TLSv1.3"  # a current firmware gets 1.3

    # Polycom asks for the size first; HEAD: the length of the file, no body, the connection reusable
    ua, mac, own = POLYCOM
    pbase = f"https://{FQDN}:{port}/p/{encode_token(KEY, 'acme', mac)}"
    head = curl(f"{pbase}/{own}", ca, ua, "-I")
    assert head.status == 200 and head.body == b""
    length = int(re.search(r"(?im)^content-length: *(\d+)", head.headers).group(1))  # type: ignore[union-attr]
    got = curl(f"{pbase}/{own}", ca, ua)
    assert got.status == 200 and len(got.body) == length
    trust = ["--cacert", str(ca), "--resolve", f"{FQDN}:{port}:127.0.0.1", "-A", ua]  # --next resets options
    two = subprocess.run([require_peer("curl"), "-sS", *trust, "-I", f"{pbase}/{own}", "--next", *trust,
                          "-o", "/dev/null", "-w", "%{http_code} %{num_connects}", f"{pbase}/000000000000.cfg"],
                         capture_output=True, timeout=30)
    assert two.returncode == 0 and two.stdout.decode().endswith("200 0"), two  # GET after HEAD: same connection

    # what the backend saw: the template's lowercase MAC, the appended name, the phone's own User-Agent
    assert [(s.method, s.path, s.user_agent) for s in seen[:2]] == [
        ("GET", "/prov/805ec01a2b3c/y000000000000.cfg", YEALINK[0]),
        ("GET", f"/prov/805ec01a2b3c/{YEALINK[2]}", YEALINK[0]),
    ]
    assert ("HEAD", f"/prov/0004f2a1b2c3/{own}", ua) in [(s.method, s.path, s.user_agent) for s in seen]

    # refusals: a tampered token, the trusted form in this mode, TLS below 1.2, a static-RSA suite
    tampered = base[:-1] + ("B" if base[-1] == "A" else "A")
    assert curl(f"{tampered}/{YEALINK[2]}", ca, YEALINK[0]).status == 404
    assert curl(f"https://{FQDN}:{port}/p/acme/{YEALINK[1]}", ca, YEALINK[0]).status == 404
    # (SECLEVEL=0: this curl's OpenSSL would not offer TLS 1.1 at all; the proxy is to be the one refusing)
    curl_fails(f"{base}/{YEALINK[2]}", ca, "--tlsv1.1", "--tls-max", "1.1", "--ciphers", "DEFAULT@SECLEVEL=0")
    curl_fails(f"{base}/{YEALINK[2]}", ca, "--tls-max", "1.2", "--ciphers", "AES128-GCM-SHA256")
    # and the admin can read why: each refused handshake is logged with OpenSSL's reason
    deadline = time.monotonic() + 5
    while "reason=no_shared_cipher" not in p.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = p.output()
    assert "event=tls_handshake_failed service=provisioning client=127.0.0.1 reason=unsupported_protocol" in log
    assert "event=tls_handshake_failed service=provisioning client=127.0.0.1 reason=no_shared_cipher" in log


@pytest.mark.e2e
def test_ecdsa_certificate_trusted_urls_and_a_key_type_swap(
    proxyd: Callable[..., ProxydProcess], files: tuple[str, list[Seen]]
) -> None:
    backend, seen = files
    port = free_port()
    cfg = config(backend, "https", "ecdsa-p256", port)
    p = proxyd(cfg)
    ca = p.state_dir / "certs" / "current.pem"
    base = f"https://{FQDN}:{port}/p"

    # the URL forms phones build from a base URL: MAC as a segment (any spelling) + file, or the
    # file name alone when it carries the MAC
    ua = YEALINK[0]
    for path in ("acme/805EC01A2B3C/y000000000000.cfg", "acme/80-5e-c0-1a-2b-3c/y000000000000.cfg",
                 "acme/805ec01a2b3c.cfg"):
        got = curl(f"{base}/{path}", ca, ua, "--tls-max", "1.2")
        assert (got.status, got.protocol, got.key) == (200, "TLSv1.2", "ecdsa-p256"), path
        assert got.cipher.startswith("ECDHE-ECDSA-") and ("GCM" in got.cipher or "CHACHA20" in got.cipher)
    ua, mac, own = SNOM
    got = curl(f"{base}/snomco/{own}", ca, ua)
    assert (got.status, got.protocol) == (200, "TLSv1.3")
    assert got.body.startswith(f"# {own} for 00-04-13-A1-B2-C3\n".encode())  # {MAC-}: the backend's spelling
    head = curl(f"{base}/snomco/{own}", ca, ua, "-I")
    assert head.status == 200 and head.body == b""
    assert curl(f"{base}/acme/{POLYCOM[1]}/nosuch.cfg", ca, POLYCOM[0]).status == 404  # the backend's 404 passes
    assert [s.path for s in seen] == [
        "/prov/805ec01a2b3c/y000000000000.cfg", "/prov/805ec01a2b3c/y000000000000.cfg",
        "/prov/805ec01a2b3c/805ec01a2b3c.cfg",
        f"/snom/00-04-13-A1-B2-C3/{own}", f"/snom/00-04-13-A1-B2-C3/{own}", "/prov/0004f2a1b2c3/nosuch.cfg",
    ]

    # the admin switches to RSA for the older phones: a new self-signed certificate, at once, same listener
    old = ca.read_text()
    p.reload({**cfg, "revision": 2, "tls": {**cfg["tls"], "key_type": "rsa-3072"}})
    assert ca.read_text() != old
    got = curl(f"{base}/acme/{YEALINK[2]}", ca, YEALINK[0], "--tls-max", "1.2")
    assert (got.status, got.key) == (200, "rsa-3072") and got.cipher.startswith("ECDHE-RSA-")
    assert (curl(f"{base}/acme/{YEALINK[2]}", ca, YEALINK[0]).key) == "rsa-3072"  # TLS 1.3 clients too
    assert "key_type_changed" in p.output()


@pytest.mark.e2e
def test_sip_tls_and_https_router_take_the_rsa_certificate_under_tls12(proxyd: Callable[..., ProxydProcess]) -> None:
    # one certificate and one context recipe for every listener pforte terminates TLS on
    import ssl

    sip_port, web_port, prov_port = free_port(), free_port(), free_port()
    p = proxyd(base_config(
        tls={"certificate_pem": None, "key_pem": None, "key_type": "rsa-2048"},
        services={"sip": {"mode": "tls", "tls_port": sip_port, "udp_port": free_port()},
                  "web": {"mode": "web_and_rest", "port": web_port},
                  "provisioning": {"mode": "https", "https_port": prov_port}},
    ))
    client = ssl.create_default_context(cafile=str(p.state_dir / "certs" / "current.pem"))
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    for port in (sip_port, web_port, prov_port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                client.wrap_socket(raw, server_hostname=FQDN) as tls:
            name, proto, _ = tls.cipher()  # type: ignore[misc]
            assert proto == "TLSv1.2" and name.startswith("ECDHE-RSA-") and "GCM" in name, (port, name)
