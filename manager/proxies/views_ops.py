"""UI of the proxy page's operator panels: backups (request, download, restore) and the DNS record.

The panels themselves are rendered by the `proxy_panels` template tags; these views take their
forms and come back to the proxy page with a notice (kept in the session, shown once).
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect

from manager.dyndns import updater
from manager.proxies import backups
from manager.proxies.admin_api import download, read_upload
from manager.proxies.forms_ops import BackupForm, DnsRecordForm, RestoreForm
from manager.proxies.models import Backup, DnsRecord, Proxy
from manager.proxies.permissions import requires
from proxyd.backup import BackupError


def notice(request: HttpRequest, panel: str, text: str, ok: bool) -> None:
    request.session[f"panel-{panel}"] = {"text": text, "ok": ok}


def _back(pk: int, anchor: str) -> HttpResponse:
    return redirect(f"/proxies/{pk}/#{anchor}")


def _form_errors(form) -> str:  # type: ignore[no-untyped-def]
    return " ".join(f"{'' if k == '__all__' else form.fields[k].label or k}: {' '.join(v)}"
                    for k, v in form.errors.items())


@requires(POST="proxies.add_backup")
def backup_create(request: HttpRequest, pk: int) -> HttpResponse:
    proxy = get_object_or_404(Proxy, pk=pk)
    form = BackupForm(request.POST)
    if not form.is_valid():
        notice(request, "backup", "Backup not requested: " + _form_errors(form), False)
        return _back(pk, "backup")
    try:
        backups.request_backup(proxy, form.cleaned_data["passphrase"])
    except BackupError as exc:
        notice(request, "backup", f"Backup refused: {exc}", False)
    else:
        notice(request, "backup", "Backup requested; the proxy uploads its part within seconds.", True)
    return _back(pk, "backup")


@requires("proxies.view_backup")
def backup_download(request: HttpRequest, pk: int, backup: int) -> HttpResponse:
    return download(get_object_or_404(Backup, pk=backup, proxy_id=pk))


@requires(POST="proxies.restore_backup")
def backup_restore(request: HttpRequest, pk: int) -> HttpResponse:
    proxy = get_object_or_404(Proxy, pk=pk)
    form = RestoreForm(request.POST, request.FILES)
    if not form.is_valid():
        notice(request, "restore", "Restore failed, nothing changed: " + _form_errors(form), False)
        return _back(pk, "backup")
    d = form.cleaned_data
    try:
        archive = backups.restore(proxy, read_upload(d["file"]), d["passphrase"], into_this_proxy=d["into_this_proxy"])
    except BackupError as exc:
        notice(request, "restore", f"Restore failed, nothing changed: {exc}", False)
    else:
        notice(request, "restore", f"Restored the backup of {archive.proxy!r}. The proxy takes its certificate "
                                   "now; switch it on to serve with the restored settings.", True)
    return _back(pk, "backup")


@requires(POST="proxies.change_dnsrecord")
def dns_edit(request: HttpRequest, pk: int) -> HttpResponse:
    proxy = get_object_or_404(Proxy, pk=pk)
    record = DnsRecord.objects.filter(proxy=proxy).first() or DnsRecord(proxy=proxy)
    if request.POST.get("delete"):
        if not request.user.has_perm("proxies.delete_dnsrecord"):
            raise PermissionDenied("Your role does not allow removing DNS records.")
        if record.pk:
            record.delete()
        notice(request, "dns", "DNS record removed from the manager (the record in DNS is left as it is).", True)
        return _back(pk, "dns")
    form = DnsRecordForm(request.POST, instance=record,
                         account_allowed=request.user.has_perm("proxies.change_dns_account"))
    if not form.is_valid():
        request.session["panel-dns-form"] = {"data": {k: v for k, v in request.POST.items()
                                                       if k not in ("credentials", "csrfmiddlewaretoken")}}
        notice(request, "dns", "Not saved: " + _form_errors(form), False)
        return _back(pk, "dns")
    record = form.save(commit=False)
    # a changed record is written again with the current address, whatever it was set to before
    record.synced_address, record.state = None, ""
    record.save()
    last = proxy.last_heartbeat
    if last is not None and last.source:
        updater.start(record, last.source)
    notice(request, "dns", "DNS record saved" + (f"; updating it to {last.source}." if last and last.source else
                                                 "; it is updated at the proxy's next heartbeat."), True)
    return _back(pk, "dns")
