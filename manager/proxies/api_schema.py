"""OpenAPI additions drf-spectacular cannot find itself: the agents' config long-poll is an async
Django view (no DRF view to inspect), the agent key is a security scheme of its own, the agent
API's answers that its views declare only as "an object" get their components here (their shapes
are the views' in manager/proxies/api.py), and every operation that takes credentials documents
its 401 and 403 with the one error component."""

from __future__ import annotations

from typing import Any

_INT, _STR = {"type": "integer"}, {"type": "string"}
COMPONENTS: dict[str, dict[str, Any]] = {
    "Error": {"type": "object", "required": ["detail"], "properties": {"detail": _STR}},
    "HeartbeatAnswer": {"type": "object", "required": ["active_revision", "interval", "actions"], "properties": {
        "active_revision": {"type": "integer", "nullable": True}, "interval": _INT,
        "actions": {"type": "array", "items": {"type": "object", "required": ["id", "kind"],
                                               "properties": {"id": _INT, "kind": _STR}}}}},
    "BackupUploaded": {"type": "object", "required": ["backup", "size"], "properties": {"backup": _INT,
                                                                                        "size": _INT}},
    "RestoreFiles": {"type": "object", "required": ["proxy", "files"], "properties": {
        "proxy": _STR, "files": {"type": "object", "additionalProperties": {"type": "string", "format": "byte"},
                                 "description": "certs/<file>: its content, base64"}}},
    "ActionDone": {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}},
    "ProxyConfig": {"type": "object", "additionalProperties": True,
                    "description": "proxyd.config.ProxyConfig as JSON (docs/config.md lists every field)"},
    "OpenApiDocument": {"type": "object", "required": ["openapi", "info", "paths"], "additionalProperties": True,
                        "properties": {"openapi": _STR, "info": {"type": "object"}, "paths": {"type": "object"}},
                        "description": "this document"},
}
# (path, method, status) -> component, for answers whose views say only "an object"
TYPED = {
    ("/api/v1/proxy/heartbeat", "post", "200"): "HeartbeatAnswer",
    ("/api/v1/proxy/actions/{id}/backup", "post", "201"): "BackupUploaded",
    ("/api/v1/proxy/actions/{id}/restore", "get", "200"): "RestoreFiles",
    ("/api/v1/proxy/actions/{id}/done", "post", "200"): "ActionDone",
    ("/api/schema/", "get", "200"): "OpenApiDocument",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def type_answers(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    result.setdefault("components", {}).setdefault("schemas", {}).update(COMPONENTS)
    for path, ops in result.get("paths", {}).items():
        for method, op in ops.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            for status, answer in op["responses"].items():
                name = TYPED.get((path, method, status))
                if name:
                    for media in answer.get("content", {}).values():
                        media["schema"] = _ref(name)
            if op.get("security") and op["security"] != [{}] or path.startswith("/api/v1/proxy/"):
                for status, why in (("401", "no credentials, or invalid ones"),
                                    ("403", "the credentials do not allow this")):
                    op["responses"].setdefault(status, {
                        "description": why, "content": {"application/json": {"schema": _ref("Error")}}})
    return result


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
                    "content": {"application/json": {"schema": _ref("ProxyConfig")}},
                    "headers": {"ETag": {"schema": {"type": "string"}},
                                "X-Pforte-Actions": {"schema": {"type": "string"}}}},
            "304": {"description": "no newer revision within `wait`"},
            "401": {"description": "invalid or revoked API key",
                    "content": {"application/json": {"schema": _ref("Error")}}},
        },
    }}
    return result
