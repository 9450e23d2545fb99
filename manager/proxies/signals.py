"""Any change that affects a proxy's config publishes a new revision for it."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from manager.proxies.compiler import publish
from manager.proxies.models import Application, Instance, Proxy


def _all() -> None:
    for proxy in Proxy.objects.all():
        publish(proxy)


@receiver(post_save, sender=Proxy)
def proxy_saved(sender: Any, instance: Proxy, update_fields: Any = None, **kw: Any) -> None:
    if update_fields and set(update_fields) <= {"api_key_hash"}:
        return
    publish(instance)


@receiver([post_save, post_delete], sender=Instance)
def instance_changed(sender: Any, **kw: Any) -> None:
    _all()


@receiver(m2m_changed, sender=Instance.proxies.through)
def exposure_changed(sender: Any, **kw: Any) -> None:
    _all()


@receiver([post_save, post_delete], sender=Application)
def application_changed(sender: Any, instance: Application, **kw: Any) -> None:
    origin = kw.get("origin")
    if isinstance(origin, Proxy) or (isinstance(origin, QuerySet) and origin.model is Proxy):
        return  # the proxy itself is being deleted: a new revision would point at a deleted row
    try:
        publish(instance.proxy)
    except Proxy.DoesNotExist:
        pass
