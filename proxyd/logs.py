"""Logging: one line per event, as `key=value` text or as JSON (`--log-format json`).

Under systemd, stderr is a journald stream (JOURNAL_STREAM names its device and inode): each line
then starts with `<N>`, the syslog priority of its level (sd-daemon(3)), so `journalctl -p warning`
and the journal's colours work. The manager formats its log lines with the same classes.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import time
from pathlib import Path
from typing import Any


def _iso(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created * 1000) % 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        batch = getattr(record, "batch", None)  # events written together (proxyd/events.py): a line each
        if batch:
            return "\n".join(self._line(record, created, text, fields) for created, text, fields in batch)
        return self._line(record, record.created, record.getMessage(), getattr(record, "fields", None))

    def _line(self, record: logging.LogRecord, created: float, msg: str,
              fields: dict[str, Any] | tuple[tuple[str, Any], ...] | None) -> str:
        out = {"ts": _iso(created), "level": record.levelname.lower(), "logger": record.name, "msg": msg}
        if fields:  # an end-of-exchange event's fields (proxyd/events.py): a dict or (name, value) pairs
            out.update((k, v) for k, v in (fields.items() if isinstance(fields, dict) else fields) if k not in out)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT; a batch of events (proxyd/events.py) becomes one such line per event, each
    with its own time."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        batch = getattr(record, "batch", None)
        if not batch:
            return super().format(record)
        return "\n".join(f"{self.formatTime(logging.makeLogRecord({'created': created, 'msecs': created % 1 * 1000}))}"
                         f" {record.levelname} {record.name} {text}" for created, text, _ in batch)
# syslog priorities (sd-daemon(3) prefixes): err 3, warning 4, info 6, debug 7; crit 2
_PRIORITY = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def priority(levelno: int) -> int:
    return next((prio for level, prio in _PRIORITY if levelno >= level), 7)


def stderr_is_journal(env: dict[str, str] | None = None) -> bool:
    """Whether fd 2 is the journald stream systemd gave us (a child with redirected stderr inherits
    JOURNAL_STREAM but not the stream: then it must not add prefixes)."""
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class JournalPrefix(logging.Formatter):
    """Wraps a formatter: every line of a record starts with `<priority>`."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))


def stream_formatter(fmt: str = "text") -> logging.Formatter:
    """The formatter for stderr: JSON or text, with journald priorities when stderr is the journal."""
    inner: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    return JournalPrefix(inner) if stderr_is_journal() else inner


def setup(fmt: str = "text", level: str = "INFO", log_dir: Path | None = None) -> None:
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(level.upper())
    stream = logging.StreamHandler()
    stream.setFormatter(stream_formatter(fmt))
    root.addHandler(stream)
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        fh = logging.handlers.RotatingFileHandler(
            log_dir / "proxyd.log", maxBytes=10 * 2**20, backupCount=5, encoding="utf-8"
        )
        fh.setFormatter(formatter)
        root.addHandler(fh)
