"""DNS-01 for the proxy's ACME renewer: the agent asks, the manager sets the TXT record.

The proxy's DNS account (its dynamic-DNS record: RFC 2136 + TSIG, or Cloudflare) has its
credentials here, encrypted at rest; the certificate key stays on the proxy. So proxyd asks,
authenticated by its agent key, to add or remove `_acme-challenge.<name>` TXT `<value>` for a
name of its own certificate, and the manager does it through that account. Nothing else can be
written this way: only that label, only names of the proxy's ACME certificate, only values of the
DNS-01 form (43 base64url characters, RFC 8555 section 8.4).
"""

from __future__ import annotations

import logging

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.decorators import api_view, permission_classes
from rest_framework.request import Request
from rest_framework.response import Response

from manager.dyndns.providers import DdnsError
from manager.dyndns.updater import provider_for
from manager.proxies.api import authenticate
from manager.proxies.compiler import lines
from manager.proxies.models import DnsRecord
from manager.proxies.permissions import AgentKey

log = logging.getLogger("manager.acme")

LABEL = "_acme-challenge"


class AcmeDnsIn(serializers.Serializer):
    name = serializers.CharField(max_length=253)
    value = serializers.RegexField(r"^[A-Za-z0-9_-]{43}$")
    present = serializers.BooleanField()


class AcmeDnsOut(serializers.Serializer):
    result = serializers.CharField(help_text="what the DNS provider answered")


class AcmeDnsRefused(serializers.Serializer):
    detail = serializers.CharField()


class AcmeDnsInvalid(serializers.Serializer):
    name = serializers.ListField(child=serializers.CharField(), required=False)
    value = serializers.ListField(child=serializers.CharField(), required=False)
    present = serializers.ListField(child=serializers.CharField(), required=False)


@extend_schema(request=AcmeDnsIn, responses={200: AcmeDnsOut, 400: AcmeDnsInvalid, 409: AcmeDnsRefused,
                                                502: AcmeDnsRefused})
@api_view(["POST"])
@permission_classes([AgentKey])
def acme_dns(request: Request) -> Response:
    """Add (present) or remove the DNS-01 TXT record of one name of this proxy's certificate."""
    proxy = authenticate(request._request)
    if proxy is None:
        return Response({"detail": "invalid or revoked API key"}, status=401)
    data = AcmeDnsIn(data=request.data)
    if not data.is_valid():
        return Response(data.errors, status=400)
    d = data.validated_data
    if proxy.tls_mode != "acme" or proxy.acme_challenge != "dns-01":
        return Response({"detail": "this proxy's certificate is not set to ACME with DNS-01"}, status=409)
    name = d["name"].lower().rstrip(".")
    if name not in {proxy.fqdn.lower(), *(n.lower() for n in lines(proxy.acme_names))}:
        return Response({"detail": f"{name} is not a name of this proxy's certificate"}, status=403)
    record = DnsRecord.objects.filter(proxy=proxy).first()
    if record is None:
        return Response({"detail": "this proxy has no DNS account (its DNS record) in the manager"}, status=409)
    try:
        result = provider_for(record).txt(f"{LABEL}.{name}", d["value"], d["present"])
    except DdnsError as exc:
        log.warning("event=acme_dns_failed proxy=%s name=%s error=%s", proxy.name, name, exc)
        return Response({"detail": str(exc)}, status=502)
    log.info("event=acme_dns proxy=%s name=%s present=%s", proxy.name, name, d["present"])
    return Response({"result": result})
