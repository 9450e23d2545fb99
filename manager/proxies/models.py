"""Proxies, instances, applications, registrations, config revisions and heartbeats.

Field names follow seed 003 ("Proxy Instanzen") and seed 000 ("Proxy Controller"). Cross-field
rules live in `clean()` so every form and API enforces them; the full config check is the
compiler's (`compiler.compile_config`), whose problems are mapped back onto fields.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import secrets
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from manager.proxies import choices
from manager.proxies.crypto import decrypt, encrypt, new_provisioning_key, split_secrets
from manager.proxies.roles import ROLES
from proxyd.config import Application as Application_
from proxyd.config import Instance as Instance_
from proxyd.config import (
    MediaService,
    Network,
    ProvisioningService,
    ProxyConfig,
    SipService,
    TlsConfig,
    WebService,
    XmppService,
)
from proxyd.config import default_of as D  # noqa: N812 - every default below is the config's own

PORT = [MinValueValidator(1), MaxValueValidator(65535)]
slug = RegexValidator(r"^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$", "lowercase letters, digits, '-' and '_'")
REGISTRATION_LIFETIME = timedelta(hours=24)
# a proxy whose agent went silent is Offline after 2.5 heartbeat intervals, and never later than 150 s
HEARTBEAT_GRACE_FACTOR, HEARTBEAT_GRACE_MAX = 2.5, 150.0


class Instance(models.Model):
    name = models.CharField(max_length=63, unique=True, validators=[slug])
    web = models.URLField("web backend", blank=True, help_text="e.g. http://10.0.0.5:8080")
    sip_transport = models.CharField(max_length=3, choices=choices.SIP_TRANSPORTS, default="udp")
    sip_host = models.CharField(max_length=253, blank=True)
    sip_port = models.PositiveIntegerField(default=D(SipService, "udp_port"), validators=PORT)
    sip_domains = models.TextField(blank=True, help_text="one per line")
    xmpp = models.CharField("XMPP backend", max_length=260, blank=True, help_text="host:port")
    xmpp_domains = models.TextField(blank=True, help_text="one per line")
    provisioning = models.CharField("provisioning URL template", max_length=500, blank=True,
                                    help_text="e.g. http://10.0.0.5:8080/prov/{mac}; the placeholder spells the "
                                              "MAC: {mac} 08c25a4f0321, {MAC} 08C25A4F0321, {mac:} 08:c2:..., "
                                              "{MAC-} 08-C2-...")
    proxies = models.ManyToManyField("Proxy", blank=True, related_name="only_instances",
                                     help_text="which proxies expose it; none selected = all")
    sip_tls_fingerprint = models.CharField(
        "PBX certificate SHA-256", max_length=95, blank=True,
        help_text="transport tls only: the fingerprint the PBX's certificate must have (hex, colons allowed); "
                  "empty: the connection is encrypted but the certificate is not checked")
    rtp_only = models.BooleanField(
        "PBX speaks plain RTP only", default=False,
        help_text="the PBX refuses SRTP offers (488): with VoIP media SRTP, phones' offers reach it as plain RTP "
                  "and the proxy bridges SRTP to RTP")
    sip_offers_tcp = models.BooleanField(
        "PBX also takes TCP", default=False,
        help_text="transport udp only: the PBX takes TCP on the same host and port too, and requests over 1,300 "
                  "bytes go to it over TCP (RFC 3261 §18.1.1)")
    media_sources = models.TextField(
        "media sources", blank=True,
        help_text="networks (CIDR, one per line) on the PBX's side whose media the proxy trusts like the PBX's "
                  "own address: media servers, phones registered at a proxy-only PBX directly")
    web_prefix_mode = models.CharField(
        "web prefix", max_length=14, choices=choices.WEB_PREFIX_MODES, default=D(Instance_, "web_prefix_mode"),
        help_text="rewrite: the proxy strips /<name> and maps the backend's redirects and cookie paths back under "
                  "it; forward_prefix: the backend gets X-Forwarded-Prefix and writes its own URLs")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from proxyd.config import normalize_sha256_fingerprint
        from proxyd.provisioning_template import problem as template_problem

        if self.provisioning and (why := template_problem(self.provisioning)):
            raise ValidationError({"provisioning": why[0].upper() + why[1:] + "."})
        from manager.proxies.compiler import lines  # the values exactly as they are compiled

        for line in lines(self.media_sources):
            try:
                ipaddress.ip_network(line, strict=False)
            except ValueError:
                why = f"{line!r} is not a network (CIDR such as 10.0.0.0/24)."
                raise ValidationError({"media_sources": why}) from None
        if self.sip_tls_fingerprint:
            norm = normalize_sha256_fingerprint(self.sip_tls_fingerprint)
            if norm is None:
                raise ValidationError({"sip_tls_fingerprint": "A SHA-256 fingerprint: 64 hex digits, colons allowed."})
            if self.sip_transport != "tls":
                raise ValidationError({"sip_tls_fingerprint": "Only for SIP transport tls."})
            self.sip_tls_fingerprint = norm
        if self.sip_offers_tcp and self.sip_transport != "udp":
            raise ValidationError({"sip_offers_tcp": "Only for SIP transport udp."})


class Proxy(models.Model):
    name = models.CharField(max_length=100, unique=True)
    fqdn = models.CharField("Proxy DNS Name (FQDN)", max_length=253)
    aliases = models.TextField(
        "Further names", blank=True,
        help_text="other DNS names or IP addresses clients use for the web router (one per line); any other "
                  "name gets 421 Misdirected Request")
    enabled = models.BooleanField("on", default=True)
    bind = models.GenericIPAddressField(default=D(ProxyConfig, "bind"))
    # services (seed 003)
    sip_mode = models.CharField("VoIP SIP", max_length=3, choices=choices.SIP_MODES, default=D(SipService, "mode"))
    sip_udp_port = models.PositiveIntegerField(default=D(SipService, "udp_port"), validators=PORT)
    sip_tls_port = models.PositiveIntegerField(default=D(SipService, "tls_port"), validators=PORT)
    sip_rate_limit = models.PositiveIntegerField(
        "SIP requests per second per source", default=D(SipService, "rate_limit"),
        validators=[MaxValueValidator(1_000_000)],
        help_text="above this a source is blocked for a while (pike-like); 0 switches the limit off")
    media_mode = models.CharField("VoIP media", max_length=4, choices=choices.MEDIA_MODES,
                                  default=D(MediaService, "mode"))
    media_port_min = models.PositiveIntegerField(default=D(MediaService, "port_min"), validators=PORT)
    media_port_max = models.PositiveIntegerField(default=D(MediaService, "port_max"), validators=PORT)
    # the media limits (docs/security.md "Media relay: limits"); bounds as proxyd's parser checks them
    media_idle_timeout = models.PositiveIntegerField(
        "Media idle timeout (s)", default=int(D(MediaService, "idle_timeout")),
        validators=[MinValueValidator(1), MaxValueValidator(86400)],
        help_text="a call whose streams carry no proven packet for this long is released")
    media_setup_timeout = models.PositiveIntegerField(
        "Media set-up timeout (s)", default=int(D(MediaService, "setup_timeout")),
        validators=[MinValueValidator(1), MaxValueValidator(3600)],
        help_text="an answered call whose phone sent no proven packet by then is released")
    media_max_streams = models.PositiveIntegerField(
        "Media streams per SDP", default=D(MediaService, "max_streams"),
        validators=[MinValueValidator(1), MaxValueValidator(64)],
        help_text="m= lines one SDP may have; more: 488 before any port is taken")
    media_max_streams_per_source = models.PositiveIntegerField(
        "Media streams per phone address", default=D(MediaService, "max_streams_per_source"),
        validators=[MinValueValidator(1), MaxValueValidator(100_000)],
        help_text="streams held at once by calls offered from one IP address; more: 503 with Retry-After")
    media_max_streams_per_instance = models.PositiveIntegerField(
        "Media streams per instance", default=D(MediaService, "max_streams_per_instance"),
        validators=[MinValueValidator(1), MaxValueValidator(100_000)],
        help_text="streams held at once by calls to or from one instance's PBX; more: 503 with Retry-After")
    web_upstream_timeout = models.PositiveIntegerField(
        "Backend answer timeout (s)", default=int(D(WebService, "upstream_timeout")),
        validators=[MinValueValidator(1), MaxValueValidator(3600)],
        help_text="a backend (instance, application, provisioning) that has not begun its answer by then: 504")
    provisioning_mode = models.CharField("Phone Provisioning", max_length=14, choices=choices.PROVISIONING_MODES,
                                         default=D(ProvisioningService, "mode"))
    provisioning_https_port = models.PositiveIntegerField(default=D(ProvisioningService, "https_port"), validators=PORT)
    provisioning_http_port = models.PositiveIntegerField(default=D(ProvisioningService, "http_port"), validators=PORT)
    provisioning_key_enc = models.TextField(editable=False, default="")
    xmpp_enabled = models.BooleanField("Allow Client (XMPP) Connections", default=True)
    xmpp_port = models.PositiveIntegerField(default=D(XmppService, "port"), validators=PORT)
    xmpp_direct_tls_port = models.PositiveIntegerField(default=D(XmppService, "direct_tls_port"), validators=PORT)
    web_mode = models.CharField("Manage Instances", max_length=12, choices=choices.WEB_MODES,
                                default=D(WebService, "mode"))
    web_port = models.PositiveIntegerField(default=D(WebService, "port"), validators=PORT)
    redirect_url = models.URLField("Redirection URL", blank=True)
    tls_mode = models.CharField("Certificate mode", max_length=11, choices=choices.TLS_MODES,
                                default=D(TlsConfig, "mode"))
    certificate_pem = models.TextField("Certificate PEM", blank=True, help_text="mode uploaded only")
    tls_key_type = models.CharField(
        "Key type", max_length=10, choices=choices.TLS_KEY_TYPES, default=D(TlsConfig, "key_type"),
        help_text="of the self-signed or ACME certificate's key; many phone firmwares provision over RSA only. "
                  "A change makes a new certificate")
    acme_directory = models.URLField(
        "ACME directory URL", blank=True, help_text="mode ACME: e.g. https://acme-v02.api.letsencrypt.org/directory")
    acme_email = models.EmailField("ACME contact e-mail", blank=True,
                                   help_text="the CA writes to it before a certificate expires")
    acme_names = models.TextField("Further certificate names", blank=True,
                                  help_text="mode ACME: DNS names besides the FQDN, one per line")
    acme_challenge = models.CharField("ACME challenge", max_length=11, choices=choices.ACME_CHALLENGES,
                                      default=D(TlsConfig, "acme_challenge"))
    acme_http_port = models.PositiveIntegerField(
        "HTTP-01 port", default=D(TlsConfig, "acme_http_port"), validators=PORT,
        help_text="CAs validate on 80; the proxy listens there only while an order is in flight")
    key_pem_enc = models.TextField(editable=False, default="")
    allow_sources = models.TextField(blank=True, help_text="CIDRs or DNS names, one per line; empty = everyone")
    # network (seed 003 "Netzwerk Einstellungen")
    network_mode = models.CharField(max_length=6, choices=choices.NETWORK_MODES, default=D(Network, "mode"))
    network_interface = models.CharField(max_length=15, blank=True)
    network_address = models.CharField("IP address (CIDR)", max_length=43, blank=True)
    network_gateway = models.GenericIPAddressField(blank=True, null=True)
    network_table = models.PositiveIntegerField(blank=True, null=True)
    # controller link: the one agent holding the API key, and whether an admin lets another replace it
    api_key_hash = models.CharField(max_length=64, blank=True, editable=False)
    api_key_prefix = models.CharField(max_length=20, blank=True, editable=False)
    api_key_issued = models.DateTimeField(null=True, blank=True, editable=False)
    api_key_from = models.GenericIPAddressField(null=True, blank=True, editable=False)
    api_key_hostname = models.CharField(max_length=255, blank=True, editable=False)
    reregistration_allowed = models.BooleanField(default=False, editable=False)
    # when the agent last said it is stopping (a clean proxyd shutdown); a later heartbeat outweighs it
    agent_stopped = models.DateTimeField(null=True, blank=True, editable=False)
    created = models.DateTimeField(auto_now_add=True)

    # written only by registration and the admin's re-registration action, never by a settings save
    AGENT_FIELDS = ("api_key_hash", "api_key_prefix", "api_key_issued", "api_key_from", "api_key_hostname",
                    "reregistration_allowed", "agent_stopped")

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "proxies"
        permissions = [
            ("change_proxy_keys", "Can set a proxy's certificate key and regenerate its provisioning key"),
            ("allow_reregistration", "Can let a new agent replace the one registered for a proxy"),
        ]

    def __str__(self) -> str:
        return self.name

    # secrets at rest --------------------------------------------------------------------
    @property
    def provisioning_key(self) -> str:
        return decrypt(self.provisioning_key_enc) if self.provisioning_key_enc else ""

    @provisioning_key.setter
    def provisioning_key(self, value: str) -> None:
        self.provisioning_key_enc = encrypt(value)

    @property
    def key_pem(self) -> str:
        return decrypt(self.key_pem_enc) if self.key_pem_enc else ""

    @key_pem.setter
    def key_pem(self, value: str) -> None:
        self.key_pem_enc = encrypt(value) if value else ""

    def save(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        if not self.provisioning_key_enc:
            self.provisioning_key = new_provisioning_key()
        if self.pk and not self._state.adding and kwargs.get("update_fields") is None:
            # the API key is minted by the registration endpoint only: a settings save made from
            # an object loaded earlier must never overwrite (or revoke) it
            kwargs["update_fields"] = [f.name for f in self._meta.concrete_fields
                                       if not f.primary_key and f.name not in self.AGENT_FIELDS]
        super().save(*args, **kwargs)

    # rules ------------------------------------------------------------------------------
    def clean(self) -> None:
        errors: dict[str, str] = {}
        others = Proxy.objects.exclude(pk=self.pk)
        if self.pk:
            old = Proxy.objects.filter(pk=self.pk).values_list("network_mode", flat=True).first()
            if old and old != self.network_mode:
                errors["network_mode"] = "The network mode cannot change after creation; create a new proxy instead."
        if self.network_mode == "auto" and others.filter(network_mode="auto").exists():
            errors["network_mode"] = "Only one proxy may use network mode auto."
        if self.network_mode == "manual":
            for f in ("network_interface", "network_address", "network_gateway", "network_table"):
                if not getattr(self, f):
                    errors[f] = "Required in network mode manual."
            if self.network_interface and others.filter(network_interface=self.network_interface).exists():
                errors["network_interface"] = f"{self.network_interface} already belongs to another proxy."
        if self.tls_mode == "acme" and self.acme_challenge == "dns-01" and (
                self.pk is None or not DnsRecord.objects.filter(proxy_id=self.pk).exists()):
            errors["acme_challenge"] = ("DNS-01 sets its TXT record through this proxy's DNS record account: "
                                        "add the DNS record first.")
        if errors:
            raise ValidationError(errors)
        from manager.proxies.compiler import field_errors  # the full config check, mapped to fields

        problems = field_errors(self)
        if problems:
            raise ValidationError(problems)

    # controller link ---------------------------------------------------------------------
    def mint_api_key(self, source: str | None = None, hostname: str = "") -> str:
        """A new API key for the agent registering now (returned once); the previous key stops working."""
        secret = secrets.token_urlsafe(32)
        self.api_key_hash = hashlib.sha256(secret.encode()).hexdigest()
        # enough of the key to tell which agent holds it (6 of 43 characters: the rest stays secret)
        self.api_key_prefix = f"{self.pk}.{secret[:6]}"
        self.api_key_issued, self.api_key_from, self.api_key_hostname = timezone.now(), source, hostname[:255]
        self.reregistration_allowed = False
        self.save(update_fields=list(self.AGENT_FIELDS))
        return f"{self.pk}.{secret}"

    @property
    def active_revision(self) -> ConfigRevision | None:
        if "_active_revision" in self.__dict__:  # attach_status filled it for a list
            return self.__dict__["_active_revision"]
        return self.revisions.order_by("-number").first()

    @property
    def last_heartbeat(self) -> Heartbeat | None:
        if "_last_heartbeat" in self.__dict__:
            return self.__dict__["_last_heartbeat"]
        return self.heartbeats.order_by("-received").first()

    @staticmethod
    def attach_status(proxies: Any) -> None:
        """Give a page of proxies their last heartbeat and active revision in three queries, whatever
        the number of rows (`status()` and the list's columns then ask the database nothing)."""
        proxies = list(proxies)
        if not proxies:
            return
        latest = Proxy.objects.filter(pk__in=[p.pk for p in proxies]).annotate(
            hb=models.Subquery(Heartbeat.objects.filter(proxy=models.OuterRef("pk")).order_by("-received")
                               .values("pk")[:1]),
            rev=models.Subquery(ConfigRevision.objects.filter(proxy=models.OuterRef("pk")).order_by("-number")
                                .values("pk")[:1])).values_list("pk", "hb", "rev")
        ids = {pk: (hb, rev) for pk, hb, rev in latest}
        hbs = Heartbeat.objects.in_bulk([hb for hb, _ in ids.values() if hb])
        revs = ConfigRevision.objects.defer("config_json", "secrets_enc").in_bulk(
            [rev for _, rev in ids.values() if rev])
        for p in proxies:
            hb, rev = ids.get(p.pk, (None, None))
            p.__dict__["_last_heartbeat"], p.__dict__["_active_revision"] = hbs.get(hb), revs.get(rev)

    def exposure_failures(self) -> list[tuple[str, str]]:
        """(service, reason) for each service whose `proxyd exposure` self-test failed, per the last heartbeat."""
        hb = self.last_heartbeat
        services = hb.services if hb is not None and isinstance(hb.services, dict) else {}
        return [(str(name), str(svc.get("degraded"))) for name, svc in services.items()
                if isinstance(svc, dict) and svc.get("state") == "degraded"]

    def certificate_status(self) -> dict[str, Any]:
        """What the last heartbeat said about the certificate: `acme` (names, issuer, not_after,
        last_attempt, last_error), `certificates` and `degraded` (a list of reasons), or {}."""
        hb = self.last_heartbeat
        services = hb.services if hb is not None and isinstance(hb.services, dict) else {}
        cert = services.get("certificate")
        return cert if isinstance(cert, dict) else {}

    def status(self) -> tuple[str, str]:
        """(Online | Degraded | Offline | Disabled | Never connected, reason)."""
        if not self.enabled:
            return "Disabled", "switched off in the manager: the proxy serves nothing"
        hb = self.last_heartbeat
        if hb is None:
            return "Never connected", ""
        if self.agent_stopped is not None and self.agent_stopped >= hb.received:
            return "Offline", f"proxyd stopped at {self.agent_stopped:%Y-%m-%d %H:%M:%S} UTC"
        age = (timezone.now() - hb.received).total_seconds()
        if age > min(HEARTBEAT_GRACE_FACTOR * hb.interval, HEARTBEAT_GRACE_MAX):
            return "Offline", f"no heartbeat for {int(age)} s"
        active = self.active_revision
        if hb.last_error:
            return "Degraded", hb.last_error
        exposure = self.exposure_failures()
        if exposure:
            return "Degraded", exposure[0][1]
        cert = self.certificate_status()
        if cert.get("degraded"):
            return "Degraded", str(cert["degraded"][0])
        if active and hb.applied_revision != active.number:
            return "Degraded", f"applied revision {hb.applied_revision}, active {active.number}"
        return "Online", ""


class Application(models.Model):
    """An on-premises application exposing only a path prefix of one upstream (seed 000)."""

    proxy = models.ForeignKey(Proxy, on_delete=models.CASCADE, related_name="applications")
    name = models.CharField(max_length=63, validators=[slug])
    port = models.PositiveIntegerField("Server Port", validators=PORT)
    tls = models.BooleanField(default=True)
    public_prefix = models.CharField(max_length=200, default=D(Application_, "public_prefix"))
    upstream = models.URLField("Application URL", help_text="e.g. https://p5.school.local:8443/procurat/api/v1/")
    verify_upstream = models.BooleanField(default=True)

    class Meta:
        unique_together = [("proxy", "name")]
        ordering = ["port"]

    # config path field -> form field, for errors of this application
    FIELDS = ("name", "port", "tls", "public_prefix", "upstream", "verify_upstream")

    def clean(self) -> None:
        """Validate the proxy's whole config with this application in it: port collisions with
        the proxy's services or other applications, prefix and URL form, all named by field.
        `siblings`, when set, are the proxy's other applications instead of those stored."""
        from manager.proxies.compiler import raw_config
        from proxyd.config import ConfigError, parse_config

        if not self.proxy_id:
            return
        raw = raw_config(self.proxy, 0)
        siblings: list[Application] | None = getattr(self, "siblings", None)
        if siblings is not None:  # the whole set is being replaced (restore): check against the new set
            apps = [{f: getattr(a, f) for f in self.FIELDS} for a in siblings]
        else:
            old = Application.objects.filter(pk=self.pk).values_list("name", flat=True).first() if self.pk else None
            apps = [a for a in raw["applications"] if a["name"] != old]
        apps.append({f: getattr(self, f) for f in self.FIELDS})
        raw["applications"] = apps
        try:
            parse_config(raw)
        except ConfigError as exc:
            mine = f"applications[{len(apps) - 1}]"
            errors: dict[str, list[str]] = {}
            for problem in exc.problems:
                if mine not in problem and not problem.startswith("applications"):
                    if ".port" not in problem:
                        continue  # a problem of the proxy itself, not of this application
                field = next((f for f in self.FIELDS if f"{mine}.{f}" in problem), None)
                if field is None:
                    field = "port" if "port" in problem else "__all__"
                errors.setdefault(field, []).append(problem.replace(mine, f"application {self.name!r}"))
            if errors:
                raise ValidationError(errors) from None


class Registration(models.Model):
    """A one-time registration URL: valid 24 h, usable once (seed 000)."""

    proxy = models.ForeignKey(Proxy, on_delete=models.CASCADE, related_name="registrations")
    token_hash = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    expires = models.DateTimeField()
    used = models.DateTimeField(null=True, blank=True)
    used_from = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    @staticmethod
    def hash(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    @classmethod
    def create_for(cls, proxy: Proxy) -> tuple[Registration, str]:
        token = secrets.token_urlsafe(32)
        expires = timezone.now() + REGISTRATION_LIFETIME
        reg = cls.objects.create(proxy=proxy, token_hash=cls.hash(token), expires=expires)
        return reg, token

    @property
    def state(self) -> str:
        if self.used:
            return "used"
        return "expired" if self.expires <= timezone.now() else "valid"


#: the config paths that hold secrets: a revision stores them encrypted in `secrets_enc`, never in `config_json`
class ConfigRevision(models.Model):
    """A compiled ProxyConfig; the newest per proxy is the active one. `config_json` has its secrets
    taken out (None); they are kept encrypted in `secrets_enc` and put back when the config is served."""

    proxy = models.ForeignKey(Proxy, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    config_json = models.TextField()
    secrets_enc = models.TextField(blank=True, editable=False)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        unique_together = [("proxy", "number")]
        ordering = ["-number"]

    @classmethod
    def fields_for(cls, cfg: dict, like: ConfigRevision | None = None) -> dict[str, str]:
        """The stored fields for `cfg`; the secrets of `like` (the revision before) are kept as they
        were encrypted when they are the same: a change to every proxy encrypts nothing new."""
        public, found = split_secrets(cfg)
        if like is not None and found == like.secrets():
            enc = like.secrets_enc
        else:
            enc = encrypt(json.dumps(found)) if found else ""
        return {"config_json": json.dumps(public, separators=(",", ":")), "secrets_enc": enc}

    def secrets(self) -> dict[str, str]:
        if not hasattr(self, "_secrets"):
            self._secrets = json.loads(decrypt(self.secrets_enc)) if self.secrets_enc else {}
        return dict(self._secrets)

    def full_config(self) -> dict:
        """The config as the proxy gets it, secrets included."""
        cfg = json.loads(self.config_json)
        for dotted, value in self.secrets().items():
            *parents, leaf = dotted.split(".")
            node = cfg
            for key in parents:
                node = node[key]
            node[leaf] = value
        return cfg

    def served_json(self) -> str:
        return json.dumps(self.full_config(), separators=(",", ":"))


class PendingPublish(models.Model):
    """A change to every proxy, committed and not published yet (manager/proxies/publisher.py):
    written in the change's own transaction, deleted in the publish's; one left at a start (the
    process ended before publishing) is published then."""

    created = models.DateTimeField(auto_now_add=True)


class Heartbeat(models.Model):
    proxy = models.ForeignKey(Proxy, on_delete=models.CASCADE, related_name="heartbeats")
    # when the manager got it (set by the batch writer to the arrival, not the write a second later:
    # compared with agent_stopped)
    received = models.DateTimeField(default=timezone.now, db_index=True)
    source = models.GenericIPAddressField(null=True)
    applied_revision = models.IntegerField(null=True)
    version = models.CharField(max_length=50, blank=True)
    uptime = models.FloatField(default=0)
    last_error = models.TextField(blank=True)
    services = models.JSONField(default=dict)
    interval = models.PositiveIntegerField(default=60)

    class Meta:
        ordering = ["-received"]


class Device(models.Model):
    """A phone of an instance; its provisioning URLs are derived, never stored."""

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="devices")
    mac = models.CharField("MAC address", max_length=17)
    label = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["mac"]
        unique_together = [("instance", "mac")]
        # a provisioning URL fetches the phone's configuration (its SIP credentials): not for viewers
        permissions = [("view_provisioning_url", "Can see and export devices' provisioning URLs")]

    def clean(self) -> None:
        from services.provisioning import normalize_mac

        norm = normalize_mac(self.mac)
        if norm is None:
            raise ValidationError({"mac": "a unicast MAC: 12 hex digits, or six pairs joined by ':' or by '-'"})
        self.mac = norm

    def urls(self) -> list[tuple[Proxy, str]]:
        """(proxy, URL) for every proxy that exposes this instance and offers provisioning."""
        from services.provisioning import normalize_mac, provisioning_url, trusted_url

        if normalize_mac(self.mac) is None:  # saved before group-bit/all-zero MACs were refused: no proxy serves it
            return []
        chosen = list(self.instance.proxies.all())
        out = []
        for p in Proxy.objects.exclude(provisioning_mode="off"):
            if chosen and p not in chosen:
                continue
            if p.provisioning_mode == "encrypted":
                out.append((p, provisioning_url(p.fqdn, p.provisioning_https_port, p.provisioning_key,
                                                self.instance.name, self.mac)))
            else:
                out.append((p, trusted_url(p.fqdn, p.provisioning_https_port, self.instance.name, self.mac)))
                if p.provisioning_mode == "http_and_https":
                    out.append((p, trusted_url(p.fqdn, p.provisioning_http_port, self.instance.name, self.mac,
                                               scheme="http")))
        return out


# backup and restore (seed 003 "Backup und Restore") ---------------------------------------
BACKUP_REQUEST_LIFETIME = timedelta(minutes=5)


class Backup(models.Model):
    """One encrypted archive (proxyd.backup format) of a proxy, kept for download."""

    proxy = models.ForeignKey(Proxy, on_delete=models.CASCADE, related_name="backups")
    created = models.DateTimeField(auto_now_add=True)
    size = models.PositiveIntegerField()
    data = models.BinaryField()

    class Meta:
        ordering = ["-created", "-pk"]
        permissions = [("restore_backup", "Can restore a backup into a proxy")]

    @property
    def filename(self) -> str:
        return f"{self.proxy.name}-{self.created:%Y%m%d-%H%M%S}.pfbk"


class ProxyAction(models.Model):
    """Something the proxy has to do that the config cannot say: make a backup, or take restored files.

    Offered to the proxy with every config and heartbeat answer while pending. `secret_enc` holds,
    encrypted at rest, the backup's sealing key (never the passphrase) or the restored files;
    it is wiped as soon as the action is finished.
    """

    BACKUP, RESTORE = "backup", "restore"
    proxy = models.ForeignKey(Proxy, on_delete=models.CASCADE, related_name="actions")
    kind = models.CharField(max_length=7, choices=[(BACKUP, "backup"), (RESTORE, "restore")])
    created = models.DateTimeField(auto_now_add=True)
    delivered = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    secret_enc = models.TextField(blank=True, editable=False)
    backup = models.ForeignKey(Backup, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-created", "-pk"]

    @classmethod
    def pending(cls, proxy_id: int) -> models.QuerySet[ProxyAction]:
        """Unfinished actions the proxy should still do (a backup request expires, a restore does not)."""
        cutoff = timezone.now() - BACKUP_REQUEST_LIFETIME
        return cls.objects.filter(proxy_id=proxy_id, finished__isnull=True).exclude(kind=cls.BACKUP,
                                                                                     created__lte=cutoff)

    @property
    def state(self) -> str:
        if self.finished:
            return "failed" if self.error else "done"
        if self.kind == self.BACKUP and self.created <= timezone.now() - BACKUP_REQUEST_LIFETIME:
            return "expired"
        return "waiting for the proxy"

    @property
    def secret(self) -> str:
        return decrypt(self.secret_enc) if self.secret_enc else ""

    @secret.setter
    def secret(self, value: str) -> None:
        self.secret_enc = encrypt(value) if value else ""


# dynamic DNS (seed 000 "dynamically update DNS") ---------------------------------------------
DDNS_PROVIDERS = [("rfc2136", "RFC 2136 dynamic update (TSIG)"), ("cloudflare", "Cloudflare API")]
TSIG_ALGORITHMS = [("hmac-sha256", "hmac-sha256"), ("hmac-sha512", "hmac-sha512"), ("hmac-sha1", "hmac-sha1")]


class DnsRecord(models.Model):
    """The one A/AAAA name kept pointing at the proxy's public (heartbeat source) address."""

    proxy = models.OneToOneField(Proxy, on_delete=models.CASCADE, related_name="dns_record")
    name = models.CharField("record name", max_length=253, help_text="e.g. proxy1.dyn.example.com")
    zone = models.CharField(max_length=253, help_text="the zone the name is in, e.g. dyn.example.com")
    provider = models.CharField(max_length=10, choices=DDNS_PROVIDERS, default="rfc2136")
    server = models.CharField("DNS server", max_length=253, blank=True, help_text="RFC 2136: primary server")
    port = models.PositiveIntegerField(default=53, validators=PORT)
    key_name = models.CharField("TSIG key name", max_length=253, blank=True)
    algorithm = models.CharField("TSIG algorithm", max_length=20, choices=TSIG_ALGORITHMS, default="hmac-sha256")
    api_url = models.URLField("API URL", default="https://api.cloudflare.com/client/v4",
                              help_text="Cloudflare: the v4 API base")
    credentials_enc = models.TextField(editable=False, default="")
    # what the manager did last (shown on the proxy page)
    address = models.GenericIPAddressField("current address", null=True, blank=True, editable=False)
    synced_address = models.GenericIPAddressField(null=True, blank=True, editable=False)
    state = models.CharField(max_length=10, blank=True, editable=False)  # "" | updating | ok | failed
    last_update = models.DateTimeField(null=True, blank=True, editable=False)
    last_result = models.TextField(blank=True, editable=False)
    attempts = models.PositiveIntegerField(default=0, editable=False)

    # who may change these decides where the stored credentials are sent
    ACCOUNT_FIELDS = ("provider", "server", "port", "key_name", "algorithm", "api_url")

    class Meta:
        permissions = [("change_dns_account", "Can change a DNS record's provider, server, key, API URL "
                                              "and credentials")]

    @property
    def credentials(self) -> str:
        """The TSIG secret (base64) or the Cloudflare API token."""
        return decrypt(self.credentials_enc) if self.credentials_enc else ""

    @credentials.setter
    def credentials(self, value: str) -> None:
        self.credentials_enc = encrypt(value) if value else ""

    @property
    def credentials_hint(self) -> str:
        """Enough to recognise which secret is stored, never the secret itself."""
        value = self.credentials
        return f"stored, ends in …{value[-3:]}" if len(value) >= 12 else ("stored" if value else "not set")

    def clean(self) -> None:
        import dns.exception
        import dns.name

        errors: dict[str, str] = {}
        try:
            name, zone = dns.name.from_text(self.name), dns.name.from_text(self.zone)
            if not name.is_subdomain(zone):
                errors["name"] = f"{self.name} is not inside zone {self.zone}"
        except dns.exception.DNSException as exc:
            errors["name"] = f"not a DNS name: {exc}"
        if self.provider == "rfc2136":
            for f in ("server", "key_name"):
                if not getattr(self, f):
                    errors[f] = "Required for RFC 2136."
        if errors:
            raise ValidationError(errors)


# change log (issue #25 §3: who changed what and when, with the diff) --------------------------
class ObjectChange(models.Model):
    """One create, update or delete of a tracked object (manager.proxies.changelog records them).

    `before`/`after` hold the object's fields as text; secret fields only as "(set)", "(empty)" or
    "(changed)", so the log can be shown to every role that may read it."""

    CREATE, UPDATE, DELETE = "create", "update", "delete"
    time = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    username = models.CharField(max_length=150, blank=True, help_text="kept when the user is deleted; "
                                                                     "'' = no user (an agent, a command)")
    action = models.CharField(max_length=6, choices=[(CREATE, "created"), (UPDATE, "changed"), (DELETE, "deleted")])
    object_type = models.CharField(max_length=40, db_index=True)  # model label: proxies.proxy, auth.user
    object_id = models.BigIntegerField(db_index=True)
    object_repr = models.CharField(max_length=200)
    before = models.JSONField(default=dict)
    after = models.JSONField(default=dict)

    class Meta:
        ordering = ["-time", "-pk"]

    def diff(self) -> list[tuple[str, Any, Any]]:
        """(field, before, after) for every field that differs."""
        keys = [k for k in {**self.before, **self.after} if self.before.get(k) != self.after.get(k)]
        return [(k, self.before.get(k), self.after.get(k)) for k in keys]


# API tokens (issue #25 §4: user tokens scoped to a role, beside the agents' keys) --------------
class ApiToken(models.Model):
    """A user's token for the REST API, scoped to a role no higher than the user's own.

    Only the SHA-256 of the token is stored (a token is 256 random bits: no slow hash needed), and
    the first characters to tell tokens apart; the token itself is shown once, when it is made. A
    request with it gets the permissions its owner has *and* its role allows, checked again on every
    request, so demoting the owner narrows the token at once. Revoking deletes it."""

    PREFIX = "pft_"
    user = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="what it is for, e.g. 'inventory sync'")
    role = models.CharField(max_length=8, choices=[(r, r) for r in ROLES])
    prefix = models.CharField(max_length=12, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    expires = models.DateTimeField(null=True, blank=True, help_text="empty: until revoked")
    last_used = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created", "-pk"]
        permissions = [("manage_apitoken", "Can see and revoke every user's API tokens")]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def mint(self) -> str:
        """Give this (unsaved) token its secret; returns the token, the only time it is seen."""
        token = self.PREFIX + secrets.token_urlsafe(32)
        self.prefix, self.key_hash = token[:12], self.hash(token)
        return token

    @property
    def expired(self) -> bool:
        return self.expires is not None and self.expires <= timezone.now()

    def allows(self, perm: str) -> bool:
        """Whether the token's role includes `perm` (the owner's own permissions are checked besides)."""
        from manager.proxies.roles import ADMIN, PERMISSIONS

        if self.role == ADMIN:
            return True
        app, _, codename = perm.partition(".")
        return app == "proxies" and codename in PERMISSIONS.get(self.role, set())
