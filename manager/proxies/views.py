"""Server-rendered admin UI: proxies (with status, registrations, heartbeats) and instances."""

from __future__ import annotations

import csv
import io
import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from manager.proxies.forms import ApplicationForm, DeviceForm, InstanceForm, ProxyForm
from manager.proxies.models import Application, Device, Instance, Proxy, Registration
from manager.proxies.permissions import requires

log = logging.getLogger("manager.access")


@requires("proxies.view_proxy")
def proxy_list(request: HttpRequest) -> HttpResponse:
    rows = [(p, *p.status()) for p in Proxy.objects.all()]
    return render(request, "proxies/proxy_list.html", {"rows": rows})


@requires("proxies.add_proxy")
def proxy_new(request: HttpRequest) -> HttpResponse:
    return _proxy_form(request, Proxy())


@requires("proxies.change_proxy")
def proxy_edit(request: HttpRequest, pk: int) -> HttpResponse:
    return _proxy_form(request, get_object_or_404(Proxy, pk=pk))


def _proxy_form(request: HttpRequest, proxy: Proxy) -> HttpResponse:
    form = ProxyForm(request.POST or None, instance=proxy,
                     keys_allowed=request.user.has_perm("proxies.change_proxy_keys"))
    if request.method == "POST" and form.is_valid():
        proxy = form.save()
        return redirect("proxy-detail", pk=proxy.pk)
    return render(request, "proxies/proxy_form.html", {"form": form, "proxy": proxy})


@requires("proxies.view_proxy")
def proxy_detail(request: HttpRequest, pk: int) -> HttpResponse:
    proxy = get_object_or_404(Proxy, pk=pk)
    status, reason = proxy.status()
    new_url = request.session.pop("new_registration_url", None)
    return render(request, "proxies/proxy_detail.html", {
        "proxy": proxy, "status": status, "reason": reason, "new_url": new_url,
        "registrations": proxy.registrations.all()[:20], "heartbeats": proxy.heartbeats.all()[:10],
        "active": proxy.active_revision, "last_heartbeat": proxy.last_heartbeat,
        "exposure_failures": proxy.exposure_failures(),
    })


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
    form = ApplicationForm(request.POST or None, instance=obj)
    if request.method == "POST" and form.is_valid():
        form.save()
        return redirect("proxy-detail", pk=pk)
    return render(request, "proxies/application_form.html", {"form": form, "proxy": proxy, "app": obj})


@requires(POST="proxies.delete_application")
def application_delete(request: HttpRequest, pk: int, app: int) -> HttpResponse:
    Application.objects.filter(pk=app, proxy_id=pk).delete()
    return redirect("proxy-detail", pk=pk)


@requires(POST="proxies.add_registration")
def registration_create(request: HttpRequest, pk: int) -> HttpResponse:
    proxy = get_object_or_404(Proxy, pk=pk)
    _, token = Registration.create_for(proxy)
    # shown once: only the hash is stored
    # the token in the fragment: never sent in a request line, so in no access log
    request.session["new_registration_url"] = f"{settings.PUBLIC_URL}/api/v1/register/#{token}"
    return redirect("proxy-detail", pk=pk)


@requires(POST="proxies.delete_registration")
def registration_delete(request: HttpRequest, pk: int, reg: int) -> HttpResponse:
    Registration.objects.filter(pk=reg, proxy_id=pk, used__isnull=True).delete()
    return redirect("proxy-detail", pk=pk)


@requires(POST="proxies.allow_reregistration")
def reregistration(request: HttpRequest, pk: int) -> HttpResponse:
    """Let the next use of a registration URL replace the registered agent (its key stops working
    then), or take that back. Without this a registration URL never replaces a registered agent."""
    proxy = get_object_or_404(Proxy, pk=pk)
    allow = request.POST.get("allow") == "1"
    Proxy.objects.filter(pk=pk).update(reregistration_allowed=allow)
    log.warning("user %s %s re-registration of proxy %s (agent key %s)", request.user.get_username(),
                "allowed" if allow else "withdrew", proxy.name, proxy.api_key_prefix or "none")
    return redirect("proxy-detail", pk=pk)


@requires("proxies.view_instance")
def instance_list(request: HttpRequest) -> HttpResponse:
    return render(request, "proxies/instance_list.html", {"instances": Instance.objects.all()})


@requires("proxies.add_instance")
def instance_new(request: HttpRequest) -> HttpResponse:
    return _instance_form(request, Instance())


@requires("proxies.change_instance")
def instance_edit(request: HttpRequest, pk: int) -> HttpResponse:
    return _instance_form(request, get_object_or_404(Instance, pk=pk))


def _instance_form(request: HttpRequest, inst: Instance) -> HttpResponse:
    form = InstanceForm(request.POST or None, instance=inst)
    if request.method == "POST" and form.is_valid():
        form.save()
        return redirect("instance-list")
    return render(request, "proxies/instance_form.html", {"form": form, "instance": inst})


@requires(GET="proxies.view_device", POST="proxies.add_device")
def devices(request: HttpRequest, pk: int) -> HttpResponse:
    """An instance's phones, with the provisioning URL of every proxy for those who may see them; add."""
    inst = get_object_or_404(Instance, pk=pk)
    form = DeviceForm(request.POST or None, instance=Device(instance=inst))
    if request.method == "POST" and form.is_valid():
        form.save()
        return redirect("instance-devices", pk=pk)
    show_urls = request.user.has_perm("proxies.view_provisioning_url")
    rows = [(d, d.urls() if show_urls else None) for d in inst.devices.all()]
    return render(request, "proxies/devices.html", {"instance": inst, "rows": rows, "form": form})


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


@requires(POST="proxies.delete_device")
def device_delete(request: HttpRequest, pk: int, device: int) -> HttpResponse:
    Device.objects.filter(pk=device, instance_id=pk).delete()
    return redirect("instance-devices", pk=pk)
