"""The REST API for people and scripts: list, retrieve, create, update and delete of every object,
at /api/v1/objects/<type>/, filtered by field (django-filter: `?name=edge`), searched (`?q=`),
ordered (`?ordering=-name`) and paged (`?limit=` / `?offset=`, as NetBox's API).

Authenticated by a user's API token (`Authorization: Bearer pft_…`, manager.proxies.tokens), HTTP
Basic or the UI's session, each method needing the model's permission (view/add/change/delete) and,
with a token, the token's role allowing it. Secrets are never in an answer: the serializers leave
the encrypted and hashed fields out, and the secrets that can be set here (a DNS account's
credentials, a proxy's certificate key, a user's password) are write-only fields, checked against
the same permission the UI's form asks for (admins). A new API token is in the answer to its
create, and never again. Writes go through the model's `full_clean()`, so the API enforces the same
rules (and the same config check) as the forms, answered 400 naming the field.
"""

from __future__ import annotations

import base64
import functools
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Prefetch
from django.utils import timezone
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import filters, serializers, viewsets
from rest_framework.exceptions import PermissionDenied
from rest_framework.fields import SkipField
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.relations import PKOnlyObject

from manager.proxies import models as m
from manager.proxies.admin_api import AUTH
from manager.proxies.changelog import acting_as
from manager.proxies.permissions import Requires, may
from manager.proxies.roles import ROLES, assign, at_most, role_of
from manager.proxies.ui import shown_once


class Pages(LimitOffsetPagination):
    default_limit = 50
    max_limit = 1000

    def paginate_queryset(self, queryset: Any, request: Any, view: Any = None) -> Any:
        """The page's keys first, then those rows (as the UI lists do): a deep offset walks an index,
        not whole joined rows."""
        keys = super().paginate_queryset(queryset.values_list("pk", flat=True), request, view)
        found = queryset.order_by().in_bulk(keys)
        return [found[k] for k in keys if k in found]


class CleanSerializer(serializers.ModelSerializer):
    """Runs the model's own validation (clean, unique checks) before saving, and writes a row with a
    plan made once per serializer: DRF's generic field walk (per field and row: source lookup,
    callable check, isinstance chain) was most of an API list's time, a proxy having 49 fields."""

    def _plan(self) -> list[tuple[str, str, Any]]:
        """(output name, attribute, field or None for a raw foreign key) per readable field; "" as the
        attribute: the field reads itself (relations, properties, anything not a plain column)."""
        plan = self.__dict__.get("_row_plan")
        if plan is None:
            columns = {f.name: f for f in self.Meta.model._meta.concrete_fields}
            plan = []
            for f in self._readable_fields:
                column = columns.get(f.source) if len(f.source_attrs) == 1 else None
                if column is not None and column.is_relation and isinstance(f, serializers.PrimaryKeyRelatedField) \
                        and f.pk_field is None:
                    plan.append((f.field_name, column.attname, None))  # the key itself, as DRF writes it
                elif column is not None and not column.is_relation and not isinstance(f, serializers.RelatedField):
                    plan.append((f.field_name, column.attname, f))
                else:
                    plan.append((f.field_name, "", f))
            self.__dict__["_row_plan"] = plan
        return plan

    def to_representation(self, instance: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, attr, f in self._plan():
            if not attr:  # DRF's own path, for what is not a plain column
                try:
                    value = f.get_attribute(instance)
                except SkipField:
                    continue
                none = value.pk is None if isinstance(value, PKOnlyObject) else value is None
                out[name] = None if none else f.to_representation(value)
                continue
            value = getattr(instance, attr)
            out[name] = value if value is None or f is None else f.to_representation(value)
        return out

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


def _needs(ser: serializers.Serializer, perm: str, what: str) -> None:
    if not may(ser.context["request"], perm):
        raise PermissionDenied(f"{what} needs the permission {perm} (admins)")


def _changed(ser: serializers.Serializer, attrs: dict[str, Any], fields: tuple[str, ...]) -> list[str]:
    """The fields of `attrs` that set something new (on a create: anything not empty)."""
    old = ser.instance
    return [f for f in fields if f in attrs and (attrs[f] != getattr(old, f) if old is not None else attrs[f])]


class ProxySerializer(CleanSerializer):
    key_pem = serializers.CharField(write_only=True, required=False, trim_whitespace=False,
                                    help_text="the certificate's private key (PEM); write-only, stored encrypted")

    class Meta:
        model = m.Proxy
        exclude = PROXY_SECRET
        read_only_fields = (*m.Proxy.AGENT_FIELDS[1:], "api_key_prefix")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "key_pem" in attrs or _changed(self, attrs, ("certificate_pem",)):
            _needs(self, "proxies.change_proxy_keys", "Setting the certificate or its key")
        return super().validate(attrs)  # key_pem is the model's property: set, checked and saved like a field


class DnsRecordSerializer(CleanSerializer):
    credentials = serializers.CharField(
        write_only=True, required=False, help_text="RFC 2136: the TSIG secret (base64); Cloudflare: an API token. "
                                                   "Write-only, stored encrypted")

    class Meta:
        model = m.DnsRecord
        exclude = ("credentials_enc",)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        creds = attrs.get("credentials")
        # who sets where the record is updated decides where the stored credentials are sent
        if creds is not None or self.instance is None or _changed(self, attrs, m.DnsRecord.ACCOUNT_FIELDS):
            _needs(self, "proxies.change_dns_account", "A new DNS record, its credentials or its DNS account")
        if self.instance is None and not creds:
            raise serializers.ValidationError({"credentials": "Required."})
        provider = attrs.get("provider", getattr(self.instance, "provider", "rfc2136"))
        if creds and provider == "rfc2136":
            try:
                base64.b64decode(creds, validate=True)
            except ValueError:
                raise serializers.ValidationError({"credentials": "A TSIG secret is base64."}) from None
        return super().validate(attrs)  # credentials is the model's (encrypting) property


class RoleField(serializers.ChoiceField):
    def get_attribute(self, instance: Any) -> str:
        return role_of(instance)


class UserSerializer(serializers.ModelSerializer):
    role = RoleField(choices=[(r, r) for r in ROLES], required=False, help_text="viewer, operator or admin")
    password = serializers.CharField(write_only=True, required=False, trim_whitespace=False,
                                     style={"input_type": "password"}, help_text="write-only; required on create")

    class Meta:
        model = get_user_model()
        fields = ["id", "username", "email", "is_active", "role", "password", "last_login", "date_joined"]
        read_only_fields = ["last_login", "date_joined"]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        user, me = self.instance, self.context["request"].user
        if user is None and not attrs.get("password"):
            raise serializers.ValidationError({"password": "Required for a new user."})
        if user is None and not attrs.get("role"):
            raise serializers.ValidationError({"role": "Required for a new user."})
        if attrs.get("password"):
            try:
                password_validation.validate_password(attrs["password"], user)
            except DjangoValidationError as exc:
                raise serializers.ValidationError({"password": exc.messages}) from None
        if user is not None and user.pk == me.pk and (
                attrs.get("role", role_of(user)) != role_of(user) or attrs.get("is_active") is False):
            raise serializers.ValidationError({"role": "You cannot change your own role or deactivate yourself; "
                                                       "another admin can."})
        return attrs

    def save(self, **kwargs: Any) -> Any:
        role = self.validated_data.pop("role", None)
        password = self.validated_data.pop("password", None)
        user = super().save(**kwargs)
        if password:
            user.set_password(password)
            user.save(update_fields=["password"])
        if role:
            assign(user, role)
        return user


class ApiTokenSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username", read_only=True)
    days = serializers.IntegerField(write_only=True, required=False, min_value=1, max_value=3650,
                                    help_text="valid for this many days; empty: until revoked")

    class Meta:
        model = m.ApiToken
        fields = ["id", "name", "role", "prefix", "user", "created", "expires", "last_used", "days"]
        read_only_fields = ["expires"]

    def validate_role(self, role: str) -> str:
        request = self.context["request"]
        ceiling = role_of(request.user)
        token = getattr(request, "auth", None)
        if hasattr(token, "allows") and at_most(token.role, ceiling):
            ceiling = token.role  # a token makes tokens no stronger than itself
        if not at_most(role, ceiling):
            raise serializers.ValidationError(f"At most your own role ({ceiling or 'none'}).")
        return role

    def create(self, data: dict[str, Any]) -> m.ApiToken:
        days = data.pop("days", None)
        token = m.ApiToken(user=self.context["request"].user, **data)
        if days:
            token.expires = timezone.now() + timedelta(days=days)
        token.plaintext = token.mint()  # type: ignore[attr-defined]
        token.save()
        return token

    def to_representation(self, obj: m.ApiToken) -> dict[str, Any]:
        out = super().to_representation(obj)
        if getattr(obj, "plaintext", None):
            out["key"] = obj.plaintext  # the answer to the create only
        return out


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    key = serializers.CharField(read_only=True, help_text="the token itself: in this answer, and never again")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "key"]


SPECS: list[tuple[str, type, type, tuple[str, ...], tuple[str, ...]]] = [
    # (URL name, model, serializer, filter fields, search fields)
    ("proxies", m.Proxy, ProxySerializer, ("name", "fqdn", "enabled", "sip_mode", "web_mode"), ("name", "fqdn")),
    ("instances", m.Instance, _serializer(m.Instance), ("name", "sip_transport"), ("name", "web", "sip_host")),
    ("applications", m.Application, _serializer(m.Application), ("proxy", "name", "port"), ("name", "upstream")),
    ("devices", m.Device, _serializer(m.Device), ("instance", "mac"), ("mac", "label")),
    ("registrations", m.Registration, _serializer(m.Registration, ("token_hash",),
                                                  ("expires", "used", "used_from")), ("proxy",), ()),
    ("backups", m.Backup, _serializer(m.Backup, ("data",), ("size",)), ("proxy",), ()),
    ("dns-records", m.DnsRecord, DnsRecordSerializer, ("proxy", "provider"), ("name", "zone")),
    ("users", get_user_model(), UserSerializer, ("username", "is_active"), ("username", "email")),
    ("tokens", m.ApiToken, ApiTokenSerializer, ("role",), ("name", "prefix")),
]
# fields a list may be ordered by, where not every field (a hash is no order anyone needs)
ORDERING = {get_user_model(): ["username", "last_login"], m.ApiToken: ["name", "created", "last_used", "expires"]}


@functools.cache
def _writes(serializer: type) -> frozenset[str]:
    """The names of a serializer's fields (building them per request cost a millisecond a list)."""
    return frozenset(serializer().fields)


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
        ordering_fields = ORDERING.get(model, "__all__")

        def get_queryset(self) -> Any:
            qs = super().get_queryset()
            m2m = [f.name for f in model._meta.many_to_many if f.name in _writes(serializer)]
            if m2m or model is get_user_model():
                # a related object is written as its key: fetching whole proxies for it cost most of a list
                qs = qs.prefetch_related(*(Prefetch(f, queryset=model._meta.get_field(f).related_model
                                                    ._default_manager.only("pk")) for f in m2m),
                                         *(["groups"] if model is get_user_model() else []))
            if model is m.ApiToken:  # one's own tokens; an admin's view: everyone's
                qs = qs.select_related("user")
                if not may(self.request, "proxies.manage_apitoken"):
                    qs = qs.filter(user=self.request.user)
            return qs

        def perform_create(self, ser: Any) -> None:
            with acting_as(self.request.user):
                ser.save()

        def perform_update(self, ser: Any) -> None:
            with acting_as(self.request.user):
                ser.save()

        def perform_destroy(self, obj: Any) -> None:
            if obj == self.request.user:
                raise PermissionDenied("You cannot delete your own account; another admin can.")
            with acting_as(self.request.user):
                obj.delete()

    ViewSet.__name__ = ViewSet.__qualname__ = f"{model.__name__}ViewSet"
    if model is m.Registration:  # a registration URL's token is shown once, by the UI: not made here
        ViewSet.http_method_names = ["get", "head", "delete", "options"]
    if model is m.Backup:  # a backup is made by the proxy (POST /api/v1/proxies/<id>/backups/)
        ViewSet.http_method_names = ["get", "head", "delete", "options"]
    if model is m.ApiToken:  # made and revoked; a token never changes
        class TokenViewSet(ViewSet):
            def create(self, request: Any, *args: Any, **kwargs: Any) -> Any:
                return shown_once(super().create(request, *args, **kwargs))  # the answer holds the token

        ViewSet = TokenViewSet
        ViewSet.__name__ = ViewSet.__qualname__ = "ApiTokenViewSet"
        ViewSet.http_method_names = ["get", "post", "head", "delete", "options"]
        ViewSet = extend_schema_view(create=extend_schema(responses={201: ApiTokenCreatedSerializer}))(ViewSet)
    return ViewSet


VIEWSETS = {name: _viewset(name, model, ser, ff, search) for name, model, ser, ff, search in SPECS}


def urls() -> list[Any]:
    from rest_framework.routers import SimpleRouter

    router = SimpleRouter(use_regex_path=False)
    for name, viewset in VIEWSETS.items():
        router.register(name, viewset, basename=f"api-{name}")
    return router.urls
