"""Server certificates: the configured pair, or a self-signed one made once and kept.

Every TLS listener gets its `ssl.SSLContext` from `CertStore.server_context()`. Those context
objects live as long as the listener and are never rebound. A new certificate cannot simply be
loaded *into* them: OpenSSL keeps one certificate per key type in a context, so an RSA pair
loaded after an ECDSA one sits next to it and ECDSA-capable clients keep getting the old one.
Instead, each certificate change builds fresh contexts, and the listener's context hands every
new handshake to the freshest one from its SNI callback (which OpenSSL runs for every
ClientHello, with or without a server name). Established connections carry on untouched.

Protocol floor of every listener made here (provisioning, SIP TLS, HTTPS router): TLS 1.2 and
1.3; under TLS 1.2 only ECDHE key exchange with an AEAD cipher (AES-GCM, ChaCha20-Poly1305),
authenticated by whichever key the certificate has (ECDSA or RSA).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import os
import ssl
import weakref
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from proxyd.config import TLS_KEY_TYPES

log = logging.getLogger("proxyd.tls")

#: one per name of one order; more is a bug, not load
MAX_ALPN_CHALLENGES = 64
SELF_SIGNED_DAYS = 825  # the longest validity common clients accept for a server cert
#: TLS 1.2 suites: forward secret (ECDHE) and AEAD only; ECDSA and RSA certificates both match
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!MD5:!DSS"


def check_pair(cert_pem: str, key_pem: str) -> str | None:
    """Why a PEM certificate + key pair is unusable, or None when it is fine."""
    try:
        certs = x509.load_pem_x509_certificates(cert_pem.encode())
    except ValueError as exc:
        return f"certificate does not parse: {exc}"
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        return f"key does not parse (unencrypted PEM expected): {exc}"
    pub = certs[0].public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    mine = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if pub != mine:
        return "certificate and key do not match"
    return None


def fingerprint(cert_pem: str) -> str:
    """SHA-256 fingerprint of the leaf certificate, hex with colons."""
    der = x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def key_type(cert_pem: str) -> str | None:
    """The TLS_KEY_TYPES name of the leaf certificate's key, or None for any other key."""
    pub = x509.load_pem_x509_certificate(cert_pem.encode()).public_key()
    if isinstance(pub, ec.EllipticCurvePublicKey) and isinstance(pub.curve, ec.SECP256R1):
        return "ecdsa-p256"
    if isinstance(pub, rsa.RSAPublicKey) and pub.key_size in (2048, 3072):
        return f"rsa-{pub.key_size}"
    return None


def _new_key(kind: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    if kind == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind in ("rsa-2048", "rsa-3072"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[4:]))
    raise ValueError(f"unknown key type {kind!r}, expected one of {', '.join(TLS_KEY_TYPES)}")


def make_self_signed(fqdn: str, addresses: list[str], kind: str = "ecdsa-p256") -> tuple[str, str]:
    """A fresh key of `kind` and a self-signed certificate for fqdn (+ IP SANs). Returns PEMs."""
    key = _new_key(kind)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, fqdn[:64])])
    sans: list[x509.GeneralName] = []
    for item in [fqdn, *addresses]:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(item)))
        except ValueError:
            sans.append(x509.DNSName(item))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return cert_pem, key_pem


def write_private(path: Path, data: str) -> None:
    """Write a secret file that is 0600 from its first byte (no window with wider mode)."""
    # the pid: with workers several processes write the same file of the shared certs/ at once
    tmp = path.with_suffix(f"{path.suffix}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


@dataclass(frozen=True)
class CertPair:
    cert_pem: str
    key_pem: str
    self_signed: bool

    @cached_property  # read on every status and scrape: parse the certificate once
    def fingerprint(self) -> str:
        return fingerprint(self.cert_pem)

    @cached_property
    def not_after(self) -> float:
        """Expiry of the leaf certificate, seconds since epoch."""
        return x509.load_pem_x509_certificate(self.cert_pem.encode()).not_valid_after_utc.timestamp()

    @cached_property
    def issuer(self) -> str:
        return x509.load_pem_x509_certificate(self.cert_pem.encode()).issuer.rfc4514_string()


class CertStore:
    """Holds the proxy's current server certificate and every listener context made from it."""

    def __init__(self, certs_dir: Path):
        self.dir = certs_dir
        self.current: CertPair | None = None
        # listener context -> its ALPN list, and -> the context holding the current certificate
        # (absent until the first change after the listener was made: it holds that one itself)
        self._alpn: weakref.WeakKeyDictionary[ssl.SSLContext, list[str] | None] = weakref.WeakKeyDictionary()
        self._fresh: weakref.WeakKeyDictionary[ssl.SSLContext, ssl.SSLContext] = weakref.WeakKeyDictionary()
        #: TLS-ALPN-01 (RFC 8737): server name -> context with its challenge certificate, only while
        #: an order waits for it; the HTTPS listener reads it live (proxyd/tls_accept.py)
        self.alpn_challenges: dict[str, ssl.SSLContext] = {}

    # -- TLS-ALPN-01 ----------------------------------------------------------------------
    def add_alpn_challenge(self, name: str, cert_pem: str, key_pem: str) -> None:
        if len(self.alpn_challenges) >= MAX_ALPN_CHALLENGES and name not in self.alpn_challenges:
            raise ValueError("too many TLS-ALPN-01 challenges at once")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["acme-tls/1"])
        self._load(ctx, cert_pem, key_pem)
        self.alpn_challenges[name.lower()] = ctx

    def drop_alpn_challenge(self, name: str) -> None:
        self.alpn_challenges.pop(name.lower(), None)

    # -- selecting the certificate ------------------------------------------------------
    def use(
        self, cert_pem: str | None, key_pem: str | None, fqdn: str, addresses: list[str],
        key_type: str = "ecdsa-p256",
    ) -> CertPair:
        """Make the configured pair (or the kept self-signed one of key_type) current; returns it."""
        if cert_pem and key_pem:
            pair = CertPair(cert_pem, key_pem, self_signed=False)
        else:
            pair = self._self_signed(fqdn, addresses, key_type)
        if pair != self.current:
            self._install(pair)
        return pair

    def _self_signed(self, fqdn: str, addresses: list[str], kind: str) -> CertPair:
        cert_path, key_path = self.dir / "self-signed.pem", self.dir / "self-signed.key"
        if cert_path.exists() and key_path.exists():
            cert_pem, key_pem = cert_path.read_text(), key_path.read_text()
            if check_pair(cert_pem, key_pem):
                reason = "unusable"
            elif not covers(cert_pem, fqdn):
                reason = "fqdn_changed"
            elif key_type(cert_pem) != kind:
                reason = "key_type_changed"
            else:
                return CertPair(cert_pem, key_pem, self_signed=True)
            log.info("event=self_signed_renew reason=%s fqdn=%s key_type=%s", reason, fqdn, kind)
        cert_pem, key_pem = make_self_signed(fqdn, addresses, kind)
        self.dir.mkdir(parents=True, exist_ok=True)
        write_private(key_path, key_pem)
        cert_path.write_text(cert_pem)
        log.info("event=self_signed_created fqdn=%s key_type=%s fingerprint=%s", fqdn, kind, fingerprint(cert_pem))
        return CertPair(cert_pem, key_pem, self_signed=True)

    def _install(self, pair: CertPair) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        # for the operator; the contexts load the pair from memory (_load), never from these files,
        # which other workers of the same certs/ may be replacing
        write_private(self.dir / "current.key", pair.key_pem)
        write_private(self.dir / "current.pem", pair.cert_pem)
        self.current = pair
        for listener, alpn in list(self._alpn.items()):
            self._fresh[listener] = self._context(alpn)
        log.info("event=certificate_active self_signed=%s key_type=%s fingerprint=%s",
                 pair.self_signed, key_type(pair.cert_pem) or "other", pair.fingerprint)

    # -- contexts for listeners --------------------------------------------------------
    def server_context(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        """A TLS 1.2+ server context that follows every later certificate change."""
        if self.current is None:
            raise RuntimeError("CertStore.use() must run before contexts are made")
        ctx = self._context(alpn)
        ctx.sni_callback = self._hand_over
        self._alpn[ctx] = alpn
        return ctx

    def _context(self, alpn: list[str] | None) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
        ctx.set_ciphers(TLS12_CIPHERS)
        if alpn:
            ctx.set_alpn_protocols(alpn)
        assert self.current is not None
        self._load(ctx, self.current.cert_pem, self.current.key_pem)
        return ctx

    def _load(self, ctx: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
        """load_cert_chain reads files only: key and chain in one file of this process, gone right after."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"load-{os.getpid()}.pem"
        write_private(path, key_pem + "\n" + cert_pem)
        try:
            ctx.load_cert_chain(path)
        finally:
            path.unlink(missing_ok=True)

    def _hand_over(
        self, conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, listener: ssl.SSLContext
    ) -> None:
        """SNI callback (runs for every ClientHello): this handshake uses the current certificate."""
        fresh = self._fresh.get(listener)
        if fresh is not None:
            conn.context = fresh


def covers(cert_pem: str, fqdn: str) -> bool:
    """Whether the leaf certificate's SAN names fqdn (or the IP address) exactly."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    names = {n.lower() for n in san.get_values_for_type(x509.DNSName)}
    names |= {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    return fqdn.lower() in names
