"""JSON from outside (the manager's answers, a config file) decoded within bounds.

`json.loads` recurses once per nesting level: a body of 100,000 `[` raises RecursionError, which
no caller expected, and the decoded objects of a large body cost several times its size. Every
document proxyd reads from the wire or from a file is checked here first: at most `max_bytes`
(the caller reads no more than that many), at most `max_depth` levels, and decoding errors of
every kind end as one `WireJsonError` with the reason.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: a config holds a certificate chain and its key, instances and applications: a few hundred KiB
#: at most in real deployments; 8 MiB leaves room and bounds what one answer can cost
MAX_CONFIG_BYTES = 8 * 1024 * 1024
#: a ProxyConfig is 4 levels deep (top, services, sip, value); 32 is far beyond any schema we read
MAX_DEPTH = 32

# A JSON string, unrolled (`"` then runs of plain characters and escapes): brackets inside
# strings are no nesting.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_PAIR = re.compile(rb"\[\]|\{\}")


class WireJsonError(ValueError):
    """The document is too large, too deep or not JSON; the message says which."""


def too_deep(data: bytes, max_depth: int) -> bool:
    """Whether brackets outside strings nest deeper than `max_depth`.

    Each pass removes the innermost `[]`/`{}` pairs, so a document of depth d is empty after d
    passes; the passes run in C (re), at most max_depth + 1 of them, whatever the input. A pass
    that removes nothing means unbalanced brackets, which the decoder reports as such.
    """
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    for _ in range(max_depth):
        if not brackets:
            return False
        reduced = _PAIR.sub(b"", brackets)
        if reduced == brackets:
            return False
        brackets = reduced
    return bool(_PAIR.search(brackets))


def decode(data: bytes | str, *, max_bytes: int = MAX_CONFIG_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """The decoded document, or WireJsonError naming why not."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise WireJsonError(f"larger than {max_bytes} bytes")
    if too_deep(raw, max_depth):
        raise WireJsonError(f"nested deeper than {max_depth} levels")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WireJsonError(f"not valid JSON: {exc}") from exc
    except RecursionError as exc:  # cannot happen after the depth check; kept so it never escapes
        raise WireJsonError(f"nested deeper than {max_depth} levels") from exc
