"""Choices from seed 003 (the first of each is the default marked * there)."""

from proxyd.config import TLS_KEY_TYPES as _TLS_KEY_TYPES

SIP_MODES = [("tls", "TLS"), ("udp", "UDP and TCP"), ("off", "off")]  # the ports are fields of their own
MEDIA_MODES = [("srtp", "SRTP"), ("rtp", "RTP")]
PROVISIONING_MODES = [("encrypted", "HTTPS only, encrypted URL"), ("https", "HTTPS only"),
                      ("http_and_https", "HTTP and HTTPS"), ("off", "off")]
WEB_MODES = [("web_and_rest", "HTTPS Web-UI and REST"), ("rest_only", "HTTPS REST only"), ("off", "off")]
NETWORK_MODES = [("auto", "auto"), ("manual", "manual")]
SIP_TRANSPORTS = [("udp", "UDP"), ("tcp", "TCP"), ("tls", "TLS")]
# the self-signed certificate's key; proxyd's list is the one source, the labels say why one picks RSA
TLS_KEY_TYPES = [(k, {"ecdsa-p256": "ECDSA P-256", "rsa-2048": "RSA 2048 (phones without ECDSA)",
                      "rsa-3072": "RSA 3072 (phones without ECDSA)"}.get(k, k)) for k in _TLS_KEY_TYPES]
WEB_PREFIX_MODES = [("rewrite", "rewrite: the web backend does not know its prefix"),
                    ("forward_prefix", "forward_prefix: the web backend is told its prefix")]
