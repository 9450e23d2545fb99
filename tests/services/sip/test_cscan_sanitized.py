"""The C scanner built with AddressSanitizer and UndefinedBehaviorSanitizer, fed 100,000 random
mutations of the sample messages: no memory error, no undefined behaviour, and every result
equal to the Python scanner's (tests/services/sip/cscan_fuzz.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
#: mutations per run: the suite's share (PFORTE_SANITIZER_MUTATIONS=200000 for a longer hunt)
MUTATIONS = os.environ.get("PFORTE_SANITIZER_MUTATIONS", "30000")


def _runtime(name: str) -> str:
    out = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True, check=False)
    path = out.stdout.strip()
    if out.returncode != 0 or not os.path.isabs(path):
        pytest.skip(f"gcc has no {name}")
    return path


def test_sanitized_c_scanner_on_random_mutations(tmp_path: Path) -> None:
    asan, ubsan = _runtime("libasan.so"), _runtime("libubsan.so")
    so = tmp_path / "_cscan_sanitized.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    "-fno-omit-frame-pointer", f"-I{sysconfig.get_paths()['include']}",
                    str(ROOT / "services/sip/_cscan.c"), "-o", str(so)], check=True, timeout=120)
    env = {**os.environ, "LD_PRELOAD": f"{asan}:{ubsan}", "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
           "PYTHONMALLOC": "malloc"}  # every object its own allocation, so ASAN sees its bounds
    out = subprocess.run([sys.executable, "-m", "tests.services.sip.cscan_fuzz", str(so), MUTATIONS, "7"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("differs 0"), out.stdout[-2000:]
    assert int(out.stdout.split("accepted ")[1].split()[0]) > 1000  # the mutations reach the whole scanner
