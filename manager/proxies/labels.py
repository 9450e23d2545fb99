"""What the UI writes for a proxy's or instance's services: the ports and transports really in use
(never a default the proxy does not listen on, never `None`)."""

from __future__ import annotations

from manager.proxies.models import Instance, Proxy


def sip(p: Proxy) -> str:
    if p.sip_mode == "udp":
        return f"UDP and TCP {p.sip_udp_port}"
    if p.sip_mode == "tls":
        return f"TLS {p.sip_tls_port}"
    return "off"


def web(p: Proxy) -> str:
    if p.web_mode == "off":
        return "off"
    return f"{p.get_web_mode_display()}, port {p.web_port}"


def instance_sip(i: Instance) -> str:
    """The PBX the instance's SIP goes to, or that it has none."""
    if not i.sip_host:
        return "none"
    host = f"[{i.sip_host}]" if ":" in i.sip_host else i.sip_host
    return f"{i.get_sip_transport_display()} to {host}:{i.sip_port}"
