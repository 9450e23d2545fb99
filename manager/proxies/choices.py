"""Choices from seed 003 (the first of each is the default marked * there)."""

from proxyd.config import ACME_CHALLENGES as _ACME_CHALLENGES
from proxyd.config import TLS_KEY_TYPES as _TLS_KEY_TYPES
from proxyd.config import TLS_MODES as _TLS_MODES

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
TLS_MODES = [(m, {"self-signed": "self-signed (made by the proxy)", "uploaded": "uploaded (PEM + key below)",
                  "acme": "ACME (issued and renewed by the proxy)"}.get(m, m)) for m in _TLS_MODES]
_CHALLENGE_LABELS = {"http-01": "HTTP-01 (a token on the plain-HTTP port, usually 80)",
                     "tls-alpn-01": "TLS-ALPN-01 (on the HTTPS router port)",
                     "dns-01": "DNS-01 (a TXT record set through this proxy's DNS record account)"}
ACME_CHALLENGES = [(c, _CHALLENGE_LABELS.get(c, c)) for c in _ACME_CHALLENGES]
WEB_PREFIX_MODES = [("rewrite", "rewrite: the web backend does not know its prefix"),
                    ("forward_prefix", "forward_prefix: the web backend is told its prefix")]
