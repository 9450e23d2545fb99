"""Any change that affects a proxy's config publishes a new revision for it."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from manager.proxies.compiler import publish
from manager.proxies.feed import FEED, notify_others
from manager.proxies.models import Application, DnsRecord, Instance, PendingPublish, Proxy
from manager.proxies.publisher import PUBLISHER, publish_all


def _all() -> None:
    if PUBLISHER.running:  # serving: the request returns, the publisher thread writes the revisions
        PendingPublish.objects.create()  # with the change: a process that ends before publishing loses nothing
        transaction.on_commit(PUBLISHER.request)
    else:
        publish_all()


@receiver(post_delete, sender=Proxy)
def proxy_deleted(sender: Any, instance: Proxy, **kw: Any) -> None:
    FEED.key_changed(instance.pk, None)
    notify_others()


@receiver(post_save, sender=Proxy)
def proxy_saved(sender: Any, instance: Proxy, update_fields: Any = None, **kw: Any) -> None:
    if update_fields and "api_key_hash" in update_fields:  # only then is the object's key the stored one
        FEED.key_changed(instance.pk, instance.api_key_hash)  # a new (or revoked) key counts at once
        notify_others()  # and in the other manager processes
    if update_fields and set(update_fields) <= set(Proxy.AGENT_FIELDS):
        return
    publish(instance)


@receiver([post_save, post_delete], sender=Instance)
def instance_changed(sender: Any, **kw: Any) -> None:
    _all()


@receiver(m2m_changed, sender=Instance.proxies.through)
def exposure_changed(sender: Any, action: str = "", **kw: Any) -> None:
    if action.startswith("post_"):  # the pre_ signals come first with the same change: compile once
        _all()


@receiver([post_save, post_delete], sender=Application)
def application_changed(sender: Any, instance: Application, **kw: Any) -> None:
    proxy_id = instance.proxy_id

    def republish() -> None:  # after commit: a proxy deleted with its applications gets no revision
        proxy = Proxy.objects.filter(pk=proxy_id).first()
        if proxy is not None:
            publish(proxy)

    transaction.on_commit(republish)


@receiver(post_save, sender=DnsRecord)
def dns_record_saved(sender: Any, instance: DnsRecord, **kw: Any) -> None:
    FEED.dns_changed(instance.proxy_id, True)  # its heartbeats' source is checked at arrival from now on
    notify_others()


@receiver(post_delete, sender=DnsRecord)
def dns_record_deleted(sender: Any, instance: DnsRecord, **kw: Any) -> None:
    FEED.dns_changed(instance.proxy_id, False)
    notify_others()
