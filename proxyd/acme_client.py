"""One ACME (RFC 8555) issuance or revocation with certbot's `acme` library, blocking.

The library is synchronous (requests); proxyd/acme_task.py runs these calls in a worker thread.
The certificate key is made here and returned to the caller only: it never leaves the proxy.
Challenges: HTTP-01 answered from `Http01Tokens`, which the HTTP port serves under
/.well-known/acme-challenge/ before routing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import josepy as jose
import requests
from acme import challenges, client, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from proxyd.tls import _new_key, write_private

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


class Http01Tokens:
    """token -> key authorization for the HTTP-01 challenges in flight (bounded, released per order)."""

    def __init__(self) -> None:
        self._tokens: dict[str, str] = {}

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
    tokens: Http01Tokens, ca_bundle: str | bool = True,
) -> Issued:
    """Order, validate (HTTP-01) and fetch a certificate for names with a fresh key of key_type."""
    seen: dict[str, float] = {}
    try:
        return _issue(directory, key_path, email, names, key_type, tokens, ca_bundle, seen)
    except messages.Error as exc:
        retry = seen.get("retry_after") if exc.typ == RATE_LIMITED else None
        raise AcmeError(f"{exc.typ}: {exc.detail}", retry) from exc
    except requests.RequestException as exc:  # refused, timed out, the CA's TLS not trusted
        raise AcmeError(f"CA unreachable: {type(exc).__name__}: {exc}") from exc
    except (errors.Error, OSError, ValueError) as exc:
        raise AcmeError(f"{type(exc).__name__}: {exc}") from exc


def _issue(
    directory: str, key_path: Path, email: str | None, names: list[str], key_type: str,
    tokens: Http01Tokens, ca_bundle: str | bool, seen: dict[str, float],
) -> Issued:
    acme = _client(directory, account_key(key_path), email, ca_bundle, seen)
    key = _new_key(key_type)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    order = acme.new_order(crypto_util.make_csr(key_pem.encode(), names))
    held: list[str] = []
    try:
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue
            chall = next((c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)), None)
            if chall is None:
                raise AcmeError(f"the CA offers no HTTP-01 challenge for {authz.body.identifier.value}")
            response, validation = chall.response_and_validation(acme.net.key)
            tokens.add(chall.chall.encode("token"), validation)
            held.append(chall.chall.encode("token"))
            acme.answer_challenge(chall, response)
        deadline = dt.datetime.now() + dt.timedelta(seconds=ORDER_DEADLINE)
        done = acme.poll_and_finalize(order, deadline=deadline)
    finally:
        for token in held:
            tokens.discard(token)
    leaf = x509.load_pem_x509_certificate(done.fullchain_pem.encode())
    return Issued(done.fullchain_pem, key_pem, leaf.not_valid_before_utc.timestamp(),
                  leaf.not_valid_after_utc.timestamp(), leaf.issuer.rfc4514_string())


def revoke(directory: str, key_path: Path, email: str | None, cert_pem: str, ca_bundle: str | bool = True) -> None:
    acme = _client(directory, account_key(key_path), email, ca_bundle)
    acme.revoke(x509.load_pem_x509_certificate(cert_pem.encode()), 0)
