"""Server-rendered UI: proxies (with status, registrations, heartbeats), instances, applications,
devices, registrations. Backups, DNS records, users and the change log are in views_ops.py.

Every object has a list, a detail page, a form for create and edit, and a delete behind a
confirmation page (manager.proxies.ui); every action ends with a message.
"""

from __future__ import annotations

import csv
import io
import logging

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from manager.proxies import labels
from manager.proxies.choices import SIP_MODES, WEB_MODES
from manager.proxies.crypto import new_provisioning_key
from manager.proxies.forms import ApplicationForm, DeviceForm, InstanceForm, ProxyForm
from manager.proxies.models import Application, Device, Instance, Proxy, Registration
from manager.proxies.permissions import requires
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
    shown_once,
)

log = logging.getLogger("manager.access")


# proxies -----------------------------------------------------------------------------------
LIST_FIELDS = ("name", "fqdn", "enabled", "sip_mode", "sip_udp_port", "sip_tls_port", "web_mode", "web_port",
               "agent_stopped")


@requires("proxies.view_proxy")
def proxy_list(request: HttpRequest) -> HttpResponse:
    def row(p: Proxy) -> list[Cell]:
        status, reason = p.status()
        return [Cell(status + (f" ({reason})" if reason else ""), cls=f"status {status.split()[0]}"),
                Cell(p.name, reverse("proxy-detail", args=[p.pk])), Cell(p.fqdn), Cell("on" if p.enabled else "off"),
                Cell(labels.sip(p)), Cell(labels.web(p)), Cell(p.active_revision.number if p.active_revision else "-")]

    listing = Listing("Proxies", [Column("Status"), Column("Name", "name"), Column("FQDN", "fqdn"),
                                  Column("On", "enabled"), Column("SIP", "sip_mode"), Column("Web", "web_mode"),
                                  Column("Revision")], row, search=("name", "fqdn", "aliases"),
                      filters=[Filter("enabled", "On", "enabled", [("True", "on"), ("False", "off")]),
                               Filter("sip_mode", "SIP", "sip_mode", SIP_MODES),
                               Filter("web_mode", "Web", "web_mode", WEB_MODES)])
    if request.user.has_perm("proxies.add_proxy"):
        listing.actions.append(("Add proxy", reverse("proxy-new")))
    listing.live = True  # the rows are polled (htmx) so status changes show without a reload
    listing.prepare = Proxy.attach_status
    # the columns' fields only: a proxy row also holds its certificate, encrypted keys and network
    return list_page(request, Proxy.objects.only(*LIST_FIELDS), listing)


@requires("proxies.add_proxy")
def proxy_new(request: HttpRequest) -> HttpResponse:
    return _proxy_form(request, Proxy())


@requires("proxies.change_proxy")
def proxy_edit(request: HttpRequest, pk: int) -> HttpResponse:
    return _proxy_form(request, get_object_or_404(Proxy, pk=pk))


def _proxy_form(request: HttpRequest, proxy: Proxy) -> HttpResponse:
    form = ProxyForm(posted(request), instance=proxy,
                     keys_allowed=request.user.has_perm("proxies.change_proxy_keys"))
    if request.method == "POST" and form.is_valid():
        created = not proxy.pk
        proxy = form.save()
        messages.success(request, f"Proxy {proxy.name} {'created' if created else 'saved'}; "
                                  f"revision {proxy.active_revision.number} is published to its agent.")
        return redirect("proxy-detail", pk=proxy.pk)
    if request.method == "POST":
        messages.error(request, "Not saved: correct the fields marked below.")
    return render(request, "proxies/proxy_form.html", {"form": form, "proxy": proxy})


@requires("proxies.view_proxy")
def proxy_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _proxy_page(request, get_object_or_404(Proxy, pk=pk))


def _proxy_page(request: HttpRequest, proxy: Proxy, new_url: str = "") -> HttpResponse:
    from manager.proxies.changelog import changes_of

    return render(request, "proxies/proxy_detail.html", {
        **_status_context(proxy), "new_url": new_url, "sip_label": labels.sip(proxy),
        "registrations": proxy.registrations.all()[:20], "heartbeats": proxy.heartbeats.all()[:10],
        "active": proxy.active_revision, "last_heartbeat": proxy.last_heartbeat,
        "changes": changes_of(proxy)[:20] if request.user.has_perm("proxies.view_objectchange") else None,
        "exposure_failures": proxy.exposure_failures(),
    })


@requires("proxies.view_proxy")
def proxy_status(request: HttpRequest, pk: int) -> HttpResponse:
    """The proxy page's live status (htmx polls it): state, reason, last seen, applied vs latest revision."""
    proxy = get_object_or_404(Proxy, pk=pk)
    return render(request, "proxies/_status.html", _status_context(proxy))


def _status_context(proxy: Proxy) -> dict[str, object]:
    status, reason = proxy.status()
    hb, active = proxy.last_heartbeat, proxy.active_revision
    return {"proxy": proxy, "status": status, "reason": reason, "last_heartbeat": hb,
            "applied": hb.applied_revision if hb else None, "active": active}


@requires("proxies.delete_proxy")
def proxy_delete(request: HttpRequest, pk: int) -> HttpResponse:
    proxy = get_object_or_404(Proxy, pk=pk)

    def act() -> str:
        name = proxy.name
        proxy.delete()
        return f"Proxy {name} deleted."

    agent = f" The agent holding key {proxy.api_key_prefix}… can no longer fetch its config." \
        if proxy.api_key_hash else ""
    return confirm_page(request, title=f"Delete proxy {proxy.name}?", button="Delete proxy", act=act,
                        done=reverse("proxy-list"), cancel=reverse("proxy-detail", args=[pk]), consequences=[
                            f"The proxy {proxy.name} ({proxy.fqdn}) and its {proxy.applications.count()} "
                            f"applications, registrations, revisions, heartbeats, {proxy.backups.count()} backups "
                            f"and DNS record are removed from the manager.{agent}",
                            "The proxy itself keeps running with its last configuration until it is stopped."])


@requires("proxies.change_proxy_keys")
def provisioning_key_rotate(request: HttpRequest, pk: int) -> HttpResponse:
    proxy = get_object_or_404(Proxy, pk=pk)

    def act() -> str:
        proxy.provisioning_key = new_provisioning_key()
        proxy.save()
        log.warning("user %s rotated the provisioning key of proxy %s", request.user.get_username(), proxy.name)
        return "New provisioning key made: give the phones their new provisioning URLs."

    return confirm_page(request, title=f"Rotate the provisioning key of {proxy.name}?", button="Make a new key",
                        act=act, done=reverse("proxy-detail", args=[pk]), cancel=reverse("proxy-detail", args=[pk]),
                        consequences=["Every provisioning URL issued so far for this proxy stops working at once.",
                                      "Each phone must be given its new URL (the devices pages and CSV show them)."])


# applications ------------------------------------------------------------------------------
@requires("proxies.view_application")
def application_list(request: HttpRequest) -> HttpResponse:
    def row(a: Application) -> list[Cell]:
        return [Cell(a.name, reverse("application-detail", args=[a.proxy_id, a.pk])),
                Cell(a.proxy.name, reverse("proxy-detail", args=[a.proxy_id])),
                Cell(f"{a.port}{' (TLS)' if a.tls else ''}"), Cell(a.public_prefix), Cell(a.upstream)]

    listing = Listing("Applications", [Column("Name", "name"), Column("Proxy", "proxy__name"), Column("Port", "port"),
                                       Column("Public prefix", "public_prefix"), Column("Upstream", "upstream")],
                      row, search=("name", "upstream", "proxy__name"),
                      intro="Add an application on its proxy's page.")
    return list_page(request, Application.objects.select_related("proxy"), listing)


@requires("proxies.view_application")
def application_detail(request: HttpRequest, pk: int, app: int) -> HttpResponse:
    a = get_object_or_404(Application, pk=app, proxy_id=pk)
    actions = [(label, url) for label, url, perm in [
        ("Edit", reverse("application-edit", args=[pk, app]), "proxies.change_application"),
        ("Delete", reverse("application-delete", args=[pk, app]), "proxies.delete_application"),
    ] if request.user.has_perm(perm)]
    return detail_page(request, f"Application {a.name} of {a.proxy.name}", [
        ("Proxy", Cell(a.proxy.name, reverse("proxy-detail", args=[pk]))), ("Server port", a.port),
        ("TLS on the server port", "yes" if a.tls else "no"), ("Public prefix", a.public_prefix),
        ("Upstream", a.upstream), ("Upstream certificate verified", "yes" if a.verify_upstream else "no"),
    ], actions=actions, obj=a)


@requires("proxies.add_application")
def application_new(request: HttpRequest, pk: int) -> HttpResponse:
    return _application_form(request, pk, None)


@requires("proxies.change_application")
def application_edit(request: HttpRequest, pk: int, app: int) -> HttpResponse:
    return _application_form(request, pk, app)


def _application_form(request: HttpRequest, pk: int, app: int | None) -> HttpResponse:
    """Add or change one application of a proxy (the /api/*-only exposure of one upstream)."""
    proxy = get_object_or_404(Proxy, pk=pk)
    obj = get_object_or_404(Application, pk=app, proxy=proxy) if app else Application(proxy=proxy)
    form = ApplicationForm(posted(request), instance=obj)
    return form_page(request, form, title=f"{proxy.name}: application {obj.name}" if app else
                     f"{proxy.name}: new application",
                     intro="Only paths under the public prefix pass, rewritten onto the upstream URL's path; "
                           "everything else is answered 404 and never forwarded.",
                     done=lambda a: reverse("proxy-detail", args=[pk]) + "#applications",
                     saved=lambda a: f"Application {a.name} saved.", cancel=reverse("proxy-detail", args=[pk]))


@requires("proxies.delete_application")
def application_delete(request: HttpRequest, pk: int, app: int) -> HttpResponse:
    a = get_object_or_404(Application, pk=app, proxy_id=pk)

    return delete_page(request, a, message=f"Application {a.name} deleted.",
                       title=f"Delete application {a.name}?", button="Delete application",
                       done=reverse("proxy-detail", args=[pk]), cancel=reverse("application-detail", args=[pk, app]),
                       consequences=[f"Port {a.port} of {a.proxy.name} stops answering for {a.upstream} "
                                     "once the proxy applies the new revision (within seconds)."])


# registrations -----------------------------------------------------------------------------
@requires("proxies.view_registration")
def registration_list(request: HttpRequest) -> HttpResponse:
    def row(r: Registration) -> list[Cell]:
        return [Cell(f"#{r.pk}", reverse("registration-detail", args=[r.proxy_id, r.pk])),
                Cell(r.proxy.name, reverse("proxy-detail", args=[r.proxy_id])),
                Cell(f"{r.created:%Y-%m-%d %H:%M}"), Cell(f"{r.expires:%Y-%m-%d %H:%M}"),
                Cell(r.state + (f" (from {r.used_from})" if r.used_from else ""))]

    listing = Listing("Registrations", [Column("Registration"), Column("Proxy", "proxy__name"),
                                        Column("Created", "created"), Column("Expires", "expires"), Column("State")],
                      row, search=("proxy__name",), intro="Create a registration URL on its proxy's page.")
    return list_page(request, Registration.objects.select_related("proxy"), listing)


@requires("proxies.view_registration")
def registration_detail(request: HttpRequest, pk: int, reg: int) -> HttpResponse:
    r = get_object_or_404(Registration, pk=reg, proxy_id=pk)
    actions = [("Revoke", reverse("registration-delete", args=[pk, reg]))] \
        if not r.used and request.user.has_perm("proxies.delete_registration") else []
    return detail_page(request, f"Registration #{r.pk} of {r.proxy.name}", [
        ("Proxy", Cell(r.proxy.name, reverse("proxy-detail", args=[pk]))),
        ("Created", f"{r.created:%Y-%m-%d %H:%M:%S} UTC"),
        ("Expires", f"{r.expires:%Y-%m-%d %H:%M:%S} UTC"), ("State", r.state),
        ("Used", f"{r.used:%Y-%m-%d %H:%M:%S} UTC from {r.used_from}" if r.used else "-"),
        ("URL", "shown once when it was made; only its hash is stored"),
    ], actions=actions, obj=r)


@requires(POST="proxies.add_registration")
def registration_create(request: HttpRequest, pk: int) -> HttpResponse:
    proxy = get_object_or_404(Proxy, pk=pk)
    _, token = Registration.create_for(proxy)
    messages.success(request, "Registration URL made: copy it now, it is shown only once.")
    # Shown once, in this answer: only the hash is stored, and no redirect keeps the URL in the
    # session (a row of the database) until the next page. The token is in the fragment: never sent
    # in a request line, so in no access log.
    return shown_once(_proxy_page(request, proxy, f"{settings.PUBLIC_URL}/api/v1/register/#{token}"))


@requires("proxies.delete_registration")
def registration_delete(request: HttpRequest, pk: int, reg: int) -> HttpResponse:
    r = get_object_or_404(Registration, pk=reg, proxy_id=pk)

    def act() -> str:
        if Registration.objects.filter(pk=reg, used__isnull=True).delete()[0] == 0:
            raise ValueError("This registration URL was used in the meantime; the agent it registered keeps its key.")
        return f"Registration #{reg} revoked."

    return confirm_page(request, title=f"Revoke registration #{reg} of {r.proxy.name}?", button="Revoke", act=act,
                        done=reverse("proxy-detail", args=[pk]), cancel=reverse("proxy-detail", args=[pk]),
                        consequences=["The registration URL stops working: a proxy that uses it is refused.",
                                      "An agent already registered is not affected."])


@requires(POST="proxies.allow_reregistration")
def reregistration(request: HttpRequest, pk: int) -> HttpResponse:
    """Let the next use of a registration URL replace the registered agent (its key stops working
    then), or take that back. Without this a registration URL never replaces a registered agent."""
    proxy = get_object_or_404(Proxy, pk=pk)
    allow = request.POST.get("allow") == "1"
    Proxy.objects.filter(pk=pk).update(reregistration_allowed=allow)
    log.warning("user %s %s re-registration of proxy %s (agent key %s)", request.user.get_username(),
                "allowed" if allow else "withdrew", proxy.name, proxy.api_key_prefix or "none")
    messages.success(request, "Re-registration allowed: the next registration URL used replaces this agent."
                     if allow else "Re-registration refused again.")
    return redirect("proxy-detail", pk=pk)


# instances ---------------------------------------------------------------------------------
@requires("proxies.view_instance")
def instance_list(request: HttpRequest) -> HttpResponse:
    def row(i: Instance) -> list[Cell]:
        return [Cell(i.name, reverse("instance-detail", args=[i.pk])), Cell(i.web or "-"), Cell(labels.instance_sip(i)),
                Cell(i.xmpp or "-"), Cell("phones", reverse("instance-devices", args=[i.pk]))]

    listing = Listing("Instances", [Column("Name", "name"), Column("Web", "web"), Column("SIP", "sip_host"),
                                    Column("XMPP", "xmpp"), Column("")], row,
                      search=("name", "web", "sip_host", "sip_domains", "xmpp"),
                      filters=[Filter("sip_transport", "SIP transport", "sip_transport",
                                      [("udp", "UDP"), ("tcp", "TCP"), ("tls", "TLS")])])
    if request.user.has_perm("proxies.add_instance"):
        listing.actions.append(("Add instance", reverse("instance-new")))
    return list_page(request, Instance.objects.all(), listing)


@requires("proxies.view_instance")
def instance_detail(request: HttpRequest, pk: int) -> HttpResponse:
    i = get_object_or_404(Instance, pk=pk)
    actions = [(label, url) for label, url, perm in [
        ("Edit", reverse("instance-edit", args=[pk]), "proxies.change_instance"),
        ("Phones", reverse("instance-devices", args=[pk]), "proxies.view_device"),
        ("Delete", reverse("instance-delete", args=[pk]), "proxies.delete_instance"),
    ] if request.user.has_perm(perm)]
    exposed = ", ".join(p.name for p in i.proxies.all()) or "every proxy"
    return detail_page(request, f"Instance {i.name}", [
        ("Web backend", i.web or "-"), ("Web prefix", i.get_web_prefix_mode_display()), ("SIP", labels.instance_sip(i)),
        ("PBX certificate SHA-256", i.sip_tls_fingerprint or "-"), ("SIP domains", i.sip_domains or "-"),
        ("Plain RTP only", "yes" if i.rtp_only else "no"), ("PBX also takes TCP", "yes" if i.sip_offers_tcp else "no"),
        ("Media sources", i.media_sources or "-"),
        ("XMPP backend", i.xmpp or "-"), ("XMPP domains", i.xmpp_domains or "-"),
        ("Provisioning URL template", i.provisioning or "-"), ("Exposed by", exposed),
        ("Phones", i.devices.count()),
    ], actions=actions, obj=i)


@requires("proxies.add_instance")
def instance_new(request: HttpRequest) -> HttpResponse:
    return _instance_form(request, Instance())


@requires("proxies.change_instance")
def instance_edit(request: HttpRequest, pk: int) -> HttpResponse:
    return _instance_form(request, get_object_or_404(Instance, pk=pk))


def _instance_form(request: HttpRequest, inst: Instance) -> HttpResponse:
    form = InstanceForm(posted(request), instance=inst)
    return form_page(request, form, title=f"Instance {inst.name}" if inst.pk else "New instance",
                     done=lambda i: reverse("instance-detail", args=[i.pk]),
                     saved=lambda i: f"Instance {i.name} saved; every proxy gets a new revision.",
                     cancel=reverse("instance-detail", args=[inst.pk]) if inst.pk else reverse("instance-list"))


@requires("proxies.delete_instance")
def instance_delete(request: HttpRequest, pk: int) -> HttpResponse:
    i = get_object_or_404(Instance, pk=pk)

    return delete_page(request, i, message=f"Instance {i.name} deleted.",
                       title=f"Delete instance {i.name}?", button="Delete instance",
                       done=reverse("instance-list"), cancel=reverse("instance-detail", args=[pk]), consequences=[
                           f"Every proxy stops routing /{i.name}/, its SIP and XMPP domains once it applies "
                           "the new revision.",
                           f"Its {i.devices.count()} phones are deleted; their provisioning URLs stop working."])


# devices -----------------------------------------------------------------------------------
@requires("proxies.view_device")
def device_list(request: HttpRequest) -> HttpResponse:
    def row(d: Device) -> list[Cell]:
        return [Cell(d.mac, reverse("device-detail", args=[d.instance_id, d.pk])), Cell(d.label or "-"),
                Cell(d.instance.name, reverse("instance-devices", args=[d.instance_id]))]

    instances = list(Instance.objects.values_list("name", "name"))
    listing = Listing("Phones", [Column("MAC", "mac"), Column("Label", "label"), Column("Instance", "instance__name")],
                      row, search=("mac", "label"),
                      filters=[Filter("instance", "Instance", "instance__name", instances)],
                      intro="Add phones on their instance's phones page.")
    return list_page(request, Device.objects.select_related("instance").only("mac", "label", "instance__name"),
                     listing)


@requires(GET="proxies.view_device", POST="proxies.add_device")
def devices(request: HttpRequest, pk: int) -> HttpResponse:
    """An instance's phones, with the provisioning URL of every proxy for those who may see them; add."""
    inst = get_object_or_404(Instance, pk=pk)
    form = DeviceForm(posted(request), instance=Device(instance=inst))
    if request.method == "POST":
        if form.is_valid():
            d = form.save()
            messages.success(request, f"Phone {d.mac} added.")
            return redirect("instance-devices", pk=pk)
        messages.error(request, "Phone not added: correct the fields marked below.")
    show_urls = request.user.has_perm("proxies.view_provisioning_url")
    rows = [(d, d.urls() if show_urls else None) for d in inst.devices.all()]
    return render(request, "proxies/devices.html", {"instance": inst, "rows": rows, "form": form})


@requires("proxies.view_device")
def device_detail(request: HttpRequest, pk: int, device: int) -> HttpResponse:
    d = get_object_or_404(Device, pk=device, instance_id=pk)
    actions = [(label, url) for label, url, perm in [
        ("Edit", reverse("device-edit", args=[pk, device]), "proxies.change_device"),
        ("Delete", reverse("device-delete", args=[pk, device]), "proxies.delete_device"),
    ] if request.user.has_perm(perm)]
    rows: list[tuple[str, object]] = [("Instance", Cell(d.instance.name, reverse("instance-detail", args=[pk]))),
                                      ("MAC", d.mac), ("Label", d.label or "-")]
    if request.user.has_perm("proxies.view_provisioning_url"):
        rows += [(f"Provisioning URL ({p.name})", Cell(url, cls="copy")) for p, url in d.urls()]
    return detail_page(request, f"Phone {d.mac}", rows, actions=actions, obj=d)


@requires("proxies.change_device")
def device_edit(request: HttpRequest, pk: int, device: int) -> HttpResponse:
    d = get_object_or_404(Device, pk=device, instance_id=pk)
    return form_page(request, DeviceForm(posted(request), instance=d), title=f"Phone {d.mac}",
                     done=lambda x: reverse("device-detail", args=[pk, x.pk]), saved=lambda x: f"Phone {x.mac} saved.",
                     cancel=reverse("device-detail", args=[pk, device]))


@requires("proxies.delete_device")
def device_delete(request: HttpRequest, pk: int, device: int) -> HttpResponse:
    d = get_object_or_404(Device, pk=device, instance_id=pk)

    return delete_page(request, d, message=f"Phone {d.mac} deleted.",
                       title=f"Delete phone {d.mac}?", button="Delete phone",
                       done=reverse("instance-devices", args=[pk]), cancel=reverse("device-detail", args=[pk, device]),
                       consequences=[f"The phone is removed from instance {d.instance.name}. Its provisioning URLs "
                                     "are derived, so a URL already given out keeps working until the provisioning "
                                     "key is rotated."])


@requires("proxies.view_provisioning_url")
def devices_csv(request: HttpRequest, pk: int) -> HttpResponse:
    """The instance's provisioning URLs as CSV, one row per device and proxy."""
    inst = get_object_or_404(Instance, pk=pk)
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["mac", "label", "proxy", "url"])
    for d in inst.devices.all():
        for proxy, url in d.urls():
            w.writerow([d.mac, d.label, proxy.name, url])
    resp = HttpResponse(out.getvalue(), content_type="text/csv")
    resp["Content-Disposition"] = f'attachment; filename="{inst.name}-provisioning.csv"'
    return resp
