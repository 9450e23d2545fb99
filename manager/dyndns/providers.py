"""DNS update providers: RFC 2136 dynamic update with TSIG, and Cloudflare's v4 API.

Each provider has `update(name, address) -> str` (a short, credential-free summary of what it
did) and raises `DdnsError` with a reason an admin can act on.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import dns.exception
import dns.name
import dns.query
import dns.rcode
import dns.tsig
import dns.tsigkeyring
import dns.update
import httpx

log = logging.getLogger("manager.dyndns")

TTL = 60  # a moving proxy address should be picked up by resolvers within a minute
TIMEOUT = 5.0


class DdnsError(RuntimeError):
    """A DNS update failed; the message is safe to show (no credentials)."""


class Provider(Protocol):
    def update(self, name: str, address: str) -> str: ...


def _rdtype(address: str) -> str:
    return "AAAA" if ipaddress.ip_address(address).version == 6 else "A"


def _within(name: str, zone: str) -> None:
    if not dns.name.from_text(name).is_subdomain(dns.name.from_text(zone)):
        raise DdnsError(f"{name} is not inside zone {zone}")


@dataclass(frozen=True)
class Rfc2136:
    """RFC 2136 UPDATE over TCP, signed with TSIG (RFC 8945)."""

    server: str
    zone: str
    key_name: str
    secret: str = field(repr=False)  # base64, as in a BIND `key` statement
    algorithm: str = "hmac-sha256"
    port: int = 53

    def update(self, name: str, address: str) -> str:
        _within(name, self.zone)
        rdtype = _rdtype(address)
        keyring = dns.tsigkeyring.from_text({self.key_name: self.secret})
        upd = dns.update.UpdateMessage(
            self.zone, keyring=keyring, keyname=dns.name.from_text(self.key_name), keyalgorithm=self.algorithm,
        )
        # replace = delete the name's records of this type, then add ours: one atomic UPDATE
        upd.replace(dns.name.from_text(name), TTL, rdtype, address)
        try:
            resp = dns.query.tcp(upd, self.server, port=self.port, timeout=TIMEOUT)
        except (dns.exception.DNSException, OSError) as exc:
            where = f"{self.server}:{self.port}"
            raise DdnsError(f"DNS server {where} unreachable or refused: {type(exc).__name__}") from None
        rcode = resp.rcode()
        if rcode != dns.rcode.NOERROR:
            raise DdnsError(f"DNS server answered {dns.rcode.to_text(rcode)} for {name} {rdtype}")
        return f"{name} {rdtype} {address} (RFC 2136 at {self.server})"

    def txt(self, name: str, value: str, present: bool) -> str:
        """Add (present) or remove one TXT value of name, the others of name untouched (DNS-01)."""
        _within(name, self.zone)
        keyring = dns.tsigkeyring.from_text({self.key_name: self.secret})
        upd = dns.update.UpdateMessage(
            self.zone, keyring=keyring, keyname=dns.name.from_text(self.key_name), keyalgorithm=self.algorithm,
        )
        rdata = f'"{value}"'
        if present:
            upd.add(dns.name.from_text(name), TTL, "TXT", rdata)
        else:
            upd.delete(dns.name.from_text(name), "TXT", rdata)
        try:
            resp = dns.query.tcp(upd, self.server, port=self.port, timeout=TIMEOUT)
        except (dns.exception.DNSException, OSError) as exc:
            where = f"{self.server}:{self.port}"
            raise DdnsError(f"DNS server {where} unreachable or refused: {type(exc).__name__}") from None
        if resp.rcode() != dns.rcode.NOERROR:
            raise DdnsError(f"DNS server answered {dns.rcode.to_text(resp.rcode())} for {name} TXT")
        return f"{name} TXT {'added' if present else 'removed'} (RFC 2136 at {self.server})"


@dataclass(frozen=True)
class Cloudflare:
    """Cloudflare API v4 with a token scoped to the zone (DNS:Edit)."""

    zone: str
    token: str = field(repr=False)
    api: str = "https://api.cloudflare.com/client/v4"
    transport: httpx.BaseTransport | None = None

    def _client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.api, timeout=TIMEOUT, transport=self.transport,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )

    def update(self, name: str, address: str) -> str:
        _within(name, self.zone)
        rdtype = _rdtype(address)
        try:
            with self._client() as c:
                zone_id = self._one(c.get("/zones", params={"name": self.zone}), f"zone {self.zone}")["id"]
                found = self._result(c.get(f"/zones/{zone_id}/dns_records", params={"type": rdtype, "name": name}))
                body = {"type": rdtype, "name": name, "content": address, "ttl": TTL, "proxied": False}
                if found:
                    self._result(c.put(f"/zones/{zone_id}/dns_records/{found[0]['id']}", json=body))
                    verb = "updated"
                else:
                    self._result(c.post(f"/zones/{zone_id}/dns_records", json=body))
                    verb = "created"
        except httpx.HTTPError as exc:
            raise DdnsError(f"Cloudflare API unreachable: {type(exc).__name__}") from None
        return f"{name} {rdtype} {address} ({verb} at Cloudflare)"

    def txt(self, name: str, value: str, present: bool) -> str:
        """Add (present) or remove one TXT value of name (DNS-01)."""
        _within(name, self.zone)
        try:
            with self._client() as c:
                zone_id = self._one(c.get("/zones", params={"name": self.zone}), f"zone {self.zone}")["id"]
                if present:
                    body = {"type": "TXT", "name": name, "content": value, "ttl": TTL}
                    self._result(c.post(f"/zones/{zone_id}/dns_records", json=body))
                else:
                    found = self._result(c.get(f"/zones/{zone_id}/dns_records",
                                               params={"type": "TXT", "name": name, "content": value}))
                    for rec in found if isinstance(found, list) else []:
                        self._result(c.delete(f"/zones/{zone_id}/dns_records/{rec['id']}"))
        except httpx.HTTPError as exc:
            raise DdnsError(f"Cloudflare API unreachable: {type(exc).__name__}") from None
        return f"{name} TXT {'added' if present else 'removed'} (Cloudflare)"

    @staticmethod
    def _result(resp: httpx.Response) -> list[dict] | dict:
        try:
            data = resp.json()
        except ValueError:
            raise DdnsError(f"Cloudflare API answered HTTP {resp.status_code} without JSON") from None
        if resp.status_code >= 400 or not data.get("success"):
            errors = "; ".join(str(e.get("message", e)) for e in data.get("errors", [])) or f"HTTP {resp.status_code}"
            raise DdnsError(f"Cloudflare API refused: {errors}")
        return data["result"]

    def _one(self, resp: httpx.Response, what: str) -> dict:
        result = self._result(resp)
        if not isinstance(result, list) or len(result) != 1:
            raise DdnsError(f"Cloudflare: {what} not found for this token")
        return result[0]


def update_with_retries(
    provider: Provider, name: str, address: str, *, attempts: int = 3, delay: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Try an update up to `attempts` times with doubling delays; the last error is raised."""
    last: DdnsError | None = None
    for attempt in range(1, attempts + 1):
        try:
            result = provider.update(name, address)
        except DdnsError as exc:
            last = exc
            log.warning("event=ddns_update_failed name=%s attempt=%d error=%s", name, attempt, exc)
            if attempt < attempts:
                sleep(delay * 2 ** (attempt - 1))
            continue
        log.info("event=ddns_updated name=%s address=%s", name, address)
        return result
    assert last is not None
    raise last
