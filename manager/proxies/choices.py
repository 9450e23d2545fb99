"""Choices from seed 003 (the first of each is the default marked * there)."""

SIP_MODES = [("tls", "TLS (TCP 5061)"), ("udp", "UDP (5060)"), ("off", "off")]
MEDIA_MODES = [("srtp", "SRTP"), ("rtp", "RTP")]
PROVISIONING_MODES = [("encrypted", "HTTPS only, encrypted URL"), ("https", "HTTPS only"),
                      ("http_and_https", "HTTP and HTTPS"), ("off", "off")]
WEB_MODES = [("web_and_rest", "HTTPS Web-UI and REST"), ("rest_only", "HTTPS REST only"), ("off", "off")]
NETWORK_MODES = [("auto", "auto"), ("manual", "manual")]
SIP_TRANSPORTS = [("udp", "UDP"), ("tcp", "TCP"), ("tls", "TLS")]
WEB_PREFIX_MODES = [("rewrite", "rewrite: the web backend does not know its prefix"),
                    ("forward_prefix", "forward_prefix: the web backend is told its prefix")]
