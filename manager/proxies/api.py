"""The proxy-facing API: register (one-time URL), config (ETag + long-poll), heartbeat, actions.

Actions (make a backup, take restored files) ride on the config and heartbeat answers: every
answer names the pending ones (`X-Pforte-Actions: backup/12, restore/13` on config, `actions` in
the heartbeat JSON), and a new action ends a waiting long-poll at once.

Authenticated by the proxy's API key (`Bearer <id>.<secret>`, stored as a SHA-256 hash and
compared in constant time); each proxy sees only itself.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.decorators import api_view, permission_classes
from rest_framework.request import Request
from rest_framework.response import Response

from manager.dyndns import updater
from manager.proxies import backups
from manager.proxies.feed import FEED
from manager.proxies.heartbeats import HISTORY, INTERVAL
from manager.proxies.models import ConfigRevision, Heartbeat, Proxy, ProxyAction, Registration
from manager.proxies.permissions import AGENT_KEY, AgentKey, declares
from proxyd.backup import BackupError

log = logging.getLogger("manager.api")
MAX_WAIT = 60.0


def authenticate(request: HttpRequest) -> Proxy | None:
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Bearer "):
        return None
    pid, _, secret = auth[7:].strip().partition(".")
    if not pid.isdigit() or not secret:
        return None
    proxy = Proxy.objects.filter(pk=int(pid)).first()
    if proxy is None or not proxy.api_key_hash:
        return None
    given = hashlib.sha256(secret.encode()).hexdigest()
    return proxy if hmac.compare_digest(given, proxy.api_key_hash) else None


def unauthorized() -> JsonResponse:
    return JsonResponse({"detail": "invalid or revoked API key"}, status=401)


class RegisterIn(serializers.Serializer):
    token = serializers.CharField(max_length=100, help_text="the one-time token from the registration URL's "
                                                            "fragment (never in a URL path: access logs keep those)")
    hostname = serializers.CharField(required=False, allow_blank=True, max_length=255)
    version = serializers.CharField(required=False, allow_blank=True, max_length=50)


class RegisterOut(serializers.Serializer):
    proxy = serializers.DictField()
    api_key = serializers.CharField()
    manager_url = serializers.CharField()


@extend_schema(request=RegisterIn, responses={201: RegisterOut})
@api_view(["POST"])
@permission_classes([AgentKey])
def register(request: Request) -> Response:
    """Use a one-time registration URL (its token in the body): mints the proxy's API key (returned once).

    A proxy whose agent already holds a key is not taken over (409, the URL stays unused) unless an
    admin allowed re-registration on the proxy's page: a leaked URL must not silently replace the
    running agent and revoke its key."""
    source = request.META.get("REMOTE_ADDR")
    data = RegisterIn(data=request.data)
    if not data.is_valid():
        log.warning("registration refused from %s: %s", source, dict(data.errors))
        return Response(data.errors, status=400)
    hostname = data.validated_data.get("hostname", "")
    reg = Registration.objects.filter(token_hash=Registration.hash(data.validated_data["token"])).select_related(
        "proxy").first()
    if reg is None:
        log.warning("registration refused from %s: unknown token", source)
        return Response({"detail": "unknown registration"}, status=404)
    now = timezone.now()
    with transaction.atomic():
        # one conditional UPDATE: of concurrent uses exactly one changes the row
        won = Registration.objects.filter(pk=reg.pk, used__isnull=True, expires__gt=now).update(
            used=now, used_from=source)
        if not won:
            reg.refresh_from_db()
            reason = "registration already used" if reg.used else "registration expired"
            log.warning("registration of proxy %s refused from %s: %s", reg.proxy.name, source, reason)
            return Response({"detail": reason}, status=410)
        # the same for the proxy: a free proxy, or one an admin opened, is taken by exactly one use
        free = Proxy.objects.filter(pk=reg.proxy_id).filter(
            Q(api_key_hash="") | Q(reregistration_allowed=True)).update(reregistration_allowed=False)
        if not free:
            holder = Proxy.objects.get(pk=reg.proxy_id)
            transaction.set_rollback(True)  # the URL stays unused: it works once an admin allows it
            log.warning("registration of proxy %s refused from %s: an agent is registered already (key %s, "
                        "registered %s from %s) and re-registration is not allowed",
                        holder.name, source, holder.api_key_prefix or "?", holder.api_key_issued, holder.api_key_from)
            return Response({"detail": f"proxy {holder.name!r} already has a registered agent (key "
                                       f"{holder.api_key_prefix or '?'}…); an admin must allow re-registration "
                                       "on the proxy's page in the manager first"}, status=409)
        key = reg.proxy.mint_api_key(source=source, hostname=hostname)
    log.info("proxy %s registered from %s (key %s)", reg.proxy.name, source, reg.proxy.api_key_prefix)
    base = settings.PUBLIC_URL  # configured, not taken from the request's Host header
    return Response({"proxy": {"id": reg.proxy.pk, "name": reg.proxy.name}, "api_key": key, "manager_url": base},
                    status=201)


def _active(proxy_id: int) -> ConfigRevision | None:
    return ConfigRevision.objects.filter(proxy_id=proxy_id).order_by("-number").first()


def _pending_actions(proxy_id: int, mark_delivered: bool = False) -> list[tuple[int, str, bool]]:
    """(id, kind, delivered before) of the proxy's open actions, oldest first."""
    rows = list(ProxyAction.pending(proxy_id).order_by("pk").values_list("pk", "kind", "delivered"))
    if mark_delivered and any(d is None for _, _, d in rows):
        ProxyAction.objects.filter(pk__in=[pk for pk, _, d in rows if d is None]).update(delivered=timezone.now())
    return [(pk, kind, d is not None) for pk, kind, d in rows]


def _actions_header(rows: list[tuple[int, str, bool]]) -> str:
    return ", ".join(f"{kind}/{pk}" for pk, kind, _ in rows)


@declares(AGENT_KEY)
@csrf_exempt
@require_GET
async def config(request: HttpRequest) -> HttpResponse:
    """The active ProxyConfig with ETag; `?wait=S` holds the request until a newer one exists."""
    proxy_id = FEED.authenticate(request.headers.get("Authorization", ""))
    if proxy_id is None:
        proxy = await sync_to_async(authenticate, thread_sensitive=False)(request)
        if proxy is None:
            return unauthorized()
        FEED.key_changed(proxy.pk, proxy.api_key_hash)  # its next polls are answered in front of Django
        proxy_id = proxy.pk
    try:
        wait = min(max(float(request.GET.get("wait", "0")), 0.0), MAX_WAIT)
    except ValueError:
        return JsonResponse({"detail": "wait: expected seconds"}, status=400)
    await FEED.ready()
    etag = request.headers.get("If-None-Match", "").strip().strip('"')
    deadline = time.monotonic() + wait
    actions_seen = FEED.actions_seen(proxy_id)
    if actions_seen:  # an action was made for this proxy since this process started: one not delivered yet?
        pending = await sync_to_async(_pending_actions, thread_sensitive=False)(proxy_id)
        if any(not delivered for _, _, delivered in pending):
            deadline = 0  # a new action: answer at once
    known = FEED.known(proxy_id)
    if known is not None and str(known) == etag and deadline > time.monotonic():
        # the proxy has the newest revision this process knows of: wait without asking the database
        if not await FEED.wait_newer(proxy_id, known, deadline - time.monotonic()):
            resp = HttpResponse(status=304)
            resp["ETag"] = f'"{known}"'
            return resp
    rev = await sync_to_async(_active, thread_sensitive=False)(proxy_id)
    while (rev is not None and str(rev.number) == etag and FEED.actions_seen(proxy_id) == actions_seen
           and (left := deadline - time.monotonic()) > 0):
        if await FEED.wait_newer(proxy_id, rev.number, left):
            rev = await sync_to_async(_active, thread_sensitive=False)(proxy_id)
    if rev is None:
        return JsonResponse({"detail": "no configuration yet"}, status=404)
    if str(rev.number) == etag:
        resp = HttpResponse(status=304)
    else:
        resp = HttpResponse(rev.served_json(), content_type="application/json")
    resp["ETag"] = f'"{rev.number}"'
    # read after the revision: restored files are committed with (before) the settings they belong to
    pending = await sync_to_async(_pending_actions, thread_sensitive=False)(proxy_id, True)
    if pending:
        resp["X-Pforte-Actions"] = _actions_header(pending)
    return resp


class HeartbeatIn(serializers.Serializer):
    applied_revision = serializers.IntegerField(allow_null=True, required=False)
    version = serializers.CharField(required=False, allow_blank=True, max_length=50)
    uptime = serializers.FloatField(required=False)
    services = serializers.DictField(required=False)
    network = serializers.DictField(required=False, allow_null=True)
    certificate = serializers.DictField(required=False, allow_null=True)
    last_error = serializers.CharField(required=False, allow_null=True, allow_blank=True)


_sqlite_writes = threading.Lock()


def serialized(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """On SQLite, writers of this process queue on a lock instead of in SQLite's busy handler,
    whose growing sleeps left heartbeats waiting seconds under load (1,000 proxies: p50 4 s)."""
    if connection.vendor != "sqlite":
        return fn(*args, **kwargs)
    with _sqlite_writes:
        return fn(*args, **kwargs)


def serialized_writes(view: Callable[..., Response]) -> Callable[..., Response]:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        return serialized(view, *args, **kwargs)
    return wrapper


@extend_schema(request=HeartbeatIn, responses={200: OpenApiTypes.OBJECT})
@api_view(["POST"])
@permission_classes([AgentKey])
@serialized_writes
def heartbeat(request: Request) -> Response:
    """Record a heartbeat: time, source address, applied revision, service stats, last error.

    This view answers the heartbeats the ASGI front (agent_front.py) leaves to Django: a proxy not
    yet known to the feed, or with an action pending; the others are written in batches."""
    proxy = authenticate(request._request)
    if proxy is None:
        return Response({"detail": "invalid or revoked API key"}, status=401)
    data = HeartbeatIn(data=request.data)
    if not data.is_valid():
        return Response(data.errors, status=400)
    d = data.validated_data
    services = dict(d.get("services", {}))
    if d.get("network"):
        services["network"] = d["network"]  # the proxy's netconf result, kept with its services
    if d.get("certificate"):
        services["certificate"] = d["certificate"]  # issuer/expiry/renewal per name (Proxy.certificate_status)
    hb = Heartbeat.objects.create(
        proxy=proxy, source=request.META.get("REMOTE_ADDR"), applied_revision=d.get("applied_revision"),
        version=d.get("version", ""), uptime=d.get("uptime", 0), last_error=d.get("last_error") or "",
        services=json.loads(json.dumps(services)), interval=INTERVAL,
    )
    Proxy.objects.filter(pk=proxy.pk, agent_stopped__lt=hb.received).update(agent_stopped=None)  # it is back
    old = proxy.heartbeats.order_by("-received").values_list("pk", flat=True)[HISTORY:]
    Heartbeat.objects.filter(pk__in=list(old)).delete()
    updater.on_heartbeat(proxy.pk, request.META.get("REMOTE_ADDR"))  # DNS update, if any, runs in the background
    active = _active(proxy.pk)
    actions = [{"id": pk, "kind": kind} for pk, kind, _ in _pending_actions(proxy.pk, True)]
    return Response({"active_revision": active.number if active else None, "interval": INTERVAL,
                     "actions": actions})


class GoodbyeOut(serializers.Serializer):
    stopped = serializers.DateTimeField()


@extend_schema(request=None, responses={200: GoodbyeOut})
@api_view(["POST"])
@permission_classes([AgentKey])
@serialized_writes
def goodbye(request: Request) -> Response:
    """The agent is stopping cleanly (proxyd shut down): the proxy shows Offline now, not after the
    heartbeat grace. Its next heartbeat makes it Online again."""
    proxy = authenticate(request._request)
    if proxy is None:
        return Response({"detail": "invalid or revoked API key"}, status=401)
    now = timezone.now()
    Proxy.objects.filter(pk=proxy.pk).update(agent_stopped=now)  # no settings save: no new revision
    log.info("proxy %s: agent stopping", proxy.name)
    return Response({"stopped": now})


def _own_action(request: Request, pk: int, kind: str | None) -> ProxyAction | Response:
    """The calling proxy's open action `pk` (of this kind), or the answer saying why there is none."""
    proxy = authenticate(request._request)
    if proxy is None:
        return Response({"detail": "invalid or revoked API key"}, status=401)
    actions = ProxyAction.pending(proxy.pk).filter(pk=pk)
    action = (actions.filter(kind=kind) if kind else actions).first()
    if action is None:
        what = {ProxyAction.BACKUP: "backup request", ProxyAction.RESTORE: "restore"}.get(kind or "", "action")
        return Response({"detail": f"no such open {what}"}, status=404)
    return action


class BackupUploadIn(serializers.Serializer):
    files = serializers.DictField(child=serializers.CharField(allow_blank=True), help_text="certs/<file>: base64")


@extend_schema(request=BackupUploadIn, responses={201: OpenApiTypes.OBJECT})
@api_view(["POST"])
@permission_classes([AgentKey])
def action_backup(request: Request, pk: int) -> Response:
    """The proxy's part of a requested backup: its certs/ files; the manager seals the archive."""
    action = _own_action(request, pk, ProxyAction.BACKUP)
    if isinstance(action, Response):
        return action
    try:
        backup = backups.complete_backup(action, backups.decode_files(request.data.get("files")))
    except BackupError as exc:
        backups.fail_action(action, f"upload refused: {exc}")
        return Response({"detail": str(exc)}, status=400)
    return Response({"backup": backup.pk, "size": backup.size}, status=201)


@extend_schema(responses={200: OpenApiTypes.OBJECT})
@api_view(["GET"])
@permission_classes([AgentKey])
def action_restore(request: Request, pk: int) -> Response:
    """Restored files for the proxy to write into its state dir (certs/), base64."""
    action = _own_action(request, pk, ProxyAction.RESTORE)
    if isinstance(action, Response):
        return action
    return Response(json.loads(action.secret))


class ActionDoneIn(serializers.Serializer):
    error = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=500)


@extend_schema(request=ActionDoneIn, responses={200: OpenApiTypes.OBJECT})
@api_view(["POST"])
@permission_classes([AgentKey])
def action_done(request: Request, pk: int) -> Response:
    """The proxy finished an action (restored files written), or reports why it could not."""
    action = _own_action(request, pk, None)
    if isinstance(action, Response):
        return action
    data = ActionDoneIn(data=request.data)
    if not data.is_valid():
        return Response(data.errors, status=400)
    error = data.validated_data.get("error")
    if error:
        backups.fail_action(action, error)
    elif action.kind == ProxyAction.RESTORE:
        ProxyAction.objects.filter(pk=action.pk).update(finished=timezone.now(), secret_enc="")
    else:
        return Response({"detail": "a backup is finished by its upload"}, status=400)
    return Response({"ok": True})


