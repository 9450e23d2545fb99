"""The admin-facing backup API (HTTP Basic or session auth): list, request, download, restore.

Each endpoint needs the permission of the backup panel's action (roles: admins only)."""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.authentication import BasicAuthentication, SessionAuthentication
from rest_framework.decorators import api_view, authentication_classes, parser_classes, permission_classes
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from manager.proxies import backups
from manager.proxies.models import Backup, Proxy, ProxyAction
from manager.proxies.permissions import Requires
from manager.proxies.tokens import TokenAuthentication
from proxyd.backup import BackupError

# A token or Basic first: their WWW-Authenticate header makes a request without credentials a 401, not a 403
AUTH = [TokenAuthentication, BasicAuthentication, SessionAuthentication]


def _backup_row(b: Backup) -> dict:
    return {"id": b.pk, "created": b.created.isoformat(), "size": b.size, "filename": b.filename,
            "download": f"/api/v1/proxies/{b.proxy_id}/backups/{b.pk}/"}


def _request_row(a: ProxyAction) -> dict:
    return {"id": a.pk, "created": a.created.isoformat(), "state": a.state, "error": a.error or None,
            "backup": a.backup_id}


class BackupRequestIn(serializers.Serializer):
    passphrase = serializers.CharField(trim_whitespace=False)


class BackupRow(serializers.Serializer):
    id = serializers.IntegerField()
    created = serializers.DateTimeField()
    size = serializers.IntegerField()
    filename = serializers.CharField()
    download = serializers.CharField(help_text="the archive's URL")


class BackupRequestRow(serializers.Serializer):
    id = serializers.IntegerField()
    created = serializers.DateTimeField()
    state = serializers.CharField()
    error = serializers.CharField(allow_null=True)
    backup = serializers.IntegerField(allow_null=True, help_text="the backup it made")


class BackupsOut(serializers.Serializer):
    backups = BackupRow(many=True)
    requests = BackupRequestRow(many=True)
    backup_refused = serializers.CharField(allow_null=True, help_text="why a backup cannot be made now")
    restore_refused = serializers.CharField(allow_null=True, help_text="why a restore cannot be made now")


class BackupRequestedOut(serializers.Serializer):
    request = BackupRequestRow()


class RestoredOut(serializers.Serializer):
    detail = serializers.CharField()
    proxy = serializers.CharField(help_text="the proxy the backup was made of")


@extend_schema(methods=["GET"], responses={200: BackupsOut}, operation_id="proxy_backups_list")
@extend_schema(methods=["POST"], request=BackupRequestIn, responses={202: BackupRequestedOut},
               operation_id="proxy_backup_request")
@api_view(["GET", "POST"])
@authentication_classes(AUTH)
@permission_classes([Requires(GET="proxies.view_backup", POST="proxies.add_backup")])
def proxy_backups(request: Request, pk: int) -> Response:
    """GET: the proxy's backups and backup requests. POST: ask the proxy for a backup (202)."""
    proxy = get_object_or_404(Proxy, pk=pk)
    if request.method == "POST":
        data = BackupRequestIn(data=request.data)
        if not data.is_valid():
            return Response(data.errors, status=400)
        try:
            action = backups.request_backup(proxy, data.validated_data["passphrase"])
        except BackupError as exc:
            refused = backups.backup_refusal(proxy) is not None
            return Response({"detail": str(exc)}, status=409 if refused else 400)
        return Response({"request": _request_row(action)}, status=202)
    backups.expire_requests()
    return Response({
        "backups": [_backup_row(b) for b in proxy.backups.defer("data")],
        "requests": [_request_row(a) for a in proxy.actions.filter(kind=ProxyAction.BACKUP)[:20]],
        "backup_refused": backups.backup_refusal(proxy), "restore_refused": backups.restore_refusal(proxy),
    })


@extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
               operation_id="proxy_backup_download")
@api_view(["GET"])
@authentication_classes(AUTH)
@permission_classes([Requires(GET="proxies.view_backup")])
def backup_download(request: Request, pk: int, backup: int) -> HttpResponse:
    """The archive file itself."""
    b = get_object_or_404(Backup, pk=backup, proxy_id=pk)
    return download(b)


def download(b: Backup) -> HttpResponse:
    resp = HttpResponse(bytes(b.data), content_type="application/octet-stream")
    resp["Content-Disposition"] = f'attachment; filename="{b.filename}"'
    return resp


class RestoreIn(serializers.Serializer):
    file = serializers.FileField()
    passphrase = serializers.CharField(trim_whitespace=False)
    into_this_proxy = serializers.BooleanField(default=False)


@extend_schema(request={"multipart/form-data": RestoreIn}, responses={200: RestoredOut},
               operation_id="proxy_restore")
@api_view(["POST"])
@authentication_classes(AUTH)
@permission_classes([Requires(POST="proxies.restore_backup")])
@parser_classes([MultiPartParser, FormParser, JSONParser])
def proxy_restore(request: Request, pk: int) -> Response:
    """Restore an uploaded archive into this proxy (only while it is off); verified completely first."""
    proxy = get_object_or_404(Proxy, pk=pk)
    data = RestoreIn(data=request.data)
    if not data.is_valid():
        return Response(data.errors, status=400)
    d = data.validated_data
    try:
        archive = backups.restore(proxy, read_upload(d["file"]), d["passphrase"], into_this_proxy=d["into_this_proxy"])
    except BackupError as exc:
        refused = backups.restore_refusal(proxy) is not None
        return Response({"detail": f"restore failed, nothing changed: {exc}"}, status=409 if refused else 400)
    return Response({"detail": f"restored the backup of {archive.proxy!r}; switch the proxy on to use it",
                     "proxy": archive.proxy})


def read_upload(f) -> bytes:  # type: ignore[no-untyped-def]
    from proxyd.backup import MAX_ARCHIVE

    if f.size > MAX_ARCHIVE:
        raise BackupError("file too large to be a pforte backup")
    return bytes(f.read())
