"""Render the supervisor's status as Prometheus text exposition (version 0.0.4).

Numbers in a service's stats() become metrics named after their path
(`pforte_http_counters_requests`). A mapping under a key `by_<label>` turns its keys into label
values: {"by_instance": {"a": {"sessions": 2}}} -> `pforte_xmpp_sessions{instance="a"} 2`.
"""

from __future__ import annotations

import re
from typing import Any

_BAD = re.compile(r"[^a-zA-Z0-9_]")


def _name(parts: list[str]) -> str:
    return _BAD.sub("_", "_".join(p for p in parts if p))


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _walk(prefix: list[str], labels: dict[str, str], data: Any, out: dict[str, list[str]]) -> None:
    if isinstance(data, bool):
        data = int(data)
    if isinstance(data, int | float):
        name = _name(prefix)
        lab = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        out.setdefault(name, []).append(f"{name}{{{lab}}} {data}" if lab else f"{name} {data}")
        return
    if isinstance(data, dict):
        for key, value in data.items():
            key = str(key)
            if key.startswith("by_") and isinstance(value, dict):
                label = key[3:]
                for lv, sub in value.items():
                    _walk(prefix, {**labels, label: str(lv)}, sub, out)
            else:
                _walk([*prefix, key], labels, value, out)


def render(status: dict[str, Any]) -> str:
    out: dict[str, list[str]] = {}
    rev = status.get("revision")
    if rev is not None:
        out["pforte_config_revision"] = [f"pforte_config_revision {rev}"]
    for svc, data in status.get("services", {}).items():
        out.setdefault("pforte_service_up", []).append(
            f'pforte_service_up{{service="{svc}"}} {int(data.get("state") == "running")}'
        )
        _walk(["pforte", svc], {}, {k: v for k, v in data.items() if k != "state"}, out)
    for svc, n in status.get("access_refused", {}).items():
        out.setdefault("pforte_access_refused", []).append(
            f'pforte_access_refused{{service="{_escape(svc)}"}} {n}'
        )
    lines = []
    for name, samples in out.items():
        lines.append(f"# TYPE {name} untyped")
        lines.extend(samples)
    return "\n".join(lines) + "\n"
