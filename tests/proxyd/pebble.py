"""A real pebble (Let's Encrypt's ACME test CA) on loopback for the ACME tests.

Pebble's Debian package ships no certificate for its own HTTPS listener: one is made here with a
throw-away CA (`tls_ca` is the bundle the client verifies pebble's listener with). Issued
certificates chain to pebble's own root, fetched from its management port (`root_pem()`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import free_port

PEBBLE = shutil.which("pebble")


def _tls_pair(tmp: Path) -> tuple[Path, Path, Path]:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble listener test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@dataclass
class Pebble:
    directory: str
    management: str
    tls_ca: str
    http_port: int
    proc: subprocess.Popen[bytes]
    log: Any

    def get(self, path: str) -> str:
        """GET from pebble's management interface (blocking)."""
        ctx = ssl.create_default_context(cafile=self.tls_ca)
        with urllib.request.urlopen(self.management + path, context=ctx, timeout=5) as r:  # noqa: S310
            return r.read().decode()

    def root_pem(self) -> str:
        return self.get("/roots/0")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


def start_pebble(
    tmp: Path, *, validity: int = 3600, always_valid: bool = False, tls_port: int | None = None,
    dns_server: str | None = None,
) -> Pebble:
    """tls_port: where pebble's VA connects for TLS-ALPN-01 (the proxy's HTTPS listener);
    dns_server: host:port pebble resolves names (and DNS-01 TXT records) with."""
    tmp.mkdir(parents=True, exist_ok=True)
    ca, cert, key = _tls_pair(tmp)
    port, mport, http_port = free_port(), free_port(), free_port()
    (tmp / "pebble.json").write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{port}", "managementListenAddress": f"127.0.0.1:{mport}",
        "certificate": str(cert), "privateKey": str(key), "httpPort": http_port, "tlsPort": tls_port or free_port(),
        "ocspResponderURL": "", "externalAccountBindingRequired": False,
        "certificateValidityPeriod": validity}}))
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}
    if always_valid:
        env["PEBBLE_VA_ALWAYS_VALID"] = "1"
    assert PEBBLE is not None
    log = open(tmp / "pebble.log", "wb")  # noqa: SIM115 - lives as long as the process
    argv = [PEBBLE, "-config", str(tmp / "pebble.json")] + (["-dnsserver", dns_server] if dns_server else [])
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            socket.create_connection(("127.0.0.1", mport), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        log.close()
        raise RuntimeError("pebble did not start: " + (tmp / "pebble.log").read_text())
    return Pebble(f"https://127.0.0.1:{port}/dir", f"https://127.0.0.1:{mport}", str(ca), http_port, proc, log)
