"""Backup and restore of a proxy through the manager (seed 003, "Backup und Restore").

An archive in proxyd's format (`proxyd.backup`) holding two parts:
- `manager/proxy.json`: the proxy's settings as the manager keeps them (including its secrets:
  provisioning key, certificate key, DDNS credentials) and its applications;
- `certs/…`: what only the proxy holds, its self-signed certificate and key.

How the passphrase and the proxy's keys travel: the admin types the passphrase into the manager;
the manager derives the AES key right away (scrypt, fresh salt) and keeps only that key,
encrypted at rest, until the proxy answers. The proxy learns of the request through its
config/heartbeat answers and uploads its `certs/` files over its authenticated API channel; the
manager seals the archive with the kept key and wipes it. The passphrase is never stored or sent
anywhere, and the proxy's keys go only to the manager, which holds the proxy's other secrets
already. Restore goes the other way: the manager verifies the whole archive, replaces the
settings, and hands the proxy its certificate files as a pending action, which the agent writes
before it applies any further config.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from manager.proxies.feed import FEED, notify_others
from manager.proxies.models import BACKUP_REQUEST_LIFETIME, Application, Backup, DnsRecord, Proxy, ProxyAction
from proxyd.backup import DERIVED_CERTS, Archive, BackupError, SealingKey, decrypt, seal, sealing_key

SETTINGS_MEMBER = "manager/proxy.json"
SETTINGS_FORMAT = 1
# model fields a backup does not carry: identity, the API key (the running proxy keeps its own),
# creation time, and the encrypted forms of secrets (carried decrypted inside the archive)
NOT_SETTINGS = {"id", *Proxy.AGENT_FIELDS, "created", "provisioning_key_enc", "key_pem_enc"}
APP_FIELDS = ["name", "port", "tls", "public_prefix", "upstream", "verify_upstream"]
DNS_FIELDS = ["name", "zone", "provider", "server", "port", "key_name", "algorithm", "api_url"]
MAX_FILES = 32  # a proxy's certs/ holds a few files; more is not a proxy's upload


# refusals ------------------------------------------------------------------------------------
def backup_refusal(proxy: Proxy) -> str | None:
    """Why a backup cannot be made right now (None: it can)."""
    if not proxy.enabled:
        return "The proxy is off. A backup needs the proxy on and online: it contributes its own keys."
    status, _ = proxy.status()
    if status not in ("Online", "Degraded"):
        return (f"The proxy is {status.lower()}. A backup needs the proxy online: it uploads its own "
                "certificate and keys when the manager asks it.")
    return None


def restore_refusal(proxy: Proxy) -> str | None:
    if proxy.enabled:
        return "The proxy is on. Switch it off first: a backup is restored only while the proxy is off."
    return None


# settings <-> archive ------------------------------------------------------------------------
def settings_of(proxy: Proxy) -> dict[str, Any]:
    fields = {f.name: f.value_from_object(proxy) for f in Proxy._meta.concrete_fields if f.name not in NOT_SETTINGS}
    dns = getattr(proxy, "dns_record", None) if proxy.pk else None
    return {
        "format": SETTINGS_FORMAT,
        "proxy_id": proxy.pk,
        "fields": fields,
        "provisioning_key": proxy.provisioning_key,
        "key_pem": proxy.key_pem,
        "applications": [{f: getattr(a, f) for f in APP_FIELDS} for a in proxy.applications.order_by("name")],
        "dns": ({**{f: getattr(dns, f) for f in DNS_FIELDS}, "credentials": dns.credentials} if dns else None),
    }


def _plan(proxy: Proxy, data: dict[str, Any], keep_name: bool) -> tuple[Proxy, list[Application], DnsRecord | None]:
    """Unsaved objects with the archive's settings, fully validated against today's rules."""
    if not isinstance(data, dict) or data.get("format") != SETTINGS_FORMAT:
        raise BackupError(f"the backup's settings are in a format this manager does not read "
                          f"(format {data.get('format') if isinstance(data, dict) else '?'})")
    try:
        fields = dict(data["fields"])
        target = Proxy.objects.get(pk=proxy.pk)
        for name, value in fields.items():
            if name in NOT_SETTINGS or not hasattr(target, name):
                continue
            setattr(target, name, value)
        if keep_name:
            target.name = proxy.name
        target.enabled = False  # restored while off; the admin switches it on
        target.provisioning_key = str(data["provisioning_key"])
        target.key_pem = str(data.get("key_pem") or "")
        apps = [Application(proxy=target, **{f: a[f] for f in APP_FIELDS}) for a in data.get("applications", [])]
        dns = None
        if data.get("dns"):
            d = data["dns"]
            dns = DnsRecord(proxy=target, **{f: d[f] for f in DNS_FIELDS})
            dns.credentials = str(d.get("credentials") or "")
    except (KeyError, TypeError, ValueError) as exc:
        raise BackupError(f"the backup's settings are malformed: {exc!r}") from None
    try:
        target.full_clean()
        for a in apps:
            a.siblings = [x for x in apps if x is not a]  # type: ignore[attr-defined]  # they replace the stored ones
            a.full_clean(exclude=["proxy"])
        if dns is not None:
            dns.full_clean(exclude=["proxy"])
    except ValidationError as exc:
        raise BackupError("the backup's settings do not fit this manager any more: " + _messages(exc)) from None
    return target, apps, dns


def _messages(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
    return " ".join(exc.messages)


# backup ----------------------------------------------------------------------------------------
def request_backup(proxy: Proxy, passphrase: str) -> ProxyAction:
    """Ask the proxy for its part of a backup; raises BackupError with the reason it is refused."""
    expire_requests()
    refusal = backup_refusal(proxy)
    if refusal:
        raise BackupError(refusal)
    key = sealing_key(passphrase)  # the passphrase ends here
    action = ProxyAction(proxy=proxy, kind=ProxyAction.BACKUP)
    action.secret = json.dumps({"key": base64.b64encode(key.key).decode(), "salt": base64.b64encode(key.salt).decode()})
    action.save()
    notify_others()
    FEED.action(proxy.pk)
    return action


def decode_files(raw: Any) -> dict[str, bytes]:
    """The proxy's upload: {"certs/<file>": base64}; anything else is refused."""
    if not isinstance(raw, dict) or len(raw) > MAX_FILES:
        raise BackupError("upload must be an object of at most 32 files")
    files: dict[str, bytes] = {}
    for name, value in raw.items():
        parts = str(name).split("/")
        if len(parts) != 2 or parts[0] != "certs" or parts[1] in ("", ".", "..") or not isinstance(value, str):
            raise BackupError(f"a proxy may upload only certs/<file>, not {name!r}")
        try:
            files[str(name)] = base64.b64decode(value, validate=True)
        except ValueError:
            raise BackupError(f"{name}: not base64") from None
    return files


def complete_backup(action: ProxyAction, files: dict[str, bytes]) -> Backup:
    with transaction.atomic():
        action = ProxyAction.objects.select_for_update().get(pk=action.pk)
        if action.finished or action.kind != ProxyAction.BACKUP or not action.secret_enc:
            raise BackupError("this backup request is no longer open")
        k = json.loads(action.secret)
        key = SealingKey(base64.b64decode(k["key"]), base64.b64decode(k["salt"]))
        proxy = action.proxy
        members = {**files, SETTINGS_MEMBER: json.dumps(settings_of(proxy), sort_keys=True).encode()}
        blob = seal(Archive(proxy=proxy.name, created=time.time(), files=members), key)
        backup = Backup.objects.create(proxy=proxy, size=len(blob), data=blob)
        action.backup, action.finished, action.secret_enc = backup, timezone.now(), ""
        action.save(update_fields=["backup", "finished", "secret_enc"])
    return backup


def expire_requests() -> None:
    """Backup requests the proxy did not answer in time fail, and their kept keys are wiped."""
    cutoff = timezone.now() - BACKUP_REQUEST_LIFETIME
    ProxyAction.objects.filter(kind=ProxyAction.BACKUP, finished__isnull=True, created__lte=cutoff).update(
        finished=timezone.now(), error="the proxy did not answer within 5 minutes", secret_enc="")


def fail_action(action: ProxyAction, error: str) -> None:
    ProxyAction.objects.filter(pk=action.pk, finished__isnull=True).update(
        finished=timezone.now(), error=error[:500] or "failed on the proxy", secret_enc="")


# restore ---------------------------------------------------------------------------------------
def restore(proxy: Proxy, blob: bytes, passphrase: str, *, into_this_proxy: bool) -> Archive:
    """Verify the whole archive, then replace the settings and hand the proxy its files.

    Every problem raises BackupError before anything is changed.
    """
    refusal = restore_refusal(proxy)
    if refusal:
        raise BackupError(refusal)
    archive = decrypt(blob, passphrase)  # wrong passphrase, tampered, truncated, wrong version
    if SETTINGS_MEMBER not in archive.files:
        raise BackupError("this backup was made with `proxyd backup` on the proxy and holds no manager settings; "
                          "restore it on the proxy with `proxyd restore`")
    try:
        data = json.loads(archive.files[SETTINGS_MEMBER])
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise BackupError("the backup's settings are malformed")
    same = archive.proxy == proxy.name and data.get("proxy_id") in (None, proxy.pk)
    if not same and not into_this_proxy:
        raise BackupError(f"this backup is of proxy {archive.proxy!r}, not {proxy.name!r}; choose "
                          "\"restore into this proxy\" to restore it here on purpose")
    target, apps, dns = _plan(proxy, data, keep_name=not same)
    files = {k: base64.b64encode(v).decode() for k, v in archive.files.items()
             if k.startswith("certs/") and k.removeprefix("certs/") not in DERIVED_CERTS}
    with transaction.atomic():
        if not Proxy.objects.filter(pk=proxy.pk, enabled=False).exists():
            raise BackupError("The proxy was switched on meanwhile; nothing was changed.")
        # one restore at a time: an older one not yet taken by the proxy is superseded
        ProxyAction.objects.filter(proxy=proxy, kind=ProxyAction.RESTORE, finished__isnull=True).update(
            finished=timezone.now(), error="superseded by a newer restore", secret_enc="")
        action = ProxyAction(proxy=proxy, kind=ProxyAction.RESTORE)
        action.secret = json.dumps({"proxy": archive.proxy, "files": files})
        action.save()  # before the settings: the config that follows is offered with it
        target.save()
        proxy.applications.all().delete()
        for a in apps:
            a.proxy = target
            a.save()
        DnsRecord.objects.filter(proxy=proxy).delete()
        if dns is not None:
            dns.proxy = target
            dns.save()
    notify_others()
    FEED.action(proxy.pk)
    return archive
