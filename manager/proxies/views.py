"""Server-rendered admin UI: proxies (with status, registrations, heartbeats) and instances."""

from __future__ import annotations

import csv
import io

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from manager.proxies.forms import ApplicationForm, DeviceForm, InstanceForm, ProxyForm
from manager.proxies.models import Application, Device, Instance, Proxy, Registration


@login_required
def proxy_list(request: HttpRequest) -> HttpResponse:
    rows = [(p, *p.status()) for p in Proxy.objects.all()]
    return render(request, "proxies/proxy_list.html", {"rows": rows})


@login_required
def proxy_edit(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    proxy = get_object_or_404(Proxy, pk=pk) if pk else Proxy()
    form = ProxyForm(request.POST or None, instance=proxy)
    if request.method == "POST" and form.is_valid():
        proxy = form.save()
        return redirect("proxy-detail", pk=proxy.pk)
    return render(request, "proxies/proxy_form.html", {"form": form, "proxy": proxy})


@login_required
def proxy_detail(request: HttpRequest, pk: int) -> HttpResponse:
    proxy = get_object_or_404(Proxy, pk=pk)
    status, reason = proxy.status()
    new_url = request.session.pop("new_registration_url", None)
    return render(request, "proxies/proxy_detail.html", {
        "proxy": proxy, "status": status, "reason": reason, "new_url": new_url,
        "registrations": proxy.registrations.all()[:20], "heartbeats": proxy.heartbeats.all()[:10],
        "active": proxy.active_revision,
    })


@login_required
def application_edit(request: HttpRequest, pk: int, app: int | None = None) -> HttpResponse:
    """Add or change one application of a proxy (the /api/*-only exposure of one upstream)."""
    proxy = get_object_or_404(Proxy, pk=pk)
    obj = get_object_or_404(Application, pk=app, proxy=proxy) if app else Application(proxy=proxy)
    form = ApplicationForm(request.POST or None, instance=obj)
    if request.method == "POST" and form.is_valid():
        form.save()
        return redirect("proxy-detail", pk=pk)
    return render(request, "proxies/application_form.html", {"form": form, "proxy": proxy, "app": obj})


@login_required
@require_POST
def application_delete(request: HttpRequest, pk: int, app: int) -> HttpResponse:
    Application.objects.filter(pk=app, proxy_id=pk).delete()
    return redirect("proxy-detail", pk=pk)


@login_required
@require_POST
def registration_create(request: HttpRequest, pk: int) -> HttpResponse:
    proxy = get_object_or_404(Proxy, pk=pk)
    _, token = Registration.create_for(proxy)
    # shown once: only the hash is stored
    request.session["new_registration_url"] = request.build_absolute_uri(f"/api/v1/register/{token}/")
    return redirect("proxy-detail", pk=pk)


@login_required
@require_POST
def registration_delete(request: HttpRequest, pk: int, reg: int) -> HttpResponse:
    Registration.objects.filter(pk=reg, proxy_id=pk, used__isnull=True).delete()
    return redirect("proxy-detail", pk=pk)


@login_required
def instance_list(request: HttpRequest) -> HttpResponse:
    return render(request, "proxies/instance_list.html", {"instances": Instance.objects.all()})


@login_required
def instance_edit(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    inst = get_object_or_404(Instance, pk=pk) if pk else Instance()
    form = InstanceForm(request.POST or None, instance=inst)
    if request.method == "POST" and form.is_valid():
        form.save()
        return redirect("instance-list")
    return render(request, "proxies/instance_form.html", {"form": form, "instance": inst})


@login_required
def devices(request: HttpRequest, pk: int) -> HttpResponse:
    """An instance's phones with the provisioning URL of every proxy; add / delete; CSV export."""
    inst = get_object_or_404(Instance, pk=pk)
    form = DeviceForm(request.POST or None, instance=Device(instance=inst))
    if request.method == "POST" and form.is_valid():
        form.save()
        return redirect("instance-devices", pk=pk)
    rows = [(d, d.urls()) for d in inst.devices.all()]
    if request.GET.get("format") == "csv":
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(["mac", "label", "proxy", "url"])
        for d, urls in rows:
            for proxy, url in urls:
                w.writerow([d.mac, d.label, proxy.name, url])
        resp = HttpResponse(out.getvalue(), content_type="text/csv")
        resp["Content-Disposition"] = f'attachment; filename="{inst.name}-provisioning.csv"'
        return resp
    return render(request, "proxies/devices.html", {"instance": inst, "rows": rows, "form": form})


@login_required
@require_POST
def device_delete(request: HttpRequest, pk: int, device: int) -> HttpResponse:
    Device.objects.filter(pk=device, instance_id=pk).delete()
    return redirect("instance-devices", pk=pk)
