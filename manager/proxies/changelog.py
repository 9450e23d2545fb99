"""The change log: every create, update and delete of a tracked object, who did it, and the diff.

Recorded from model signals, so the UI, the REST API, the Django admin and management commands
all leave entries without each remembering to; a many-to-many change (which proxies expose an
instance) is an update of the object holding the field, its before and after the related names.
The log is pruned as it grows: entries older than PFORTE_CHANGELOG_DAYS (90) go, and only the
newest PFORTE_CHANGELOG_KEEP (100,000) stay, checked every PRUNE_EVERY entries written.
Who acted comes from `acting_as` (set by the `CurrentUser` middleware for the UI and by the API
views once DRF has authenticated); a change without one (an agent registering, a command) is logged with no user.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import ManyToManyField, Model, QuerySet
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save
from django.utils import timezone

_actor: contextvars.ContextVar[Any] = contextvars.ContextVar("pforte_change_actor", default=None)
_before: contextvars.ContextVar[dict[tuple[str, int], dict[str, Any]] | None] = contextvars.ContextVar(
    "pforte_change_before", default=None)

# fields never written into the log, only whether they are set or changed
SECRET = {"provisioning_key_enc", "key_pem_enc", "credentials_enc", "secret_enc", "api_key_hash", "token_hash",
          "key_hash", "password", "data"}
# fields whose change alone is no change an operator needs to see
NOISE = {"last_login"}
PRUNE_EVERY = 100
_written = itertools.count(1)


@contextlib.contextmanager
def acting_as(user: Any) -> Iterator[None]:
    token = _actor.set(user if user is not None and user.is_authenticated else None)
    try:
        yield
    finally:
        _actor.reset(token)


class CurrentUser:
    """Middleware: changes made while handling a request are the request's user's."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        with acting_as(getattr(request, "user", None)):
            return self.get_response(request)


def tracked() -> list[type[Model]]:
    from manager.proxies import models as m

    return [m.Proxy, m.Instance, m.Application, m.Device, m.Registration, m.Backup, m.DnsRecord, m.ApiToken,
            get_user_model()]


def snapshot(obj: Model) -> dict[str, Any]:
    out: dict[str, Any] = {}
    deferred = obj.get_deferred_fields()  # not loaded (a backup's archive): not read for the log either
    for f in obj._meta.concrete_fields:
        if f.primary_key or f.attname in deferred:
            continue
        value = getattr(obj, f.attname)
        if value == "" and f.null:
            value = None  # what the database stores for it
        if f.name in SECRET:
            out[f.name] = "(set)" if value else "(empty)"
            out[f"_{f.name}"] = _fingerprint(value)
        else:
            out[f.name] = value if isinstance(value, (bool, int, float)) or value is None else str(value)
    return out


def _fingerprint(value: Any) -> int:
    """Only to see that a secret changed; never stored (dropped by `_public`)."""
    return hash(bytes(value) if isinstance(value, (bytes, memoryview)) else str(value))


def _public(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    for key in [k for k in {**before, **after} if k.startswith("_")]:
        old, new = before.pop(key, None), after.pop(key, None)
        name = key[1:]
        if before and after and old != new and name in after:
            after[name] = "(changed)"
    return before, after


def _label(obj: Model) -> str:
    return obj._meta.label_lower


def _remember(sender: Any, instance: Model, raw: bool = False, **kw: Any) -> None:
    if raw or instance.pk is None or instance._state.adding:
        return
    old = type(instance)._default_manager.filter(pk=instance.pk).first()
    if old is None:
        return
    store = _before.get()
    if store is None:
        store = {}
        _before.set(store)
    store[(_label(instance), instance.pk)] = snapshot(old)


def _record(instance: Model, action: str, before: dict[str, Any], after: dict[str, Any]) -> None:
    from manager.proxies.models import ObjectChange

    before, after = _public(before, after)
    if action == ObjectChange.UPDATE and all(before.get(k) == v or k in NOISE for k, v in after.items()):
        return
    user = _actor.get()
    ObjectChange.objects.create(user=user, username=user.get_username() if user else "", action=action,
                                object_type=_label(instance), object_id=instance.pk,
                                object_repr=str(instance)[:200], before=before, after=after)
    if next(_written) % PRUNE_EVERY == 0:
        prune()


def prune() -> int:
    """Delete entries older than the kept days and beyond the kept count; returns how many went."""
    from manager.proxies.models import ObjectChange

    gone = ObjectChange.objects.filter(time__lt=timezone.now() - timedelta(days=settings.PFORTE_CHANGELOG_DAYS)
                                       ).delete()[0]
    edge = ObjectChange.objects.order_by("-pk").values_list("pk", flat=True)[
        settings.PFORTE_CHANGELOG_KEEP:settings.PFORTE_CHANGELOG_KEEP + 1]
    if edge:
        gone += ObjectChange.objects.filter(pk__lte=edge[0]).delete()[0]
    return gone


def _related(instance: Model, field: str) -> list[str]:
    return sorted(str(o) for o in getattr(instance, field).all())


def _m2m(sender: Any, instance: Model, action: str, reverse: bool, model: Any, pk_set: Any, **kw: Any) -> None:
    """Before a many-to-many change remember the related names; after it, log the update."""
    from manager.proxies.models import ObjectChange

    store = _before.get()
    if store is None:
        store = {}
        _before.set(store)
    if reverse:
        # changed from the other side (proxy.only_instances.add(...)): log it on each holder
        if pk_set is None:  # a clear: the holders are the ones related before it
            rkey = ("reverse", _label(instance), instance.pk, sender)
            if action == "pre_clear":
                field = next(f.name for f in model._meta.many_to_many if f.remote_field.through is sender)
                store[rkey] = set(model._default_manager.filter(**{field: instance}).values_list("pk", flat=True))
            pk_set = store.pop(rkey, set()) if action == "post_clear" else store.get(rkey, set())
        for holder in model._default_manager.filter(pk__in=pk_set):
            _m2m(sender, holder, action, False, type(instance), {instance.pk}, **kw)
        return
    field = next((f.name for f in instance._meta.many_to_many if f.remote_field.through is sender), None)
    if field is None or not action.startswith(("pre_", "post_")):
        return
    key = (_label(instance), instance.pk, field)
    if action.startswith("pre_"):
        store[key] = {field: _related(instance, field)}
    elif key in store:
        before, after = store.pop(key), {field: _related(instance, field)}
        if before != after:
            _record(instance, ObjectChange.UPDATE, before, after)


def _saved(sender: Any, instance: Model, created: bool, raw: bool = False, **kw: Any) -> None:
    from manager.proxies.models import ObjectChange

    if raw:
        return
    store = _before.get() or {}
    before = store.pop((_label(instance), instance.pk), None)
    if created or before is None:
        _record(instance, ObjectChange.CREATE, {}, snapshot(instance))
    else:
        _record(instance, ObjectChange.UPDATE, before, snapshot(instance))


def _deleted(sender: Any, instance: Model, **kw: Any) -> None:
    from manager.proxies.models import ObjectChange

    _record(instance, ObjectChange.DELETE, snapshot(instance), {})


def connect() -> None:
    for model in tracked():
        uid = f"changelog-{model._meta.label_lower}"
        pre_save.connect(_remember, sender=model, dispatch_uid=f"{uid}-pre")
        post_save.connect(_saved, sender=model, dispatch_uid=f"{uid}-post")
        post_delete.connect(_deleted, sender=model, dispatch_uid=f"{uid}-delete")
        for f in model._meta.many_to_many:
            if isinstance(f, ManyToManyField) and model._meta.app_label == "proxies":
                m2m_changed.connect(_m2m, sender=f.remote_field.through, dispatch_uid=f"{uid}-{f.name}")


def changes_of(obj: Model) -> QuerySet[Any]:
    from manager.proxies.models import ObjectChange

    return ObjectChange.objects.filter(object_type=_label(obj), object_id=obj.pk)
