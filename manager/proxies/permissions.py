"""Every view of the manager names what it needs, and a view that names nothing is refused.

- UI views: `@requires("proxies.view_proxy")`, or one permission per method:
  `@requires(GET="proxies.view_device", POST="proxies.add_device")`. Anonymous users go to the
  login page; a user without the permission gets 403, and the refusal is logged.
- DRF views: `@permission_classes([Requires(GET=..., POST=...)])`: 401 without credentials, 403
  without the permission (with an API token: the permission of the user *and* of the token's role);
  `[AgentKey]` for the proxy API; DRF's default (`Nobody`) refuses all.
- Views that do not use a user's permissions say so and why: `@declares(AGENT_KEY)` (the proxy
  API, authenticated by the proxy's key or registration token inside the view) or
  `@declares(PUBLIC)` (login, logout, the API schema).

`RequireDeclaredPermission` (a middleware) refuses any view without such a declaration, so a view
added without thinking about who may use it is closed, not open. The Django admin is exempt: it
checks model permissions itself, and `admin.py` lets only admins in.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Callable
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, HttpResponseNotAllowed, JsonResponse
from django.utils.deprecation import MiddlewareMixin
from rest_framework.permissions import BasePermission

log = logging.getLogger("manager.access")

AGENT_KEY = "agent key"  # the proxy-facing API: the proxy's own key (or one-time registration token)
PUBLIC = "public"


def _needed(table: dict[str, str], default: str | None, method: str | None) -> str | None:
    method = (method or "GET").upper()
    return table.get("GET" if method == "HEAD" else method, default)


def _refused(request: Any, needed: str) -> None:
    log.warning("refused %s %s to user %s: needs permission %s", request.method, request.get_full_path(),
                request.user.get_username(), needed)


def requires(perm: str | None = None, **by_method: str) -> Callable[[Callable[..., HttpResponse]],
                                                                     Callable[..., HttpResponse]]:
    """A UI view needs `perm` (for every method) or the permission given for the request's method;
    a method named in neither is answered 405."""
    table = {m.upper(): p for m, p in by_method.items()}

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            needed = _needed(table, perm, request.method)
            if needed is None:
                return HttpResponseNotAllowed(list(table))
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not request.user.has_perm(needed):
                _refused(request, needed)
                raise PermissionDenied(f"Your role does not allow this (it needs the permission {needed}).")
            return view(request, *args, **kwargs)

        wrapper.required_permission = perm or dict(table)  # type: ignore[attr-defined]
        return wrapper

    return decorate


def Requires(perm: str | None = None, **by_method: str) -> type[BasePermission]:  # noqa: N802 - a class factory
    """A DRF permission class: the user (session or HTTP Basic) must have the method's permission."""
    table = {m.upper(): p for m, p in by_method.items()}

    class _Requires(BasePermission):
        required_permission = perm or dict(table)

        def has_permission(self, request: Any, view: Any) -> bool:
            needed = _needed(table, perm, request.method)
            if needed is None:
                return True  # a method the view does not offer: DRF answers 405
            if not (request.user and request.user.is_authenticated):
                return False  # DRF answers 401
            if not request.user.has_perm(needed):
                _refused(request, needed)
                return False
            token = getattr(request, "auth", None)
            if hasattr(token, "allows") and not token.allows(needed):  # an ApiToken narrower than its user
                log.warning("refused %s %s to token %s… of user %s (role %s): needs permission %s", request.method,
                            request.get_full_path(), token.prefix, request.user.get_username(), token.role, needed)
                return False
            return True

    return _Requires


def may(request: Any, perm: str) -> bool:
    """What `Requires` checks, for a permission a view needs beyond its method's (a DRF request)."""
    token = getattr(request, "auth", None)
    return bool(request.user and request.user.has_perm(perm)) and (not hasattr(token, "allows") or token.allows(perm))


class AgentKey(BasePermission):
    """DRF views of the proxy-facing API: DRF lets the request in, the view checks the proxy's key
    (or registration token) itself."""

    required_permission = AGENT_KEY

    def has_permission(self, request: Any, view: Any) -> bool:
        return True


class Nobody(BasePermission):
    """DRF's default: an API view that names no permission class is closed."""

    def has_permission(self, request: Any, view: Any) -> bool:
        log.error("refused %s %s: the API view declares no permission", request.method, request.get_full_path())
        return False


def declares(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a view that does not check a user's permissions, saying why (AGENT_KEY or PUBLIC)."""
    if what not in (AGENT_KEY, PUBLIC):
        raise ValueError(what)

    def mark(view: Callable[..., Any]) -> Callable[..., Any]:
        view.required_permission = what  # type: ignore[attr-defined]
        return view

    return mark


def declared(view: Callable[..., Any]) -> Any:
    """What a resolved view function says it needs (None: it says nothing)."""
    found = getattr(view, "required_permission", None)
    if found is not None:
        return found
    cls = getattr(view, "cls", None) or getattr(view, "view_class", None)  # DRF / Django class-based views
    for p in getattr(cls, "permission_classes", ()):
        if getattr(p, "required_permission", None) is not None:
            return p.required_permission
    return getattr(cls, "required_permission", None)


class RequireDeclaredPermission(MiddlewareMixin):
    """Refuse (403, logged) a view that declares no permission; the admin site checks its own.
    (MiddlewareMixin: sync and async, so the async long-poll view keeps running without a thread.)"""

    def process_view(self, request: HttpRequest, view: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        match = request.resolver_match
        if match is not None and "admin" in match.namespaces:
            return None
        needed = declared(view)
        if needed is None:
            log.error("refused %s %s: the view %s declares no permission", request.method, request.path,
                      getattr(view, "__qualname__", view))
            return HttpResponseForbidden("This page declares no permission and is closed.")
        if needed == AGENT_KEY and not key_transport_ok(request.is_secure(), request.META.get("REMOTE_ADDR")):
            log.warning("refused %s %s from %s: agent keys and registration tokens only over TLS",
                        request.method, request.path, request.META.get("REMOTE_ADDR"))
            return JsonResponse({"detail": "the proxy API is served only over https (or on loopback)"}, status=403)
        return None


def key_transport_ok(secure: bool, peer: str | None) -> bool:
    """Agent keys and registration tokens travel only over TLS, or where no network can see them:
    between processes on one host (`request.is_secure()` honours SECURE_PROXY_SSL_HEADER)."""
    if secure:
        return True
    try:
        return peer is not None and ipaddress.ip_address(peer.removeprefix("::ffff:")).is_loopback
    except ValueError:
        return False
