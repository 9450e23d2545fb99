"""The RFC 4475 torture messages and what the parser / relay must do with each (tests/data/sip-torture)."""

from __future__ import annotations

import csv
from pathlib import Path

TORTURE = Path(__file__).resolve().parents[2] / "data" / "sip-torture"

#: Our reading of INDEX.tsv's proxy_action: the parser's verdict (None = parses) per file, and
#: what the relay does: "forward", "drop", or the status it answers with.
PARSER: dict[str, int | None] = {
    "badinv01": 400, "clerr": 400, "ncl": 400, "scalar02": 400, "scalarlg": 400, "quotbal": 400,
    "ltgtruri": 400, "lwsruri": 400, "lwsstart": 400, "trws": 400, "escruri": 400, "regbadct": 400,
    "badaspec": 400, "baddn": 400, "badvers": 505, "mismatch01": 400, "mismatch02": 400,
    "bigcode": 400, "insuf": 400, "unkscm": 416, "novelsc": 416, "multi01": 400, "mcl01": 400, "test": 400,
}
RELAY: dict[str, str] = {
    "scalarlg": "drop", "bigcode": "drop", "unreason": "drop", "noreason": "drop", "bcast": "drop",
    "bext01": "420", "zeromf": "483", "test": "drop",
    "wsinv": "481",  # a re-INVITE (To tag) of a call the relay never saw: stray (issue 20 §2)
    # issue 20 §3: a phone's preloaded Route to a loopback port; To/From naming no domain of the
    # instance the Request-URI routes to (isbn: AOR; a third party's domains)
    "mpart01": "403", "unksm2": "403", "inv2543": "403",
}


def cases() -> list[dict[str, str]]:
    with open(TORTURE / "INDEX.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def relay_outcome(name: str) -> str:
    if name in RELAY:
        return RELAY[name]
    status = PARSER.get(name)
    return str(status) if status else "forward"
