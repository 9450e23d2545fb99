"""docs/config.md, written from the ProxyConfig dataclasses themselves.

The dataclasses in `proxyd.config` are the one source of every field's type and default; the
`#:` comment above a field is its meaning. This module renders them as the reference page, so the
page cannot drift from the code: `python -m proxyd.config_doc --check` (run by the tests) fails when
docs/config.md differs from what it would write, and a field without a `#:` comment is an error.

    python -m proxyd.config_doc > docs/config.md
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
import typing
from pathlib import Path

from proxyd import config as c

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"

#: How a dataclass looks on the wire when it is not an object of its own (see `proxyd.config.proxy._plain`).
WIRE_STRINGS = {
    c.HostPort: "string `host:port`",
    c.SipTarget: "string `transport:host:port` (udp, tcp, tls)",
}
SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}
_FIELD_LINE = re.compile(r"^\s*(\w+)\s*:")

INTRO = """\
# ProxyConfig reference

`ProxyConfig` (version 1) is the one contract between the manager and `proxyd`, and the file
format of standalone mode (`proxyd run --config proxy.json`). It is JSON. `proxyd check --config F`
validates a file and prints every problem with its field path
(`services.sip.mode: expected one of tls, udp, off`); an invalid file is never applied, and a
running proxyd keeps its last good config when a reload is invalid. Unknown fields are errors.

*This page is generated from the dataclasses in `proxyd/config/` (`python -m proxyd.config_doc`);
a test fails when it differs from them. Edit the `#:` comments there, not this file.*

A minimal file (every other field has the default listed below; an example with more is
`examples/standalone.json`):

```json
{
  "version": 1,
  "proxy": {"name": "dmz", "fqdn": "proxy.example.com"},
  "instances": [
    {"name": "mycompany", "web": "http://10.0.0.5:8080", "sip": "udp:10.0.0.5:5060",
     "sip_domains": ["mycompany.example.com"]}
  ],
  "services": {"provisioning": {"mode": "off"}}
}
```
"""


class UndocumentedField(Exception):
    """A config field has no `#:` comment, so the reference would have a hole."""


def field_docs(cls: type) -> dict[str, str]:
    """The `#:` comment lines directly above each field of a dataclass, joined."""
    docs: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        m = _FIELD_LINE.match(line)
        if m and pending:
            docs[m.group(1)] = " ".join(pending)
        pending = []
    return docs


def _unwrap(tp: typing.Any) -> tuple[typing.Any, bool]:
    """(the type without None, whether None is allowed)."""
    args = typing.get_args(tp)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def type_text(tp: typing.Any) -> str:
    inner, nullable = _unwrap(tp)
    if inner in SCALARS:
        text = SCALARS[inner]
    elif inner in WIRE_STRINGS:
        text = WIRE_STRINGS[inner]
    elif typing.get_origin(inner) is tuple:
        item = typing.get_args(inner)[0]
        text = f"list of {SCALARS.get(item) or 'objects'}s" if item in SCALARS else "list of objects"
    elif dataclasses.is_dataclass(inner):
        text = "object"
    else:  # a new kind of field: the page says so instead of guessing
        text = str(inner)
    return f"{text} or null" if nullable else text


def default_text(f: dataclasses.Field[typing.Any]) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        if dataclasses.is_dataclass(value):
            return "(object below)"
    else:
        return "**required**"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return "`[]`" if not value else f"`{list(value)}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value}`"


def _sections(cls: type, path: str) -> list[tuple[str, type]]:
    """(field path, dataclass) for cls and every object-valued field below it, depth first."""
    hints = typing.get_type_hints(cls)
    out = [(path, cls)]
    for f in dataclasses.fields(cls):
        inner, _ = _unwrap(hints[f.name])
        sub = f"{path}.{f.name}" if path else f.name
        if typing.get_origin(inner) is tuple:
            item = typing.get_args(inner)[0]
            if isinstance(item, type) and dataclasses.is_dataclass(item) and item not in WIRE_STRINGS:
                out += _sections(item, f"{sub}[]")
        elif isinstance(inner, type) and dataclasses.is_dataclass(inner) and inner not in WIRE_STRINGS:
            out += _sections(inner, sub)
    return out


def render() -> str:
    parts = [INTRO]
    for path, cls in _sections(c.ProxyConfig, ""):
        hints = typing.get_type_hints(cls)
        docs = field_docs(cls)
        title = f"`{path}`" if path else "Top level"
        parts.append(f"\n## {title}\n")
        if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
            parts.append(f"\n{inspect.cleandoc(cls.__doc__)}\n")
        parts.append("\n| field | type | default | meaning |\n|---|---|---|---|\n")
        for f in dataclasses.fields(cls):
            if f.name not in docs:
                raise UndocumentedField(f"{cls.__name__}.{f.name} has no #: comment in {inspect.getsourcefile(cls)}")
            meaning = docs[f.name].replace("|", "\\|")
            parts.append(f"| `{f.name}` | {type_text(hints[f.name])} | {default_text(f)} | {meaning} |\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m proxyd.config_doc", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help=f"exit 1 when {DOC} differs from the dataclasses")
    args = ap.parse_args(argv)
    text = render()
    if not args.check:
        sys.stdout.write(text)
        return 0
    if DOC.read_text(encoding="utf-8") != text:
        print(f"{DOC} is out of date: run `python -m proxyd.config_doc > docs/config.md`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
