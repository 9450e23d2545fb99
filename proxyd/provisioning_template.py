"""Provisioning URL templates (ProxyConfig's `instances[].provisioning`): where, and in which
spelling, the MAC goes into a backend URL. Pure: the config checks a template, the provisioning
service fills it in.

Backends differ in the MAC spelling their per-device files use (Yealink and Polycom files are
lowercase, Snom's uppercase, some key them by `08:c2:...`), so the placeholder is written the way
the MAC is to be spelled:

    {mac}   08c25a4f0321            {MAC}   08C25A4F0321
    {mac:}  08:c2:5a:4f:03:21       {MAC:}  08:C2:5A:4F:03:21
    {mac-}  08-c2-5a-4f-03-21       {MAC-}  08-C2-5A-4F-03-21

Any other `{...}` (and any lone brace) is an error, so a typo such as `{Mac}` is refused by the
config check instead of reaching the backend as literal text.
"""

from __future__ import annotations

import re

BRACES = re.compile(r"\{([^{}]*)\}")
SEPARATORS = ("", ":", "-")
PLACEHOLDERS = tuple(f"{{{case}{sep}}}" for case in ("mac", "MAC") for sep in SEPARATORS)


def problem(template: str) -> str | None:
    """Why a template is unusable, or None."""
    for m in BRACES.finditer(template):
        if m.group(0) not in PLACEHOLDERS:
            return f"unknown placeholder {m.group(0)}, expected one of {', '.join(PLACEHOLDERS)}"
    rest = BRACES.sub("", template)
    if "{" in rest or "}" in rest:
        return "unbalanced { or } (placeholders are " + ", ".join(PLACEHOLDERS) + ")"
    return None


def spell(mac: str, placeholder: str) -> str:
    """A normalised MAC (12 hex digits) as `placeholder` (one of PLACEHOLDERS) spells it."""
    name, sep = placeholder[1:4], placeholder[4:-1]
    text = mac.upper() if name == "MAC" else mac.lower()
    return sep.join(text[i:i + 2] for i in range(0, 12, 2))


def fill(template: str, mac: str) -> str:
    """The template with every placeholder replaced by the MAC in that placeholder's spelling."""
    return BRACES.sub(lambda m: spell(mac, m.group(0)), template)
