"""The REST API for people and scripts: list, retrieve, create, update and delete of every object,
at /api/v1/objects/<type>/, filtered by field (django-filter: `?name=edge`), searched (`?q=`),
ordered (`?ordering=-name`) and paged (`?limit=` / `?offset=`, as NetBox's API).

Authenticated by HTTP Basic or the UI's session, each method needing the model's permission
(view/add/change/delete). Secrets are never in an answer: the serializers leave the encrypted and
hashed fields out. Writes go through the model's `full_clean()`, so the API enforces the same rules
(and the same config check) as the forms, answered 400 naming the field.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import filters, serializers, viewsets
from rest_framework.pagination import LimitOffsetPagination

from manager.proxies import models as m
from manager.proxies.admin_api import AUTH
from manager.proxies.changelog import acting_as
from manager.proxies.permissions import Requires


class Pages(LimitOffsetPagination):
    default_limit = 50
    max_limit = 1000


class CleanSerializer(serializers.ModelSerializer):
    """Runs the model's own validation (clean, unique checks) before saving."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        obj = self.instance or self.Meta.model()
        m2m = {k: attrs[k] for k in list(attrs) if isinstance(self.fields.get(k), serializers.ManyRelatedField)}
        for k, v in attrs.items():
            if k not in m2m:
                setattr(obj, k, v)
        try:
            obj.full_clean(exclude=[f.name for f in obj._meta.fields if f.name not in attrs and obj.pk])
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages) \
                from None
        return {k: v if k in m2m else getattr(obj, k) for k, v in attrs.items()}  # as clean() normalised them


def _serializer(model: type, excluded: tuple[str, ...] = (), read_only: tuple[str, ...] = ()) -> type:
    meta = type("Meta", (), {"model": model, "exclude": excluded, "read_only_fields": read_only})
    return type(f"{model.__name__}Serializer", (CleanSerializer,), {"Meta": meta})


PROXY_SECRET = ("provisioning_key_enc", "key_pem_enc", "api_key_hash")


class UserSerializer(serializers.ModelSerializer):
    class Meta:
        model = get_user_model()
        fields = ["id", "username", "email", "is_active", "last_login", "date_joined"]
        read_only_fields = ["last_login", "date_joined"]


SPECS: list[tuple[str, type, type, tuple[str, ...], tuple[str, ...]]] = [
    # (URL name, model, serializer, filter fields, search fields)
    ("proxies", m.Proxy, _serializer(m.Proxy, PROXY_SECRET, (*m.Proxy.AGENT_FIELDS[1:], "api_key_prefix")),
     ("name", "fqdn", "enabled", "sip_mode", "web_mode"), ("name", "fqdn")),
    ("instances", m.Instance, _serializer(m.Instance), ("name", "sip_transport"), ("name", "web", "sip_host")),
    ("applications", m.Application, _serializer(m.Application), ("proxy", "name", "port"), ("name", "upstream")),
    ("devices", m.Device, _serializer(m.Device), ("instance", "mac"), ("mac", "label")),
    ("registrations", m.Registration, _serializer(m.Registration, ("token_hash",),
                                                  ("expires", "used", "used_from")), ("proxy",), ()),
    ("backups", m.Backup, _serializer(m.Backup, ("data",), ("size",)), ("proxy",), ()),
    ("dns-records", m.DnsRecord, _serializer(m.DnsRecord, ("credentials_enc",)), ("proxy", "provider"),
     ("name", "zone")),
    ("users", get_user_model(), UserSerializer, ("username", "is_active"), ("username", "email")),
]


def _viewset(name: str, model: type, serializer: type, filter_fields: tuple[str, ...],
             search: tuple[str, ...]) -> type:
    label = f"{model._meta.app_label}.%s_{model._meta.model_name}"
    perms = Requires(GET=label % "view", POST=label % "add", PUT=label % "change", PATCH=label % "change",
                     DELETE=label % "delete")

    class ViewSet(viewsets.ModelViewSet):
        queryset = model._default_manager.order_by("pk")
        lookup_value_converter = "int"
        serializer_class = serializer
        authentication_classes = AUTH
        permission_classes = [perms]
        pagination_class = Pages
        filter_backends = [DjangoFilterBackend, filters.SearchFilter, filters.OrderingFilter]
        filterset_fields = filter_fields
        search_fields = search
        ordering_fields = "__all__" if model is not get_user_model() else ["username", "last_login"]

        def perform_create(self, ser: Any) -> None:
            with acting_as(self.request.user):
                ser.save()

        def perform_update(self, ser: Any) -> None:
            with acting_as(self.request.user):
                ser.save()

        def perform_destroy(self, obj: Any) -> None:
            with acting_as(self.request.user):
                obj.delete()

    ViewSet.__name__ = ViewSet.__qualname__ = f"{model.__name__}ViewSet"
    if model is m.Registration:  # a registration URL's token is shown once, by the UI: not made here
        ViewSet.http_method_names = ["get", "head", "delete", "options"]
    if model is m.Backup:  # a backup is made by the proxy (POST /api/v1/proxies/<id>/backups/)
        ViewSet.http_method_names = ["get", "head", "delete", "options"]
    return ViewSet


VIEWSETS = {name: _viewset(name, model, ser, ff, search) for name, model, ser, ff, search in SPECS}


def urls() -> list[Any]:
    from rest_framework.routers import SimpleRouter

    router = SimpleRouter(use_regex_path=False)
    for name, viewset in VIEWSETS.items():
        router.register(name, viewset, basename=f"api-{name}")
    return router.urls
