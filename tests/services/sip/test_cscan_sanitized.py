"""The C scanner built with AddressSanitizer and UndefinedBehaviorSanitizer, fed random mutations
of the sample messages: no memory error, no undefined behaviour, and every result equal to the
Python scanner's (tests/services/sip/cscan_fuzz.py)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.sanitized import fuzz_sanitized

#: mutations per run: the suite's share (PFORTE_SANITIZER_MUTATIONS=200000 for a longer hunt)
MUTATIONS = os.environ.get("PFORTE_SANITIZER_MUTATIONS", "30000")


def test_sanitized_c_scanner_on_random_mutations(tmp_path: Path) -> None:
    out = fuzz_sanitized("services/sip/_cscan.c", "tests.services.sip.cscan_fuzz", MUTATIONS, tmp_path)
    assert int(out.split("accepted ")[1].split()[0]) > 1000  # the mutations reach the whole scanner
