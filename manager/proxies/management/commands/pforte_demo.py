"""`pforte-manager pforte_demo`: the demo setup of `make run` (idempotent).

Creates an admin user (new random password each run, printed), the demo instance, a demo proxy
on high ports and a fresh registration whose URL is printed as `REGISTRATION_URL=<url>`.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from manager.proxies import roles
from manager.proxies.models import Instance, Proxy, Registration


class Command(BaseCommand):
    help = "create the demo admin, instance, proxy and a registration URL"

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--manager-url", default=None, help="default: PFORTE_PUBLIC_URL")

    def handle(self, *args, **opts):  # type: ignore[no-untyped-def]
        user, _ = get_user_model().objects.get_or_create(username="admin", defaults={"is_staff": True,
                                                                                   "is_superuser": True})
        password = secrets.token_urlsafe(12)
        user.set_password(password)
        user.save()
        roles.assign(user, roles.ADMIN)
        Instance.objects.update_or_create(name="demo", defaults={
            "web": "http://127.0.0.1:18080", "provisioning": "http://127.0.0.1:18080/prov/{mac}",
            "sip_transport": "udp", "sip_host": "127.0.0.1", "sip_port": 15060, "sip_domains": "demo.localhost",
        })
        proxy = Proxy.objects.filter(name="demo").first()
        if proxy is None:
            proxy = Proxy(name="demo", fqdn="localhost", bind="127.0.0.1", web_port=8443, sip_mode="udp",
                          sip_udp_port=5070, media_mode="rtp", media_port_min=31000, media_port_max=31998,
                          provisioning_mode="http_and_https", provisioning_https_port=18884,
                          provisioning_http_port=18880, xmpp_port=15223, xmpp_direct_tls_port=15224,
                          redirect_url="https://www.example.com/")
            proxy.full_clean()
            proxy.save()
        _, token = Registration.create_for(proxy)
        self.stdout.write(f"ADMIN_USER=admin\nADMIN_PASSWORD={password}")
        base = (opts["manager_url"] or settings.PUBLIC_URL).rstrip("/")
        self.stdout.write(f"REGISTRATION_URL={base}/api/v1/register/#{token}")
