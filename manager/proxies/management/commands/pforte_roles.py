"""`pforte-manager pforte_roles`: sync the role groups (viewer, operator, admin) with the code, and
optionally give users a role: `pforte_roles --user alice --role operator`."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from manager.proxies import roles


class Command(BaseCommand):
    help = "create/update the viewer, operator and admin groups; give a user a role"

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--user", help="username to give the role to")
        parser.add_argument("--role", choices=roles.ROLES)

    def handle(self, *args, **opts):  # type: ignore[no-untyped-def]
        roles.sync_groups()
        if bool(opts["user"]) != bool(opts["role"]):
            raise CommandError("--user and --role go together")
        if opts["user"]:
            user = get_user_model().objects.filter(username=opts["user"]).first()
            if user is None:
                raise CommandError(f"no user {opts['user']!r}")
            roles.assign(user, opts["role"])
            self.stdout.write(f"{user.username}: {opts['role']}")
