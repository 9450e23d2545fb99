"""Any change that affects a proxy's config publishes a new revision for it."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from manager.proxies.compiler import publish
from manager.proxies.models import Application, Instance, Proxy


def _all() -> None:
    for proxy in Proxy.objects.all():
        publish(proxy)


@receiver(post_delete, sender=Proxy)
def proxy_deleted(sender: Any, instance: Proxy, **kw: Any) -> None:
    from manager.proxies.api import forget_key

    forget_key(instance.pk)


@receiver(post_save, sender=Proxy)
def proxy_saved(sender: Any, instance: Proxy, update_fields: Any = None, **kw: Any) -> None:
    from manager.proxies.api import forget_key

    forget_key(instance.pk)  # a new (or revoked) API key is checked against the database again
    if update_fields and set(update_fields) <= set(Proxy.AGENT_FIELDS):
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
    proxy_id = instance.proxy_id

    def republish() -> None:  # after commit: a proxy deleted with its applications gets no revision
        proxy = Proxy.objects.filter(pk=proxy_id).first()
        if proxy is not None:
            publish(proxy)

    transaction.on_commit(republish)
