"""The manager's roles: Django groups whose permissions are defined here, kept in sync at every migrate.

- viewer: sees proxies, instances, applications, devices, DNS records and status; no secrets (no
  keys, provisioning URLs, registration URLs, backups, DNS credentials).
- operator: a viewer who also changes configuration: proxies, instances, applications, devices,
  DNS records (name and zone), and who sees the devices' provisioning URLs to hand them to phones.
  Not: certificate keys, the provisioning key, registrations, backups, users, the DNS account
  (provider, server, key, API URL, credentials: who changes them decides where the secret is sent).
- every role: its own API tokens (make, see, revoke), each scoped to a role no higher than its own.
- admin: every permission, and the Django admin; sees and revokes every user's tokens. Superusers
  are admins whatever their groups.

The groups are rewritten from these lists after every `migrate` (and by `pforte-manager
pforte_roles`), so a permission added to the code reaches the roles without a hand-made change.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("manager.access")

VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
ROLES = (VIEWER, OPERATOR, ADMIN)

_VIEWER = {f"view_{m}" for m in ("proxy", "instance", "application", "device", "heartbeat", "registration",
                                 "dnsrecord", "objectchange")} | {"view_apitoken", "add_apitoken", "delete_apitoken"}
_OPERATOR = _VIEWER | {f"{verb}_{m}" for verb in ("add", "change", "delete")
                       for m in ("proxy", "instance", "application", "device", "dnsrecord")} | {
    "view_provisioning_url"}
PERMISSIONS: dict[str, set[str]] = {VIEWER: _VIEWER, OPERATOR: _OPERATOR}  # codenames of app `proxies`


def sync_groups(**_: Any) -> None:
    """Create the three groups and set their permissions exactly (post_migrate receiver)."""
    from django.contrib.auth.models import Group, Permission

    for role in ROLES:
        group, _created = Group.objects.get_or_create(name=role)
        if role == ADMIN:
            perms = Permission.objects.all()
        else:
            perms = Permission.objects.filter(content_type__app_label="proxies", codename__in=PERMISSIONS[role])
            missing = PERMISSIONS[role] - set(perms.values_list("codename", flat=True))
            if missing:
                raise RuntimeError(f"role {role}: no such permissions {sorted(missing)}")
        group.permissions.set(perms)


def assign(user: Any, role: str) -> None:
    """Make `user` a member of exactly one role; admins are staff (the Django admin needs it)."""
    from django.contrib.auth.models import Group

    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    user.groups.set([Group.objects.get(name=role)])
    user.is_staff = role == ADMIN or user.is_superuser
    user.save(update_fields=["is_staff"])
    log.info("user %s now has role %s", user.get_username(), role)


def is_admin(user: Any) -> bool:
    return bool(user.is_active and (user.is_superuser or user.groups.filter(name=ADMIN).exists()))


ROLE_HELP = ("viewer: sees proxies, instances and status, no secrets; operator: changes configuration; "
             "admin: also keys, registrations, backups, DNS accounts and users")


def at_most(role: str, ceiling: str) -> bool:
    """Whether `role` is no higher than `ceiling` ("" = no role: nothing is)."""
    return ceiling in ROLES and role in ROLES and ROLES.index(role) <= ROLES.index(ceiling)


def role_of(user: Any) -> str:
    if user.is_superuser:
        return ADMIN
    names = {g.name for g in user.groups.all()}  # from a list's prefetch_related("groups") when there is one
    return next((r for r in reversed(ROLES) if r in names), "")
