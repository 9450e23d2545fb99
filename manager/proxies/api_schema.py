"""OpenAPI additions drf-spectacular cannot find itself: the agents' config long-poll is an async
Django view (no DRF view to inspect), and the agent key is a security scheme of its own."""

from __future__ import annotations

from typing import Any


def add_agent_config(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    schemes = result.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["agentKey"] = {"type": "http", "scheme": "bearer",
                           "description": "the proxy's API key `<proxy id>.<secret>`, minted at registration"}
    result.setdefault("paths", {})["/api/v1/proxy/config"] = {"get": {
        "operationId": "proxy_config",
        "description": "The calling proxy's active config (long-poll): answered at once when the ETag differs, "
                       "else held up to `wait` seconds for a new revision or action.",
        "tags": ["proxy"],
        "security": [{"agentKey": []}],
        "parameters": [
            {"name": "wait", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 60}},
            {"name": "If-None-Match", "in": "header", "schema": {"type": "string"},
             "description": "the ETag of the revision the proxy runs"},
        ],
        "responses": {
            "200": {"description": "the config (proxyd.config.ProxyConfig as JSON); ETag: its revision; "
                                   "X-Pforte-Actions: pending actions",
                    "content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}}},
                    "headers": {"ETag": {"schema": {"type": "string"}},
                                "X-Pforte-Actions": {"schema": {"type": "string"}}}},
            "304": {"description": "no newer revision within `wait`"},
            "401": {"description": "invalid or revoked API key",
                    "content": {"application/json": {"schema": {"type": "object", "properties": {
                        "detail": {"type": "string"}}}}}},
        },
    }}
    return result
