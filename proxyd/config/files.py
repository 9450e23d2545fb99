"""Reading a config from a file or from text, within the wire bounds (size, depth)."""

from __future__ import annotations

from pathlib import Path

from proxyd import wirejson
from proxyd.config.proxy import ProxyConfig, parse_config
from proxyd.config.reader import ConfigError
from proxyd.wirejson import MAX_CONFIG_BYTES


def load_file(path: str | Path) -> ProxyConfig:
    """Read and validate a standalone config file (JSON), read no further than the size bound."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from exc
    return loads(data, source=str(path))


def loads(text: str | bytes, *, source: str = "config") -> ProxyConfig:
    """Decode within the wire bounds (size, depth), then validate: one ConfigError for any problem."""
    try:
        raw = wirejson.decode(text)
    except wirejson.WireJsonError as exc:
        raise ConfigError([f"{source}: {exc}"]) from exc
    return parse_config(raw)
