"""Users' API tokens on the wire: `Authorization: Bearer pft_…` on the REST API (DRF views).

A token counts only over TLS or from loopback (the agents' keys follow the same rule), only while
its owner is active and it has not expired; anything else is a 401 naming the reason. The time it
was last used is written at most once a minute, so a busy script does not turn every read into a
write."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed

from manager.proxies.permissions import key_transport_ok

log = logging.getLogger("manager.access")
LAST_USED_EVERY = timedelta(seconds=60)
REALM = 'Bearer realm="pforte manager", Basic realm="pforte manager"'


class TokenAuthentication(BaseAuthentication):
    def authenticate(self, request: Any) -> tuple[Any, Any] | None:
        from manager.proxies.models import ApiToken

        scheme, _, value = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer":
            return None  # another scheme (Basic), or none: the next authenticator's turn
        value = value.strip()
        if not key_transport_ok(request.is_secure(), request.META.get("REMOTE_ADDR")):
            log.warning("refused an API token from %s over plain http", request.META.get("REMOTE_ADDR"))
            raise AuthenticationFailed("API tokens are accepted only over https (or on loopback)")
        token = ApiToken.objects.select_related("user").filter(key_hash=ApiToken.hash(value)).first() \
            if value.startswith(ApiToken.PREFIX) and len(value) < 100 else None
        if token is None:
            raise AuthenticationFailed("invalid or revoked API token")
        if token.expired:
            raise AuthenticationFailed(f"API token {token.prefix}… expired")
        if not token.user.is_active:
            raise AuthenticationFailed("the token's user is deactivated")
        now = timezone.now()
        if token.last_used is None or now - token.last_used >= LAST_USED_EVERY:
            ApiToken.objects.filter(pk=token.pk).update(last_used=now)  # no signal: not a change to log
            token.last_used = now
        return token.user, token

    def authenticate_header(self, request: Any) -> str:
        return REALM


class TokenScheme(OpenApiAuthenticationExtension):
    """The schema's security scheme for these tokens (drf-spectacular finds it by the class)."""

    target_class = TokenAuthentication
    name = "apiToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "pft_…",
                "description": "a user's API token, scoped to a role (UI: API tokens)"}
