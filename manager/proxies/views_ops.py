"""UI of the proxy page's operator panels (backups, the DNS record) and of the objects that are
no proxy configuration: backups, DNS records (with their DNS account), users, the change log.

The panels themselves are rendered by the `proxy_panels` template tags; their views take the
forms and come back to the proxy page with a notice (kept in the session, shown once).
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse

from manager.dyndns import updater
from manager.proxies import backups
from manager.proxies.admin_api import download, read_upload
from manager.proxies.forms import UserForm
from manager.proxies.forms_ops import BackupForm, DnsRecordForm, RestoreForm
from manager.proxies.models import DDNS_PROVIDERS, Backup, DnsRecord, ObjectChange, Proxy
from manager.proxies.permissions import requires
from manager.proxies.roles import ROLES, role_of
from manager.proxies.ui import (
    Cell,
    Column,
    Filter,
    Listing,
    confirm_page,
    delete_page,
    detail_page,
    form_page,
    list_page,
    posted,
)
from proxyd.backup import MAGIC, BackupError


def notice(request: HttpRequest, panel: str, text: str, ok: bool) -> None:
    request.session[f"panel-{panel}"] = {"text": text, "ok": ok}
    (messages.success if ok else messages.error)(request, text)


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
    """An uploaded archive is kept as a backup of this proxy, then restored like a stored one: through
    the confirmation page that says what will be replaced and asks for the passphrase."""
    proxy = get_object_or_404(Proxy, pk=pk)
    form = RestoreForm(request.POST, request.FILES)
    if not form.is_valid():
        notice(request, "restore", "Restore failed, nothing changed: " + _form_errors(form), False)
        return _back(pk, "backup")
    try:
        if refusal := backups.restore_refusal(proxy):
            raise BackupError(refusal)
        blob = read_upload(form.cleaned_data["file"])
        if not blob.startswith(MAGIC):
            raise BackupError("not a pforte backup file")
    except BackupError as exc:
        notice(request, "restore", f"Restore failed, nothing changed: {exc}", False)
        return _back(pk, "backup")
    b = Backup.objects.create(proxy=proxy, size=len(blob), data=blob)
    messages.info(request, "The file is uploaded and kept as a backup of this proxy. Nothing is restored yet: "
                           "check what will be replaced and confirm with its passphrase (or delete the backup).")
    return redirect("backup-restore-stored", pk=pk, backup=b.pk)


@requires(POST="proxies.change_dnsrecord")
def dns_edit(request: HttpRequest, pk: int) -> HttpResponse:
    proxy = get_object_or_404(Proxy, pk=pk)
    record = DnsRecord.objects.filter(proxy=proxy).first() or DnsRecord(proxy=proxy)
    form = DnsRecordForm(request.POST, instance=record,
                         account_allowed=request.user.has_perm("proxies.change_dns_account"))
    if not form.is_valid():
        request.session["panel-dns-form"] = {"data": {k: v for k, v in request.POST.items()
                                                       if k not in ("credentials", "csrfmiddlewaretoken")}}
        notice(request, "dns", "Not saved: " + _form_errors(form), False)
        return _back(pk, "dns")
    notice(request, "dns", _save_dns(form), True)
    return _back(pk, "dns")


def _save_dns(form: DnsRecordForm) -> str:
    record = form.save(commit=False)
    # a changed record is written again with the current address, whatever it was set to before
    record.synced_address, record.state = None, ""
    record.save()
    last = record.proxy.last_heartbeat
    if last is not None and last.source:
        updater.start(record, last.source)
    return "DNS record saved" + (f"; updating it to {last.source}." if last and last.source else
                                 "; it is updated at the proxy's next heartbeat.")


# backups -----------------------------------------------------------------------------------
@requires("proxies.view_backup")
def backup_list(request: HttpRequest) -> HttpResponse:
    def row(b: Backup) -> list[Cell]:
        return [Cell(f"{b.created:%Y-%m-%d %H:%M:%S}", reverse("backup-detail", args=[b.proxy_id, b.pk])),
                Cell(b.proxy.name, reverse("proxy-detail", args=[b.proxy_id])), Cell(f"{b.size} bytes")]

    listing = Listing("Backups", [Column("Made (UTC)", "created"), Column("Proxy", "proxy__name"),
                                  Column("Size", "size")], row, search=("proxy__name",),
                      intro="Request a backup on its proxy's page.")
    return list_page(request, Backup.objects.select_related("proxy").defer("data"), listing)


@requires("proxies.view_backup")
def backup_detail(request: HttpRequest, pk: int, backup: int) -> HttpResponse:
    b = get_object_or_404(Backup.objects.defer("data"), pk=backup, proxy_id=pk)
    actions = [(label, url) for label, url, perm in [
        ("Download", reverse("backup-download", args=[pk, backup]), "proxies.view_backup"),
        ("Restore into the proxy", reverse("backup-restore-stored", args=[pk, backup]), "proxies.restore_backup"),
        ("Delete", reverse("backup-delete", args=[pk, backup]), "proxies.delete_backup"),
    ] if request.user.has_perm(perm)]
    return detail_page(request, f"Backup of {b.proxy.name}", [
        ("Proxy", Cell(b.proxy.name, reverse("proxy-detail", args=[pk]))),
        ("Made", f"{b.created:%Y-%m-%d %H:%M:%S} UTC"), ("Size", f"{b.size} bytes"), ("File", b.filename),
        ("Encrypted", "with the passphrase given when it was requested (not stored)"),
    ], actions=actions, obj=b)


@requires("proxies.delete_backup")
def backup_delete(request: HttpRequest, pk: int, backup: int) -> HttpResponse:
    b = get_object_or_404(Backup.objects.defer("data"), pk=backup, proxy_id=pk)

    return delete_page(request, b, message=f"Backup {b.filename} deleted.",
                       title=f"Delete backup {b.filename}?", button="Delete backup",
                       done=reverse("backup-list"), cancel=reverse("backup-detail", args=[pk, backup]),
                       consequences=["The archive is removed from the manager; a downloaded copy is not affected."])


class StoredRestoreForm(forms.Form):
    passphrase = forms.CharField(widget=forms.PasswordInput, strip=False, max_length=1024)
    into_this_proxy = forms.BooleanField(
        required=False, label="Restore into this proxy",
        help_text="Needed when the backup was made of another proxy (or of this one under another name): its "
                  "settings and certificate replace this one's.")


def replaced(proxy: Proxy) -> list[str]:
    """What a restore into `proxy` replaces, as it is now."""
    apps = [a.name for a in proxy.applications.all()]
    dns = DnsRecord.objects.filter(proxy=proxy).first()
    return [
        f"{proxy.name}'s settings ({proxy.fqdn}; SIP {proxy.get_sip_mode_display()}, web "
        f"{proxy.get_web_mode_display()} on port {proxy.web_port}; revision "
        f"{proxy.active_revision.number if proxy.active_revision else '-'}) are replaced by the backup's; the "
        "proxy stays off until you switch it on.",
        f"Its {len(apps)} applications ({', '.join(apps) or 'none'}) are replaced by the backup's.",
        f"Its DNS record {dns.name} and the DNS account's credentials are replaced by the backup's." if dns
        else "It gets the backup's DNS record, if the backup has one (it has none now).",
        f"Its certificate ({'configured' if proxy.certificate_pem else 'self-signed'}), its key and the "
        "provisioning key are replaced: provisioning URLs issued since the backup stop working. The proxy is "
        "handed the backup's certificate files at its next contact.",
    ]


@requires("proxies.restore_backup")
def backup_restore_stored(request: HttpRequest, pk: int, backup: int) -> HttpResponse:
    b = get_object_or_404(Backup, pk=backup, proxy_id=pk)
    proxy = b.proxy
    form = StoredRestoreForm(posted(request))

    def act() -> str:
        try:
            backups.restore(proxy, bytes(b.data), form.cleaned_data["passphrase"],
                            into_this_proxy=form.cleaned_data["into_this_proxy"])
        except BackupError as exc:
            raise ValueError(f"Restore failed, nothing changed: {exc}") from None
        return (f"Restored the backup of {b.created:%Y-%m-%d %H:%M:%S}. The proxy takes its certificate now; "
                "switch it on to serve with the restored settings.")

    refusal = backups.restore_refusal(proxy)
    return confirm_page(request, title=f"Restore {b.filename} into {proxy.name}?", button="Restore", act=act,
                        form=form, done=reverse("proxy-detail", args=[pk]),
                        cancel=reverse("backup-detail", args=[pk, backup]), consequences=[
                            *replaced(proxy), *([f"Not possible right now: {refusal}"] if refusal else [])])


# DNS records (and their DNS account) ---------------------------------------------------------
@requires("proxies.view_dnsrecord")
def dns_list(request: HttpRequest) -> HttpResponse:
    def row(r: DnsRecord) -> list[Cell]:
        return [Cell(r.name, reverse("dns-detail", args=[r.pk])), Cell(r.proxy.name, reverse("proxy-detail",
                                                                                             args=[r.proxy_id])),
                Cell(r.get_provider_display()), Cell(r.synced_address or "-"), Cell(r.state or "-")]

    listing = Listing("DNS records", [Column("Name", "name"), Column("Proxy", "proxy__name"),
                                      Column("Provider", "provider"), Column("Points to", "synced_address"),
                                      Column("Result", "state")], row, search=("name", "zone", "proxy__name"),
                      filters=[Filter("provider", "Provider", "provider", DDNS_PROVIDERS)])
    if request.user.has_perm("proxies.add_dnsrecord") and request.user.has_perm("proxies.change_dns_account"):
        listing.actions.append(("Add DNS record", reverse("dns-new")))
    return list_page(request, DnsRecord.objects.select_related("proxy"), listing)


@requires("proxies.view_dnsrecord")
def dns_detail(request: HttpRequest, pk: int) -> HttpResponse:
    r = get_object_or_404(DnsRecord, pk=pk)
    actions = [(label, url) for label, url, perm in [
        ("Edit", reverse("dns-edit-record", args=[pk]), "proxies.change_dnsrecord"),
        ("Delete", reverse("dns-delete", args=[pk]), "proxies.delete_dnsrecord"),
    ] if request.user.has_perm(perm)]
    return detail_page(request, f"DNS record {r.name}", [
        ("Proxy", Cell(r.proxy.name, reverse("proxy-detail", args=[r.proxy_id]))), ("Zone", r.zone),
        ("Provider", r.get_provider_display()),
        *([("DNS server", f"{r.server}:{r.port}"), ("TSIG key", f"{r.key_name} ({r.algorithm})")]
          if r.provider == "rfc2136" else [("API URL", r.api_url)]),
        ("Credentials", r.credentials_hint), ("Points to", r.synced_address or "-"),
        ("Last update", f"{r.last_update:%Y-%m-%d %H:%M:%S} UTC" if r.last_update else "-"),
        ("Result", (r.state or "-") + (f": {r.last_result}" if r.last_result else "")),
    ], actions=actions, obj=r)


class NewDnsRecordForm(DnsRecordForm):
    class Meta(DnsRecordForm.Meta):
        fields = ["proxy", *DnsRecordForm.Meta.fields]

    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.fields["proxy"].queryset = Proxy.objects.filter(dns_record__isnull=True)


@requires("proxies.change_dns_account")  # a new record needs the account's credentials: admins
def dns_new(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("proxies.add_dnsrecord"):
        raise PermissionDenied("Your role does not allow adding DNS records.")
    form = NewDnsRecordForm(posted(request), initial={"proxy": request.GET.get("proxy")})
    return form_page(request, form, title="New DNS record", save=_save_dns_record, cancel=reverse("dns-list"),
                     done=lambda r: reverse("dns-detail", args=[r.pk]), saved=lambda r: r.saved_text)


@requires("proxies.change_dnsrecord")
def dns_edit_record(request: HttpRequest, pk: int) -> HttpResponse:
    r = get_object_or_404(DnsRecord, pk=pk)
    form = DnsRecordForm(posted(request), instance=r,
                         account_allowed=request.user.has_perm("proxies.change_dns_account"))
    return form_page(request, form, title=f"DNS record {r.name}", save=_save_dns_record,
                     cancel=reverse("dns-detail", args=[pk]), done=lambda x: reverse("dns-detail", args=[x.pk]),
                     saved=lambda x: x.saved_text)


def _save_dns_record(form: DnsRecordForm) -> DnsRecord:
    text = _save_dns(form)
    record = form.instance
    record.saved_text = text  # type: ignore[attr-defined]
    return record


@requires("proxies.delete_dnsrecord")
def dns_delete(request: HttpRequest, pk: int) -> HttpResponse:
    r = get_object_or_404(DnsRecord, pk=pk)

    return delete_page(request, r,
                       message=f"DNS record {r.name} removed from the manager (the record in DNS is left as it is).",
                       title=f"Remove DNS record {r.name}?", button="Remove",
                       done=reverse("dns-list"), cancel=reverse("dns-detail", args=[pk]), consequences=[
                           "The manager stops updating the record and forgets the DNS account's credentials.",
                           "The record in DNS itself is left as it is."])


# users -------------------------------------------------------------------------------------
@requires("auth.view_user")
def user_list(request: HttpRequest) -> HttpResponse:
    def row(u) -> list[Cell]:  # type: ignore[no-untyped-def]
        return [Cell(u.username, reverse("user-detail", args=[u.pk])), Cell(role_of(u) or "none"),
                Cell("yes" if u.is_active else "no"),
                Cell(f"{u.last_login:%Y-%m-%d %H:%M}" if u.last_login else "never")]

    listing = Listing("Users", [Column("Name", "username"), Column("Role"), Column("Active", "is_active"),
                                Column("Last login", "last_login")], row, search=("username", "email"),
                      filters=[Filter("role", "Role", "groups__name", [(r, r) for r in ROLES])])
    if request.user.has_perm("auth.add_user"):
        listing.actions.append(("Add user", reverse("user-new")))
    return list_page(request, get_user_model().objects.prefetch_related("groups"), listing)


@requires("auth.view_user")
def user_detail(request: HttpRequest, pk: int) -> HttpResponse:
    u = get_object_or_404(get_user_model(), pk=pk)
    actions = [(label, url) for label, url, perm in [
        ("Edit", reverse("user-edit", args=[pk]), "auth.change_user"),
        ("Delete", reverse("user-delete", args=[pk]), "auth.delete_user"),
    ] if request.user.has_perm(perm)]
    return detail_page(request, f"User {u.username}", [
        ("Role", role_of(u) or "none"), ("E-mail", u.email or "-"), ("Active", "yes" if u.is_active else "no"),
        ("Joined", f"{u.date_joined:%Y-%m-%d %H:%M} UTC"),
        ("Last login", f"{u.last_login:%Y-%m-%d %H:%M} UTC" if u.last_login else "never"),
    ], actions=actions, obj=u)


@requires("auth.add_user")
def user_new(request: HttpRequest) -> HttpResponse:
    return _user_form(request, get_user_model()())


@requires("auth.change_user")
def user_edit(request: HttpRequest, pk: int) -> HttpResponse:
    return _user_form(request, get_object_or_404(get_user_model(), pk=pk))


def _user_form(request: HttpRequest, user) -> HttpResponse:  # type: ignore[no-untyped-def]
    form = UserForm(posted(request), instance=user)
    if request.method == "POST" and user.pk == request.user.pk and form.is_valid() and (
            form.cleaned_data["role"] != role_of(user) or not form.cleaned_data["is_active"]):
        form.add_error("role", "You cannot take your own admin role or deactivate yourself; another admin can.")
    return form_page(request, form, title=f"User {user.username}" if user.pk else "New user",
                     done=lambda u: reverse("user-detail", args=[u.pk]),
                     saved=lambda u: f"User {u.username} saved with role {role_of(u)}.",
                     cancel=reverse("user-detail", args=[user.pk]) if user.pk else reverse("user-list"))


@requires("auth.delete_user")
def user_delete(request: HttpRequest, pk: int) -> HttpResponse:
    u = get_object_or_404(get_user_model(), pk=pk)

    def act() -> str:
        if u.pk == request.user.pk:
            raise ValueError("You cannot delete your own account; another admin can.")
        u.delete()
        return f"User {u.username} deleted."

    return confirm_page(request, title=f"Delete user {u.username}?", button="Delete user", act=act,
                        done=reverse("user-list"), cancel=reverse("user-detail", args=[pk]), consequences=[
                            f"{u.username} can no longer log in; their sessions end.",
                            "The change log keeps their name on the changes they made."])


# change log --------------------------------------------------------------------------------
@requires("proxies.view_objectchange")
def change_list(request: HttpRequest) -> HttpResponse:
    def row(c: ObjectChange) -> list[Cell]:
        return [Cell(f"{c.time:%Y-%m-%d %H:%M:%S}", reverse("change-detail", args=[c.pk])),
                Cell(c.username or "(no user)"), Cell(c.get_action_display()), Cell(c.object_type.split(".")[1]),
                Cell(c.object_repr)]

    types = sorted({(t, t.split(".")[1]) for t in ObjectChange.objects.values_list("object_type", flat=True)
                    .distinct()})
    listing = Listing("Change log", [Column("Time (UTC)", "time"), Column("User", "username"),
                                     Column("Action", "action"), Column("Type", "object_type"),
                                     Column("Object", "object_repr")], row, search=("username", "object_repr"),
                      filters=[Filter("action", "Action", "action", [("create", "created"), ("update", "changed"),
                                                                     ("delete", "deleted")]),
                               Filter("type", "Type", "object_type", types)])
    return list_page(request, ObjectChange.objects.all(), listing)


@requires("proxies.view_objectchange")
def change_detail(request: HttpRequest, pk: int) -> HttpResponse:
    c = get_object_or_404(ObjectChange, pk=pk)
    diff = Cell([(k, old, new) for k, old, new in c.diff()], cls="diff")
    return detail_page(request, f"{c.object_type.split('.')[1]} {c.object_repr} {c.get_action_display()}", [
        ("Time", f"{c.time:%Y-%m-%d %H:%M:%S} UTC"), ("User", c.username or "(no user: an agent or a command)"),
        ("Object", f"{c.object_type} #{c.object_id}"), ("Changes", diff),
    ])
