"""The C hot path built with AddressSanitizer and UndefinedBehaviorSanitizer, fed random mutations
of the sample and hostile heads and targets: no memory error, no undefined behaviour, and every
result equal to the Python reference's (tests/services/http/chead_fuzz.py)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.sanitized import fuzz_sanitized

#: mutations per run: the suite's share (PFORTE_SANITIZER_MUTATIONS=200000 for a longer hunt)
MUTATIONS = os.environ.get("PFORTE_SANITIZER_MUTATIONS", "3000")


def test_sanitized_c_hot_path_on_random_mutations(tmp_path: Path) -> None:
    out = fuzz_sanitized("services/http/_chead.c", "tests.services.http.chead_fuzz", MUTATIONS, tmp_path)
    assert int(out.split("accepted ")[1].split()[0]) > 1000  # the mutations reach the accepting paths too
