"""One ACME (RFC 8555) issuance or revocation with certbot's `acme` library, blocking.

The library is synchronous (requests); proxyd/acme_task.py runs these calls in a worker thread.
The certificate key is made here and returned to the caller only: it never leaves the proxy.
Challenges: HTTP-01 answered from `Http01Tokens` (served under /.well-known/acme-challenge/),
TLS-ALPN-01 (RFC 8737) from `AlpnCerts` (a certificate per name that the HTTPS listener hands to a
ClientHello offering `acme-tls/1`). Each is a `Responder`: put before the order is answered,
removed on every way out of it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import josepy as jose
import requests
from acme import challenges, client, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

from proxyd.tls import _new_key, write_private

log = logging.getLogger("proxyd.acme")

RATE_LIMITED = "urn:ietf:params:acme:error:rateLimited"
#: how long one issuance may take end to end (validation included) before it counts as failed
ORDER_DEADLINE = 90.0
#: most tokens held at once: one per name of one order; more is a bug, not load
MAX_TOKENS = 64


class AcmeError(Exception):
    """An issuance failed; retry_after is the CA's Retry-After in seconds, if it sent one."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class Responder(Protocol):
    """Answers one kind of challenge while an order is in flight."""

    @property
    def kind(self) -> type[challenges.KeyAuthorizationChallenge]: ...

    def put(self, name: str, chall: Any, account: jose.JWK) -> None: ...
    def remove(self, name: str, chall: Any) -> None: ...


class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    typ = "tls-alpn-01"


@challenges.Challenge.register
class TLSALPN01(challenges.KeyAuthorizationChallenge):
    """RFC 8737; certbot's library dropped its own class (it needed pyOpenSSL), the wire form is this."""

    response_cls = TLSALPN01Response
    typ = response_cls.typ

    def validation(self, account_key: jose.JWK, **unused: Any) -> bytes:
        """The acmeIdentifier extension's value: SHA-256 of the key authorization."""
        return hashlib.sha256(self.key_authorization(account_key).encode()).digest()


#: id-pe-acmeIdentifier (RFC 8737 section 6.1)
ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")


def alpn_challenge_pair(name: str, digest: bytes) -> tuple[str, str]:
    """A self-signed certificate for name carrying digest in a critical acmeIdentifier, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            # the value is the DER OCTET STRING of the 32-byte digest
            .add_extension(x509.UnrecognizedExtension(ACME_IDENTIFIER, b"\x04\x20" + digest), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


class ChallengeCerts(Protocol):
    """Holds TLS-ALPN-01 challenge certificates for the HTTPS listeners: a CertStore, or with workers
    the parent's record of what it fans out to them."""

    def add_alpn_challenge(self, name: str, cert_pem: str, key_pem: str) -> None: ...

    def drop_alpn_challenge(self, name: str) -> None: ...


class AlpnCerts:
    """TLS-ALPN-01: the challenge certificate of each name goes into the certificate store."""

    kind = TLSALPN01

    def __init__(self, certs: ChallengeCerts):
        self.certs = certs

    def put(self, name: str, chall: Any, account: jose.JWK) -> None:
        self.certs.add_alpn_challenge(name, *alpn_challenge_pair(name, chall.chall.validation(account)))

    def remove(self, name: str, chall: Any) -> None:
        self.certs.drop_alpn_challenge(name)


class Dns01Records:
    """DNS-01: the TXT record `_acme-challenge.<name>` is set by whoever holds the DNS account (the
    manager, asked by the agent); `change(name, value, present)` raises on failure."""

    kind = challenges.DNS01

    def __init__(self, change: Callable[[str, str, bool], None]):
        self.change = change
        self._values: dict[str, str] = {}

    def put(self, name: str, chall: Any, account: jose.JWK) -> None:
        self._values[name] = value = chall.chall.validation(account)
        try:
            self.change(name, value, True)
        except Exception as exc:  # noqa: BLE001 - whatever the manager link says, the order failed
            raise AcmeError(f"DNS-01 TXT record for {name} not set: {exc}") from exc

    def remove(self, name: str, chall: Any) -> None:
        value = self._values.pop(name, None)
        if value is not None:
            self.change(name, value, False)


class Http01Tokens:
    """token -> key authorization for the HTTP-01 challenges in flight (bounded, released per order)."""

    kind = challenges.HTTP01

    def __init__(self, tokens: dict[str, str] | None = None) -> None:
        # shared with the router's plain-HTTP listeners when one owns the HTTP-01 port
        self._tokens: dict[str, str] = {} if tokens is None else tokens

    def put(self, name: str, chall: Any, account: jose.JWK) -> None:
        self.add(chall.chall.encode("token"), chall.chall.validation(account))

    def remove(self, name: str, chall: Any) -> None:
        self.discard(chall.chall.encode("token"))

    def add(self, token: str, validation: str) -> None:
        if len(self._tokens) >= MAX_TOKENS:
            raise AcmeError("too many HTTP-01 challenges in flight")
        self._tokens[token] = validation

    def discard(self, token: str) -> None:
        self._tokens.pop(token, None)

    def answer(self, path: str) -> str | None:
        """The body for a GET of `path`, or None when it is no challenge of ours."""
        prefix = "/.well-known/acme-challenge/"
        if not path.startswith(prefix):
            return None
        return self._tokens.get(path[len(prefix):])


@dataclass(frozen=True)
class Issued:
    fullchain_pem: str
    key_pem: str
    not_before: float
    not_after: float
    issuer: str


def account_key(path: Path) -> jose.JWKRSA:
    """The ACME account key, made once and kept 0600 in the state dir like the other secrets."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode())
    assert isinstance(key, rsa.RSAPrivateKey)
    return jose.JWKRSA(key=key)


def _client(
    directory: str, key: jose.JWKRSA, email: str | None, ca_bundle: str | bool, seen: dict[str, float] | None = None,
) -> client.ClientV2:
    # requests takes a CA bundle path for verify; the library's annotation says bool only
    net = client.ClientNetwork(key, verify_ssl=ca_bundle, user_agent="pforte", timeout=10)  # type: ignore[arg-type]
    if seen is not None:
        # the library's error objects drop the headers: keep the CA's last Retry-After (seconds form)
        def remember(response, *args, **kwargs):
            value = response.headers.get("Retry-After", "")
            if value.isdigit():
                seen["retry_after"] = float(value)
        net.session.hooks["response"].append(remember)
    acme = client.ClientV2(client.ClientV2.get_directory(directory, net), net=net)
    reg = messages.NewRegistration.from_data(email=email, terms_of_service_agreed=True)
    try:
        acme.new_account(reg)
    except errors.ConflictError as exc:  # the kept key already has an account: use it
        net.account = messages.RegistrationResource(uri=exc.location, body=messages.Registration())
    return acme


def issue(
    directory: str, key_path: Path, email: str | None, names: list[str], key_type: str,
    responder: Responder, ca_bundle: str | bool = True,
) -> Issued:
    """Order, validate (the responder's challenge) and fetch a certificate for names with a fresh
    key of key_type."""
    seen: dict[str, float] = {}
    try:
        return _issue(directory, key_path, email, names, key_type, responder, ca_bundle, seen)
    except messages.Error as exc:
        retry = seen.get("retry_after") if exc.typ == RATE_LIMITED else None
        raise AcmeError(f"{exc.typ}: {exc.detail}", retry) from exc
    except requests.RequestException as exc:  # refused, timed out, the CA's TLS not trusted
        raise AcmeError(f"CA unreachable: {type(exc).__name__}: {exc}") from exc
    except (errors.Error, OSError, ValueError) as exc:
        raise AcmeError(f"{type(exc).__name__}: {exc}") from exc


def _issue(
    directory: str, key_path: Path, email: str | None, names: list[str], key_type: str,
    responder: Responder, ca_bundle: str | bool, seen: dict[str, float],
) -> Issued:
    acme = _client(directory, account_key(key_path), email, ca_bundle, seen)
    key = _new_key(key_type)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    order = acme.new_order(crypto_util.make_csr(key_pem.encode(), names))
    held: list[tuple[str, Any]] = []
    try:
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue
            name = authz.body.identifier.value
            chall = next((c for c in authz.body.challenges if isinstance(c.chall, responder.kind)), None)
            if chall is None:
                raise AcmeError(f"the CA offers no {responder.kind.typ} challenge for {name}")
            account = acme.net.key
            assert account is not None  # _client registered it
            responder.put(name, chall, account)
            held.append((name, chall))
            acme.answer_challenge(chall, chall.chall.response(account))
        deadline = dt.datetime.now() + dt.timedelta(seconds=ORDER_DEADLINE)
        done = acme.poll_and_finalize(order, deadline=deadline)
    finally:
        for name, chall in held:
            try:
                responder.remove(name, chall)
            except Exception as exc:  # noqa: BLE001 - a stale challenge must not hide the order's outcome
                log.warning("event=acme_challenge_not_removed name=%s kind=%s error=%s", name,
                            responder.kind.typ, exc)
    leaf = x509.load_pem_x509_certificate(done.fullchain_pem.encode())
    return Issued(done.fullchain_pem, key_pem, leaf.not_valid_before_utc.timestamp(),
                  leaf.not_valid_after_utc.timestamp(), leaf.issuer.rfc4514_string())


def revoke(directory: str, key_path: Path, email: str | None, cert_pem: str, ca_bundle: str | bool = True) -> None:
    acme = _client(directory, account_key(key_path), email, ca_bundle)
    acme.revoke(x509.load_pem_x509_certificate(cert_pem.encode()), 0)
