"""Check that no secret an end-to-end run used appears in any log it wrote.

A secret is looked for as given, and also in the shapes a log line would carry it in: a PEM
private key by each line of its base64 body (a key logged as a repr or JSON string keeps those),
a URL also by its path and path segments (a logged request line or route has no scheme and
host) or, when it has one, by its fragment instead (where registration URLs carry their token).
Reported by secret name and file, never by the secret itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

MIN_FRAGMENT = 16  # shorter pieces of a secret (a PEM's last body line, a path segment) would match by chance


def fragments(secret: str) -> set[str]:
    """The pieces of `secret` that must not appear in a log."""
    out = {secret.strip()}
    if "-----BEGIN" in secret:
        out |= {ln.strip() for ln in secret.splitlines() if not ln.startswith("-----")}
    elif re.match(r"https?://", secret):
        parts = urlsplit(secret)
        # a token in the fragment (the manager's registration URLs) leaves the path public
        out |= {parts.fragment} if parts.fragment else {parts.path, *parts.path.split("/")}
    return {f for f in out if len(f) >= MIN_FRAGMENT}


def log_files(*roots: Path) -> list[Path]:
    """Every log a run wrote under `roots`: `*.out` (captured stdout/stderr) and `*.log*` (rotated too)."""
    return sorted({p for r in roots for pat in ("**/*.out", "**/*.log", "**/*.log.[0-9]*") for p in r.glob(pat)
                   if p.is_file()})


def leaks(secrets: dict[str, str], files: Iterable[Path]) -> list[str]:
    """`name in file` for every secret found in a file (empty: nothing leaked)."""
    found = []
    texts = {f: f.read_text(errors="replace") for f in files}
    for name, secret in secrets.items():
        assert fragments(secret), f"secret {name} is too short to look for"
        for path, text in texts.items():
            if any(frag in text for frag in fragments(secret)):
                found.append(f"{name} in {path}")
    return found
