"""Real prosody instances for the XMPP tests: one process per XMPP domain, own CA, own ports."""

from __future__ import annotations

import datetime
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import free_port, stop_process

PASSWORD = "pw-only-the-backend-sees-9f3c"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class TestCA:
    """A throwaway CA; `issue(domain, dir)` writes a leaf certificate and key for `domain`."""

    def __init__(self, directory: Path):
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(_name("pforte test CA")).issuer_name(_name("pforte test CA"))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path = directory / "ca.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, domain: str, directory: Path) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder().subject_name(_name(domain)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        crt, pem = directory / f"{domain}.crt", directory / f"{domain}.key"
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pem.write_bytes(_pem_key(key))
        pem.chmod(0o600)
        return crt, pem


CONFIG = """
run_as_root = true  -- CI runs as root; this is a throwaway user-level test server
daemonize = false
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = "{d}/prosody.log" }} }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
c2s_direct_tls_ports = {{ {direct_port} }}
modules_enabled = {{ "roster", "saslauth", "tls", "disco", "ping", "posix" }}
modules_disabled = {{ "s2s", "admin_socket" }}
c2s_require_encryption = true
authentication = "internal_plain"
storage = "internal"
certificates = "{d}"
ssl = {{ certificate = "{crt}", key = "{key}" }}
VirtualHost "{domain}"
  ssl = {{ certificate = "{crt}", key = "{key}" }}
"""


@dataclass
class Prosody:
    domain: str
    port: int
    direct_port: int
    directory: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, program: str, ca: TestCA, users: tuple[str, ...]) -> Prosody:
        crt, key = ca.issue(self.domain, self.directory)
        accounts = self.directory / "data" / self.domain.replace(".", "%2e") / "accounts"
        accounts.mkdir(parents=True)
        for user in users:  # internal_plain store, pre-seeded: no prosodyctl (which wants to drop root)
            (accounts / f"{user}.dat").write_text(f'return {{ ["password"] = "{PASSWORD}"; }};\n')
        cfg = self.directory / "prosody.cfg.lua"
        cfg.write_text(CONFIG.format(d=self.directory, port=self.port, direct_port=self.direct_port,
                                     crt=crt, key=key, domain=self.domain))
        self.proc = subprocess.Popen([program, "--config", str(cfg), "-F"], cwd=self.directory,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self._wait_listening()
        return self

    def _wait_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"prosody exited with {self.proc.returncode}:\n{self.log()}")
            try:
                for port in (self.port, self.direct_port):
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"prosody did not listen in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return (self.directory / "prosody.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        stop_process(self.proc, 10)


def new_prosody(domain: str, base: Path) -> Prosody:
    directory = base / domain
    directory.mkdir()
    return Prosody(domain, free_port(), free_port(), directory)
