"""Which Prometheus family each key of a service's `stats()` becomes.

Services keep plain counters (`Counter[str]` bumped in their hot paths) and report them in
`stats()`; this table gives each key a family name, a type, HELP text and labels, so that no
service needs a metrics library and nothing is counted twice. A rule's pattern is matched against
the whole key; its groups become the values of the family's labels after the fixed ones.

`KNOWN` lists the keys that exist before anything happened: they are reported as 0 from the first
scrape, so that `rate()` and `increase()` work at once. Every label value here comes from code
(a status code, a reason name, a direction), never from a message: cardinality stays bounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from proxyd.events import METHOD_CLASSES, PROVISIONING_DENIALS, REFUSAL_REASONS, ROUTE_KINDS, http_counter_keys
from services.sip.proxy import COUNTED_METHODS


@dataclass(frozen=True)
class Family:
    name: str  # counters without the `_total` suffix (prometheus_client adds it)
    kind: str  # "counter" | "gauge" | "histogram"
    help: str
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]
    family: Family | None  # None: not exported (a key that only sums up other keys)
    fixed: tuple[str, ...] = ()  # label values before the pattern's groups


def _c(name: str, help_: str, *labels: str) -> Family:
    return Family(name, "counter", help_, labels)


def _g(name: str, help_: str, *labels: str) -> Family:
    return Family(name, "gauge", help_, labels)


def _rules(*items: tuple[str, Family | None] | tuple[str, Family, tuple[str, ...]]) -> tuple[Rule, ...]:
    return tuple(Rule(re.compile(it[0]), it[1], it[2] if len(it) > 2 else ()) for it in items)


# -- HTTP (the web router and the provisioning service share the listener code) --------------
# Every HTTP family carries `service` first: "http" or "provisioning".
_HTTP_DROPPED = _c("pforte_http_refused_requests", "Requests answered by the proxy itself with an error status "
                   "(never forwarded), by status code", "service", "code")
_ROUTES = "|".join(ROUTE_KINDS)
HTTP_COUNTERS = _rules(
    ("requests", _c("pforte_http_requests", "Request heads received (forwarded, redirected or refused)", "service")),
    (rf"handled_({_ROUTES})_({'|'.join(METHOD_CLASSES)})_(\dxx|none)",
     _c("pforte_http_requests_handled", "Requests ended, by route kind, method class (read: GET HEAD OPTIONS, write: "
        "POST PUT PATCH DELETE) and status class of the answer (499: the client left first)",
        "service", "route", "method", "code_class")),
    (rf"refusal_({_ROUTES})_({'|'.join(dict.fromkeys((*REFUSAL_REASONS, *PROVISIONING_DENIALS)))})",
     _c("pforte_http_refusals", "Requests the proxy answered itself, by route kind and reason class (provisioning: "
        "why the lookup was denied)", "service", "route", "reason")),
    (r"responses_(\dxx)", _c("pforte_http_responses", "Backend responses passed to clients, by status class",
                             "service", "code_class")),
    (r"refused_(\d{3})", _HTTP_DROPPED),
    ("redirects", _c("pforte_http_redirects", "Requests answered with a redirect", "service")),
    ("upgrades", _c("pforte_http_upgrades", "Connections a backend upgraded (101) to a tunnel", "service")),
    ("upstream_errors", _c("pforte_http_upstream_errors",
                           "Requests that failed at the backend (connect, timeout, bad answer)", "service")),
    ("backend_connects", _c("pforte_http_upstream_connects", "Connections opened to backends", "service")),
    ("backend_connect_errors", _c("pforte_http_upstream_connect_errors", "Failed connection attempts to backends",
                                  "service")),
    ("connections_refused", _c("pforte_http_connections_refused",
                               "Client connections closed at accept: per-address or total limit", "service")),
    ("backend_saturated", _c("pforte_http_backend_saturated",
                             "Requests answered 503 because their backend's queue was full or the wait too long",
                             "service")),
    ("backend_queued", _c("pforte_http_backend_queued",
                          "Requests that waited for a slot of their backend (all at its in-flight limit)", "service")),
    ("request_bodies_abandoned", _c("pforte_http_request_bodies_abandoned",
                                    "Request bodies the client left incomplete; the backend connection was reset",
                                    "service")),
    ("source_blocks", _c("pforte_provisioning_source_blocks",
                         "Sources blocked for too many failed provisioning lookups", "service")),
)
HTTP_GAUGES = _rules(
    ("active_connections", _g("pforte_http_client_connections", "Open client connections", "service")),
    ("idle_backend_connections", _g("pforte_http_upstream_idle_connections",
                                    "Idle keep-alive connections to backends", "service")),
    ("connection_limit_per_address", _g("pforte_http_connection_limit_per_address",
                                        "Client connections one source address may hold", "service")),
    ("connection_limit_total", _g("pforte_http_connection_limit_process",
                                  "Client connections all HTTP listeners of this process may hold", "service")),
    ("backend_queue_waiting", _g("pforte_http_backend_queue_waiting",
                                 "Requests waiting now for a slot of their backend", "service")),
    ("backend_connection_limit", _g("pforte_http_backend_connection_limit",
                                    "Requests one backend may have in flight", "service")),
    ("backend_queue_limit", _g("pforte_http_backend_queue_limit",
                               "Requests that may wait per backend for a slot", "service")),
    ("tls_handshake_timeout_seconds", _g("pforte_http_tls_handshake_timeout_seconds",
                                         "Seconds a TLS client has for its handshake", "service")),
    ("head_timeout_seconds", _g("pforte_http_head_timeout_seconds", "Seconds a request head has to arrive",
                                "service")),
    ("idle_timeout_seconds", _g("pforte_http_idle_timeout_seconds", "Seconds a keep-alive connection may idle",
                                "service")),
    ("min_body_rate_bytes", _g("pforte_http_min_body_rate_bytes",
                               "Bytes per second a request body must average after its grace period", "service")),
    ("blocked_sources", _g("pforte_provisioning_blocked_sources",
                           "Sources currently blocked from provisioning lookups", "service")),
)
_HTTP_KNOWN = ("requests", "redirects", "upgrades", "upstream_errors", "backend_connects", "backend_connect_errors",
               "connections_refused", "request_bodies_abandoned", "backend_saturated",
               "backend_queued",
               *(f"responses_{n}xx" for n in range(1, 6)),
               *(f"refused_{c}" for c in (400, 404, 405, 408, 411, 413, 414, 417, 421, 429, 431, 501, 503, 505)))

HTTP_HISTOGRAMS = {
    "upstream_connect_seconds": Family("pforte_http_upstream_connect_seconds", "histogram",
                                       "Time to open a backend connection (TCP, and TLS for https backends)",
                                       ("service",)),
    "upstream_first_byte_seconds": Family("pforte_http_upstream_first_byte_seconds", "histogram",
                                          "Time from routing a request to the backend's response head (connect and "
                                          "request body included)", ("service",)),
    "request_duration_seconds": Family("pforte_http_request_duration_seconds", "histogram",
                                       "Time from routing a request to a backend to the last byte of its response",
                                       ("service",)),
}

# -- SIP -------------------------------------------------------------------------------------
_SIP_DROPPED = _c("pforte_sip_messages_dropped", "Messages dropped without an answer, by reason", "reason")
_SIP_ROUTING = _c("pforte_sip_routing_failures", "Requests that could not be routed to a backend, by reason",
                  "reason")
SIP_COUNTERS = _rules(
    ("received", _c("pforte_sip_messages_received", "SIP messages received (both sides, keepalives included)")),
    ("keepalives", _c("pforte_sip_keepalives_received", "CRLF keepalives received")),
    (r"forwarded_(request|response)s", _c("pforte_sip_messages_forwarded", "Messages relayed, by kind", "kind")),
    (r"forwarded_method_(\w+)", _c("pforte_sip_requests_forwarded", "Requests relayed, by method (other: any method "
                                                                     "not named here)", "method")),
    (r"forwarded_from_(phone|instance)_(\dxx)", _c("pforte_sip_responses_forwarded",
                                                  "Responses relayed, by the side they came from and status class",
                                                  "source", "code_class")),
    (r"dropped_(\w+)", _SIP_DROPPED),
    ("backend_queue_drops", _SIP_DROPPED, ("backend_queue_full",)),
    ("backend_down_drops", _SIP_DROPPED, ("backend_down",)),
    ("refused_sources", _SIP_DROPPED, ("source_not_allowed",)),
    ("framing_errors", _SIP_DROPPED, ("framing",)),
    (r"replied_(\d{3})", _c("pforte_sip_local_responses", "Responses generated by the proxy, by status code",
                            "code")),
    ("malformed", _c("pforte_sip_malformed_messages", "Messages the parser rejected")),
    ("normalised", _c("pforte_sip_normalised_messages", "Unusual but valid messages rewritten to normal form")),
    ("sources_blocked", _c("pforte_sip_sources_blocked", "Sources blocked by the per-source rate limit")),
    ("prefixes_blocked", _c("pforte_sip_prefixes_blocked", "Prefixes (/24, /64) blocked by the per-prefix rate limit")),
    (r"scanner_(\w+)", _c("pforte_sip_scanner_requests", "Requests dropped for a scanner signature", "signature")),
    ("auth_failures", _c("pforte_sip_auth_failures", "401/403/407 answers of a PBX to phones")),
    ("auth_lockouts", _c("pforte_sip_auth_lockouts", "Lock-outs started after repeated failed authentication")),
    ("auth_locked_out", _c("pforte_sip_auth_locked_out_requests", "Requests answered 403 during a lock-out")),
    ("media_step_failed", _SIP_DROPPED, ("media_step_failed",)),
    ("keepalives_absorbed", _SIP_DROPPED, ("keepalive_absorbed",)),
    ("connections_refused", _c("pforte_sip_connections_refused",
                               "Phone connections closed at once: over the cap per address or in all")),
    ("keepalive_floods_closed", _c("pforte_sip_keepalive_floods_closed",
                                   "Phone connections closed for flooding CRLF keep-alives")),
    (r"refused_(\w+)", _c("pforte_sip_refused_requests", "Requests refused by a border rule, by rule", "rule")),
    ("absorbed_retransmissions", _SIP_DROPPED, ("retransmitted_challenge",)),
    ("absorbed_request_retransmissions", _SIP_DROPPED, ("retransmitted_request",)),
    ("amplification_limited", _SIP_DROPPED, ("amplification_limited",)),
    ("udp_verifications", _c("pforte_sip_udp_sources_verified",
                                "UDP phone sources that proved they receive (no byte budget from then on)")),
    ("udp_to_tcp", _c("pforte_sip_udp_to_tcp_requests", "Requests too large for UDP sent to a PBX over TCP")),
    (r"(identity_removed|maddr_removed|preloaded_route|foreign_domain|calls_full|calls_full_unproven|dialogs_full"
      r"|calls_expired)",
     _c("pforte_sip_border_actions", "Border policing actions, by kind", "kind")),
    (r"(unknown_domain|unsupported_backend_transport|unavailable_backend)", _SIP_ROUTING),
    ("unreachable_flows", _SIP_ROUTING, ("unreachable_flow",)),
    ("backend_connect_failed", _c("pforte_sip_backend_connect_failures", "Failed TCP/TLS connects to a PBX")),
    ("backend_certificate_mismatch", _c("pforte_sip_backend_certificate_mismatches",
                                        "PBX TLS connections refused for a certificate that does not verify")),
    ("silent_connections_closed", _c("pforte_sip_silent_connections_closed",
                                     "Phone connections closed for sending no message in time")),
    ("udp_errors", _c("pforte_sip_udp_errors", "Errors reported by the UDP socket")),
    (r"media_errors_(\d{3})", _c("pforte_sip_media_errors", "Media relay refusals answered to a call, by status code",
                                 "code")),
)
SIP_GAUGES = _rules(
    ("connections", _g("pforte_sip_connections", "Open TCP/TLS connections (phones and PBXs)")),
    ("tls_connections", _g("pforte_sip_tls_connections", "Open TLS connections (phones and PBXs), of the above")),
    ("dialogs", _g("pforte_sip_dialogs", "Dialogs (calls) the proxy tracks")),
    ("calls", _g("pforte_sip_tracked_calls", "INVITEs and calls followed for their end event (sip_call_end)")),
    ("blocked_sources", _g("pforte_sip_blocked_sources", "Sources currently blocked by the rate limit")),
    ("locked_out", _g("pforte_sip_locked_out", "AORs and sources currently locked out after failed authentication")),
    (r"udp_sources_(unverified|verified)", _g("pforte_sip_udp_sources", "UDP phone sources tracked for the byte "
                                                                    "budget, by state", "state")),
)
_SIP_KNOWN = ("received", "keepalives", "forwarded_requests", "forwarded_responses", "malformed", "normalised",
              "sources_blocked", "prefixes_blocked", "auth_failures", "auth_lockouts", "auth_locked_out",
              "unknown_domain", "unsupported_backend_transport", "unavailable_backend",
              *(f"dropped_{r}" for r in ("too_large", "rate_limited", "unscannable", "scanner", "stray_response")),
              "backend_queue_drops", "backend_down_drops", "refused_sources", "framing_errors",
              "unreachable_flows", "backend_connect_failed", "backend_certificate_mismatch",
              "silent_connections_closed", "udp_errors", "media_errors_488", "media_errors_503",
              *(f"replied_{c}" for c in (400, 403, 404, 420, 482, 483, 503)),
              *(f"forwarded_method_{m}" for m in (*COUNTED_METHODS, "other")),
              *(f"forwarded_from_{side}_{n}xx" for side in ("phone", "instance") for n in range(1, 7)))

# -- media -----------------------------------------------------------------------------------
_MEDIA_LATCHES = _c("pforte_media_latches", "Sockets latched onto a proven source, by kind (relatch: moved to a new "
                   "source of the same address after silence, a NAT rebinding)", "kind")
MEDIA_COUNTERS = _rules(
    (r"packets_from_(phone|instance)", _c("pforte_media_packets", "RTP/RTCP packets relayed, by the side they came "
                                                                  "from", "source")),
    (r"bytes_from_(phone|instance)", _c("pforte_media_bytes", "RTP/RTCP bytes relayed, by the side they came from",
                                        "source")),
    ("drops", _c("pforte_media_dropped_packets", "Packets dropped (from an unexpected source or undeliverable)")),
    ("srtp_bridged", _c("pforte_media_srtp_bridged_streams", "Streams bridged between SRTP and RTP")),
    ("srtp_bridge_unusable_key", _c("pforte_media_srtp_unusable_keys", "SRTP offers whose key could not be used")),
    (r"refused_(\d{3})", _c("pforte_media_refused_offers", "SDP offers refused, by the SIP status answered", "code")),
    ("ports_exhausted", _c("pforte_media_ports_exhausted", "Calls refused because the port range was full")),
    ("idle_released", _c("pforte_media_idle_released_calls", "Calls released after receiving nothing for the "
                                                              "idle timeout")),
    ("setup_timeout_released", _c("pforte_media_setup_timeout_released_calls",
                                  "Answered calls released because the phone sent no proven packet in time")),
    ("latches", _MEDIA_LATCHES, ("first",)),
    ("relatches", _MEDIA_LATCHES, ("relatch",)),
    ("srtp_auth_failures", _c("pforte_media_srtp_auth_failures",
                              "SRTP/SRTCP packets dropped for failed authentication (also in dropped packets)")),
    ("unsent", _c("pforte_media_unsent_packets", "Proven packets not sent: the other side had no address yet")),
    ("kernel_packets", _c("pforte_media_kernel_packets", "RTP/RTCP packets the kernel forwarded (nftables offload; "
                                                         "also in pforte_media_packets)")),
    ("kernel_offloads", _c("pforte_media_kernel_offloads", "Stream directions handed to the kernel's forwarding")),
    ("ports_unbindable", _c("pforte_media_ports_unbindable", "Ports of the range found held by another process")),
    ("sdp_address_refused", _c("pforte_media_sdp_addresses_refused",
                               "SDP addresses the relay would not send to (not the signalling source)")),
    (r"refused_(source_limit|instance_limit)", _c("pforte_media_limit_refusals",
                                                  "Offers refused (503) by the per-source or per-instance stream cap",
                                                  "limit")),
)
MEDIA_GAUGES = _rules(
    ("active_calls", _g("pforte_media_calls", "Calls with media allocated")),
    ("active_streams", _g("pforte_media_streams", "Media streams being relayed")),
    ("ports_in_use", _g("pforte_media_ports_in_use", "UDP ports of the media range in use")),
    ("ports_available", _g("pforte_media_ports_available", "UDP ports of the media range still free")),
    ("ports_blocked", _g("pforte_media_ports_blocked", "UDP ports of the range set aside for a while: another "
                                                       "process held them")),
)
_MEDIA_KNOWN = ("packets_from_phone", "packets_from_instance", "bytes_from_phone", "bytes_from_instance", "drops",
                "srtp_bridged", "srtp_bridge_unusable_key", "refused_488", "ports_exhausted", "idle_released",
                "setup_timeout_released", "latches", "relatches", "srtp_auth_failures", "unsent", "ports_unbindable",
                "kernel_packets", "kernel_offloads",
                "sdp_address_refused", "refused_source_limit", "refused_instance_limit")

# -- XMPP ------------------------------------------------------------------------------------
XMPP_COUNTERS = _rules(
    ("sessions", None),  # the sum of the next family, for /status readers
    (r"sessions_(starttls|direct_tls)", _c("pforte_xmpp_sessions", "Sessions relayed to a backend, by the "
                                                                   "listener they came in on", "kind")),
    (r"bytes_(client_to_backend|backend_to_client)", _c("pforte_xmpp_bytes", "Bytes relayed, by direction",
                                                        "direction")),
)
XMPP_GAUGES = _rules(
    ("active_sessions", _g("pforte_xmpp_active_sessions", "Sessions open now")),
    ("connections", _g("pforte_xmpp_connections", "Client connections open now (sessions and handshakes)")),
)
XMPP_REFUSED = _c("pforte_xmpp_refused_connections", "Client connections refused, by reason", "reason")
XMPP_INSTANCE_SESSIONS = _g("pforte_xmpp_instance_active_sessions", "Sessions open now, by instance", "instance")
#: every reason services/xmpp can refuse for (the peekers' `_Bad` reasons included; a test keeps this complete)
XMPP_REFUSAL_REASONS = ("source_not_allowed", "unknown_domain", "no_sni", "backend_unreachable", "timeout", "oversized",
                        "not_stream", "empty_stream", "garbage", "processing_instruction", "bad_declaration",
                        "duplicate_attribute", "bad_utf8", "bad_entity", "bad_char_ref",
                        "not_tls", "bad_record", "not_client_hello", "truncated_hello", "bad_version", "bad_session_id",
                        "bad_cipher_suites", "bad_compression", "trailing_data", "duplicate_extension", "bad_sni")
_XMPP_KNOWN = ("sessions_starttls", "sessions_direct_tls", "bytes_client_to_backend", "bytes_backend_to_client")


@dataclass(frozen=True)
class ServiceTable:
    counters: tuple[Rule, ...]
    gauges: tuple[Rule, ...]
    known_counters: tuple[str, ...] = ()
    service_label: bool = False  # families carry `service` first (HTTP: http / provisioning)
    histograms: dict[str, Family] | None = None


HTTP = ServiceTable(HTTP_COUNTERS, HTTP_GAUGES,
                   (*_HTTP_KNOWN, *http_counter_keys("instance"), *http_counter_keys("application")),
                   service_label=True, histograms=HTTP_HISTOGRAMS)
PROVISIONING = ServiceTable(HTTP_COUNTERS, HTTP_GAUGES, (*_HTTP_KNOWN, *http_counter_keys("provisioning")),
                            service_label=True, histograms=HTTP_HISTOGRAMS)
TABLES: dict[str, ServiceTable] = {
    "http": HTTP,
    "provisioning": PROVISIONING,
    "sip": ServiceTable(SIP_COUNTERS, SIP_GAUGES, _SIP_KNOWN),
    "media": ServiceTable(MEDIA_COUNTERS, MEDIA_GAUGES, _MEDIA_KNOWN),
    "xmpp": ServiceTable(XMPP_COUNTERS, XMPP_GAUGES, _XMPP_KNOWN),
}
