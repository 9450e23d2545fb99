from django.contrib import admin
from django.db import models
from django.http import HttpRequest

from manager.proxies import models as m
from manager.proxies.roles import is_admin


def _admins_only(request: HttpRequest) -> bool:
    """The Django admin shows stored revisions (with the keys compiled into them) and edits users:
    only for admins, whatever model permissions a staff account was given by hand."""
    return bool(request.user.is_staff and is_admin(request.user))


admin.site.has_permission = _admins_only  # type: ignore[method-assign]

class ModelAdmin(admin.ModelAdmin):
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}  # as Django 6 will, and the UI's forms


for model in (m.Instance, m.Proxy, m.Application, m.Registration, m.ConfigRevision, m.Heartbeat, m.Device,
              m.Backup, m.DnsRecord):
    admin.site.register(model, ModelAdmin)
