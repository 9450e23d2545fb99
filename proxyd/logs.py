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


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)  # an end-of-exchange event's fields (proxyd/events.py)
        if fields:
            out.update((k, v) for k, v in fields.items() if k not in out)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
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
    inner: logging.Formatter = JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
    return JournalPrefix(inner) if stderr_is_journal() else inner


def setup(fmt: str = "text", level: str = "INFO", log_dir: Path | None = None) -> None:
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
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
